"""PhotoWCT: Li, Liu, Li, Yang & Kautz, "A Closed-form Solution to Photorealistic Image Stylization", ECCV 2018
(NVIDIA/FastPhotoStyle, ``photo_wct.py``).

Four VGG-19 autoencoders (encoder ``e<k>`` to relu<k>_1, decoder ``d<k>`` back to RGB) whose decoders unpool with
the max-pooling *indices* of their encoder instead of upsampling, so that edges stay where the content has them.
Stylisation is the official cascade: the style's relu4_1..relu1_1 features come from one pass of ``e4``; the content
goes through ``e4`` -> WCT -> ``d4``, the result through ``e3`` -> WCT -> ``d3``, then ``e2``/``d2`` and ``e1``/``d1``.
The WCT is the official ``__wct_core``: covariances over N-1, ``+ I`` on the *content* covariance only (WCT² adds it to
both; on the same features that single difference separates the two), eigenvalues below 1e-5 dropped. With masks,
each label valid in both maps (> 10 pixels each, area ratio < 100, judged at image resolution) is matched with itself;
other positions keep their content features.

Post-processing (``post``, timed separately as the paper's ``+post``): ``gif``, the fast guided filter of the
official ``--fast`` mode (radius 35, eps 0.001 on 0-255 images), or ``exact``, the closed-form matting-affinity
propagation of the paper (:mod:`evalkit_methods._matting`; slow, and out of memory at large sizes: that is a result),
or ``none``. The official default is ``exact``; evalkit's is ``gif`` so that a run at 4K finishes.

Weights: ``PhotoWCTModels/photo_wct.pth`` committed in NVIDIA/FastPhotoStyle at the pinned commit, downloaded from
GitHub and pinned by sha256 on first download (upstream publishes no checksum; not obtainable on the project's
machines, so the loader is tested with a synthetic state dict of exactly the official keys and shapes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _photo_wct
from evalkit_methods import _transforms as T
from evalkit_methods._matting import smooth_exact
from evalkit_methods._smoothing import gif, post_mode

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_parameters
from evalkit.assets import Asset
from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.weights import WeightSet

FASTPHOTOSTYLE_COMMIT = "af0c8fecce58aa71f76488546231214f6684be02"
_URL = f"https://raw.githubusercontent.com/NVIDIA/FastPhotoStyle/{FASTPHOTOSTYLE_COMMIT}/PhotoWCTModels/photo_wct.pth"

WEIGHT_SETS: dict[str, WeightSet] = {
    "official": WeightSet(
        "official",
        {"model": Asset("photowct/photo_wct.pth", None, url=_URL)},
        f"NVIDIA/FastPhotoStyle@{FASTPHOTOSTYLE_COMMIT} PhotoWCTModels/photo_wct.pth (e1-e4, d1-d4)",
        official=True,
    )
}

# VGG-19 convs of each encoder level, in order, with (in, out) channels; decoders mirror them
_VGG = [
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
    ("conv3_4", 256, 256),
    ("conv4_1", 256, 512),
]
_LEVEL_END = {1: "conv1_1", 2: "conv2_1", 3: "conv3_1", 4: "conv4_1"}
_POOL_AFTER = {"conv1_2": 1, "conv2_2": 2, "conv3_4": 3}  # max-pool k follows this conv (with indices)
GIF_RADIUS, GIF_EPS = 35, 0.001  # demo.py --fast: GIFSmoothing(r=35, eps=0.001)


def _convs(level: int) -> list[tuple[str, int, int]]:
    end = [name for name, *_ in _VGG].index(_LEVEL_END[level])
    return _VGG[: end + 1]


def _pr(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))


class Encoder(nn.Module):
    """``VGGEncoder(level)``: conv0 (1x1 input normalisation) then VGG-19 to relu<level>_1, poolings with indices."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.conv0 = nn.Conv2d(3, 3, 1)
        self.names = [name for name, *_ in _convs(level)]
        for name, cin, cout in _convs(level):
            self.add_module(name, nn.Conv2d(cin, cout, 3))

    def forward(self, x: torch.Tensor, taps: tuple[str, ...] = ()) -> tuple[torch.Tensor, list, dict]:
        """The relu<level>_1 features, the poolings' ``(indices, pre-pool size)`` in order, and the activations
        after the convs named in ``taps`` (``forward_multiple``'s style features)."""
        x = self.conv0(x)
        pools: list[tuple[torch.Tensor, torch.Size]] = []
        tapped: dict[str, torch.Tensor] = {}
        for name in self.names:
            x = F.relu(_pr(getattr(self, name), x))
            if name in taps:
                tapped[name] = x
            if name in _POOL_AFTER and name != self.names[-1]:
                size = x.shape
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                pools.append((idx, size))
        return x, pools, tapped


class Decoder(nn.Module):
    """``VGGDecoder(level)``: the mirror of the encoder, max-unpooling with the encoder's indices."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.steps: list[str] = []
        for name, cin, cout in reversed(_convs(level)):
            # the decoder's conv named like the encoder's maps the encoder conv's output back to its input
            self.add_module(name, nn.Conv2d(cout, cin, 3))
            self.steps.append(name)

    def forward(self, x: torch.Tensor, pools: list) -> torch.Tensor:
        remaining = list(pools)
        for name in self.steps:
            x = _pr(getattr(self, name), x)
            if name == "conv1_1":
                return x  # RGB: no ReLU
            x = F.relu(x)
            if name in ("conv2_1", "conv3_1", "conv4_1"):
                idx, size = remaining.pop()
                x = F.max_unpool2d(x, idx, 2, 2, output_size=size[-2:])
        return x


class PhotoWCTNet(nn.Module):
    """``PhotoWCT``: ``e1``..``e4`` and ``d1``..``d4`` with the official state-dict keys (``e4.conv3_4.weight`` ...)."""

    def __init__(self) -> None:
        super().__init__()
        for level in (1, 2, 3, 4):
            self.add_module(f"e{level}", Encoder(level))
            self.add_module(f"d{level}", Decoder(level))


def official_layout() -> dict[str, tuple[int, ...]]:
    """Exact (key -> shape) of ``photo_wct.pth``."""
    return {k: tuple(v.shape) for k, v in PhotoWCTNet().state_dict().items()}


class PhotoWCT(MethodAdapter):
    name = "photowct"
    kind = "photorealistic"
    version = "1"
    description = (
        "PhotoWCT: WCT cascade relu4_1..relu1_1 on max-unpooling VGG-19 autoencoders, segment-wise, "
        "+ guided-filter or exact matting-affinity smoothing"
    )
    citation = "Li, Liu, Li, Yang, Kautz. A Closed-form Solution to Photorealistic Image Stylization. ECCV 2018"
    weight_sets = WEIGHT_SETS
    uses_masks = True
    params = {
        "post": Param(
            "gif",
            "post-processing: gif (official --fast guided filter), exact (closed-form matting propagation) or none",
            check=post_mode("gif", "exact"),
        ),
        "gf_radius": Param(GIF_RADIUS, "guided filter radius in pixels (official: 35)", low=1, high=1000),
        "gf_eps": Param(
            GIF_EPS, "guided filter eps on 0-255 images, as OpenCV takes it (official: 0.001)", low=1e-12, high=1e9
        ),
        "use_masks": Param(True, "segment-wise transfer when the protocol provides masks"),
    }

    def load(self, files: dict[str, Path]) -> None:
        net = PhotoWCTNet()
        load_checked(net, read_torch_state(files["model"]), files["model"], "PhotoWCT model (photo_wct.pth)")
        self.net = net.to(self.device).eval().requires_grad_(False)

    def info(self) -> LoadedInfo:
        # the paper's convention (docs/photoreal.md): weight layers without the four 1x1 input-normalisation convs
        # (36), plus the 6 max-poolings and 6 unpoolings of the four autoencoders = 48; every checkpoint parameter
        convs = sum(1 for m in self.net.modules() if isinstance(m, nn.Conv2d))
        return LoadedInfo(count_parameters(self.net), convs - 4 + 12, {"weight_layers": convs})

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        if masks is not None and params["use_masks"]:
            masks = Masks(_photo_wct.clean_labels(masks.content), _photo_wct.clean_labels(masks.style))
            labels = _photo_wct.valid_labels(masks.content, masks.style)
        else:
            masks, labels = None, None
        _, _, s_feats = self.net.e4(style, taps=tuple(_LEVEL_END.values()))
        image = content
        for level in (4, 3, 2, 1):
            encoder, decoder = getattr(self.net, f"e{level}"), getattr(self.net, f"d{level}")
            feat, pools, _ = encoder(image)
            target = _photo_wct.transfer(feat, s_feats[_LEVEL_END[level]], masks, labels, rule=T.PHOTOWCT_RULE)
            image = decoder(target, pools)
        return image.clamp(0, 1)

    def postprocess(self, output: torch.Tensor, content: torch.Tensor, **params: Any) -> torch.Tensor | None:
        mode = params["post"]
        if mode == "none":
            return None
        if mode == "exact":
            return smooth_exact(output, content)
        return gif(output, content, int(params["gf_radius"]), float(params["gf_eps"]))
