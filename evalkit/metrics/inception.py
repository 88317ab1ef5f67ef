"""The two Inception-v3 feature networks of the FID family, as feature-provider networks (``pool3``: 2048 floats).

- ``inception_fid[pt]``: pytorch-fid's port of the TensorFlow FID Inception (``pt_inception-2015-12-05``; the
  network is pytorch-fid's own FID blocks, built without its downloader and loaded from the asset store): input
  in [0, 1], resized to 299x299 (bilinear, ``align_corners=False``), scaled to [-1, 1], pool3 = global average of
  ``Mixed_7c``. This is the FID every generative-model paper reports.
- ``inception_art[art]``: ArtFID's Inception-v3 trained on art (Wright & Ommer 2022, ``art_inception.pth``):
  torchvision's Inception-v3 layout with two classification heads (ignored here), input in [0, 1] at the image's
  own size (no resize, no normalisation: ``ToTensor()`` in art-fid; StyleID's ``eval_artfid.py`` first applies
  ``Resize(512)``, which evalkit's evaluation size 512 gives), pool3 = global average of ``Mixed_7c``.

Neither file can be downloaded on evalkit's CI machines: loaders are tested on synthetic files of the exact layout,
and the metrics using them are recorded ``unavailable`` when the file is absent (never a made-up number). Neither
upstream publishes a sha256: the files are pinned on first download (``$EVALKIT_HOME/pins.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.assets import Asset, AssetStore
from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.weights import WeightSet

FID_WEIGHTS = WeightSet(
    "pt",
    {
        "model": Asset(
            name="inception/pt_inception-2015-12-05-6726825d.pth",
            sha256=None,  # not published upstream: pinned on first download
            kind="weights",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        )
    },
    "pytorch-fid's FID Inception (TF inception-2015-12-05 ported)",
    official=True,
)
ART_WEIGHTS = WeightSet(
    "art",
    {
        "model": Asset(
            name="inception/art_inception.pth",
            sha256=None,  # not published upstream: pinned on first download
            kind="weights",
            url="https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth",
        )
    },
    "ArtFID's Inception-v3 trained on art (matthias-wright/art-fid)",
    official=True,
)
POOL = "pool3"
BLOCKS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


def fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception architecture (torchvision's Inception-v3 with the FID blocks), no weights."""
    from pytorch_fid import inception as pf
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def art_inception() -> nn.Module:
    """ArtFID's Inception-v3 backbone (torchvision's layout; the two art classification heads are not built)."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = nn.Identity()  # the file's classification heads (fc1, fc2) are not part of the features
    return net


def _art_head(key: str) -> bool:
    return key.startswith(("fc", "AuxLogits"))


def load_fid_inception(path: Path) -> nn.Module:
    return load_checked(fid_inception(), read_torch_state(path), path, "pytorch-fid FID Inception").eval()


def load_art_inception(path: Path) -> nn.Module:
    """The art Inception with its backbone checked key by key (the file's fc1/fc2/AuxLogits heads are left out)."""
    net = art_inception()
    return load_checked(net, read_torch_state(path), path, "ArtFID art_inception", ignore=_art_head).eval()


def pool3(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global average of ``Mixed_7c`` (N, 2048)."""
    for name in BLOCKS:
        x = getattr(net, name)(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _feature_pass(
    net: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[..., dict[str, torch.Tensor]]:
    net = net.to(device)

    def run(image: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        unknown = set(layers) - {POOL}
        if unknown:
            raise ValueError(f"Inception features offer only '{POOL}', not {sorted(unknown)}")
        return {POOL: pool3(net, prepare(image.to(device).float()))}

    return run


def fid_network(weight_set: str, device: torch.device, assets: AssetStore) -> Callable[..., dict[str, torch.Tensor]]:
    net = load_fid_inception(FID_WEIGHTS.resolve(assets)["model"])

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1

    return _feature_pass(net, prepare, device)


def art_network(weight_set: str, device: torch.device, assets: AssetStore) -> Callable[..., dict[str, torch.Tensor]]:
    net = load_art_inception(ART_WEIGHTS.resolve(assets)["model"])
    return _feature_pass(net, lambda x: x, device)
