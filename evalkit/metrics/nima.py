"""NIMA (Talebi & Milanfar 2018), no-reference aesthetic score of the output: pyiqa's AVA model.

Definition (pyiqa ``nima``): the output is resized (short side 299, bilinear) and centre-cropped to 299x299,
normalised with mean = std = 0.5, passed through an Inception-ResNet-v2 backbone (timm
``inception_resnet_v2``, ``features_only``), global-average-pooled, then Linear(1536 -> 10) + softmax gives
the predicted distribution of AVA ratings 1..10; the score is its mean, sum_k k * p_k, in [1, 10]. Higher is
better.

Weights: ``NIMA_InceptionV2_ava-b0c77c00.pth`` from pyiqa's weight repository (Hugging Face
``chaofengc/IQA-PyTorch-Weights``), a ``{'params': state_dict}`` checkpoint that pyiqa loads with
``strict=True`` into the *whole* model: it holds every backbone weight as well as the head. pyiqa's
constructor nonetheless first downloads timm's ImageNet ``inception_resnet_v2`` weights from the hub, only to
overwrite them all; evalkit builds the same pyiqa module with that download switched off (see
:func:`build_network`), so the NIMA checkpoint is the one file needed. Its upstream publishes no checksum: the
store pins it on first download (trust on first use).

When the checkpoint is not available (as on machines without access to the Hugging Face hub) the metric is
reported ``unavailable`` with the reason and how to supply the file; it is never computed from untrained
weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from evalkit.assets import Asset
from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.errors import CheckpointError
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import PYIQA_WEIGHTS_URL, as_batch
from evalkit.weights import WeightSet

NIMA_AVA = Asset(
    name="iqa/nima/NIMA_InceptionV2_ava-b0c77c00.pth",
    sha256=None,  # not published upstream; pinned in $EVALKIT_HOME/pins.json on first download
    kind="weights",
    url=PYIQA_WEIGHTS_URL + "NIMA_InceptionV2_ava-b0c77c00.pth",
)


class _TimmWithoutDownload:
    """Stands in for ``timm`` inside pyiqa's NIMA constructor: same API, ``pretrained`` forced off."""

    def __init__(self, timm_module) -> None:
        self._timm = timm_module

    def __getattr__(self, name: str):
        return getattr(self._timm, name)

    def create_model(self, name: str, pretrained: bool = False, **kwargs):
        return self._timm.create_model(name, pretrained=False, **kwargs)


def build_network() -> torch.nn.Module:
    """pyiqa's NIMA(inception_resnet_v2, AVA, 10 classes) backbone uninitialised: load a checkpoint next.

    The ImageNet download pyiqa's constructor would trigger is skipped because the NIMA checkpoint replaces
    every weight (pyiqa itself loads it with strict=True); architecture, preprocessing and head stay pyiqa's.
    """
    import pyiqa.archs.nima_arch as nima_arch

    real_timm = nima_arch.timm
    nima_arch.timm = _TimmWithoutDownload(real_timm)
    try:
        return nima_arch.NIMA(
            base_model_name="inception_resnet_v2", train_dataset="ava", num_classes=10, pretrained=False
        )
    finally:
        nima_arch.timm = real_timm


def load_checkpoint(net: torch.nn.Module, path: Path) -> None:
    """Load a pyiqa NIMA checkpoint strictly; a wrong file is one line naming it and what does not match."""
    try:
        load_checked(net, read_torch_state(path), path, "pyiqa inception_resnet_v2 NIMA")
    except CheckpointError as exc:
        raise CheckpointError(
            f"NIMA checkpoint does not fit pyiqa's inception_resnet_v2 NIMA ({exc}); supply "
            f"NIMA_InceptionV2_ava-b0c77c00.pth"
        ) from exc


class NIMA(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="nima",
        higher_is_better=True,
        reference="none",
        range=(1.0, 10.0),
        description="NIMA aesthetic score (mean of the predicted AVA rating distribution, 1-10)",
        weights=(NIMA_AVA.name,),
        definition=(
            "mean of softmax(Linear(GAP(InceptionResNetV2(x)))) over ratings 1..10, x resized + "
            "centre-cropped to 299, normalised (x-0.5)/0.5; pyiqa 'nima' AVA checkpoint"
        ),
    )
    weight_sets: ClassVar[dict[str, WeightSet]] = {
        "ava": WeightSet("ava", {"checkpoint": NIMA_AVA}, "NIMA AVA checkpoint (pyiqa 'nima')", official=True)
    }

    def setup(self) -> None:
        path = self.files()["checkpoint"]
        net = build_network()
        load_checkpoint(net, path)
        self.net = net.to(self.device).eval()

    def compute(self, sample: EvalSample, features=None) -> float:
        with torch.no_grad():
            return float(self.net(as_batch(sample.output, self.device)))
