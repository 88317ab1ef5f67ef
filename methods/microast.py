"""Wang, Zhao, Zuo, Chen, Xing, Lu, "MicroAST: Towards Super-Fast Ultra-Resolution Arbitrary Style Transfer", AAAI 2023.

No VGG at inference: two tiny encoders (content and style, same architecture, separate weights), a modulator that
turns the style features into per-channel filter weights and biases, and a decoder whose two residual blocks are
*modulated* by them (dual-modulation: AdaIN of the content features to the style features' mean/std before each block,
and ``w * conv(x) + b * x`` inside it). 471,987 parameters in all.

Architecture as in the authors' ``net_microAST.py`` (EndyWon/MicroAST @ 5a6c905), re-written here with the same state
dict keys so the official files load strictly:

- encoder ``enc1``: 9x9 conv 3->16, depthwise-separable stride-2 blocks 16->32 and 32->64 (3x3 grouped conv + 1x1
  conv), one residual block; ``enc2``: one more residual block. Features ``[enc1(x), enc2(enc1(x))]`` at stride 4.
- modulator: per feature, a depthwise 3x3 conv + global average pool for the weight and another for the bias.
- decoder: AdaIN + modulated residual block (the style's second feature), AdaIN + modulated residual block (the
  first), then two bilinear x2 upsamplings with separable convs and a 9x9 conv to RGB. Reflection padding throughout;
  no output activation (values outside [0, 1] are clamped by the harness's output rule, after the fact).

Any size runs: the stride-2 convs round up (``ceil(H/4)`` feature rows), the decoder returns ``4*ceil(H/4)`` rows and
the adapter keeps the top-left ``H x W``, which is what the original's output holds at those positions. evalkit adds
no padding, so every statistic is over positions the image produced (the valid-region rule).

AdaIN is the reference's: unbiased variance + 1e-5, content statistics per image (float64 here, which moves outputs by
< 1e-6). ``alpha`` blends each AdaIN with its input, as ``Decoder.forward`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from evalkit_methods import _transforms as T
from torch import nn

from evalkit import checkpoints
from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.assets import Asset
from evalkit.weights import WeightSet

REPO = "https://raw.githubusercontent.com/EndyWon/MicroAST/5a6c9050d8c408191cb9db12c697f3e4c7ebe137/models"
FILES: dict[str, tuple[str, str]] = {  # role -> (file, sha256 from ../shared/weights/SOURCES.md)
    "content_encoder": (
        "content_encoder_iter_160000.pth.tar",
        "c8d895c0eec52507c157e102fab217c37f0c399ef3e168ef8b0b2677714660a4",
    ),
    "style_encoder": (
        "style_encoder_iter_160000.pth.tar",
        "94f6b3fa386828692c20809a0af8bd0eba9c04e90a7d8842086976e4d223c5af",
    ),
    "modulator": ("modulator_iter_160000.pth.tar", "8588055baf7d5ad8398d595d5518c6f030e3ff8dbb6007a7c1779776e11da28b"),
    "decoder": ("decoder_iter_160000.pth.tar", "32e04a46b953fd9f94ec9e20f351511305a5260e000c18f9aef6570d5f1e23d9"),
}
WEIGHT_SETS = {
    "official": WeightSet(
        "official",
        {role: Asset(f"microast/{name}", sha, url=f"{REPO}/{name}") for role, (name, sha) in FILES.items()},
        "EndyWon/MicroAST @ 5a6c905, models/*_iter_160000.pth.tar (the authors' released weights)",
        official=True,
    )
}
UPSAMPLINGS = 2  # the decoder's bilinear x2 layers, counted as layers like the poolings of the VGG methods


class Conv(nn.Module):
    """Reflection padding by ``k // 2`` then a (possibly grouped, possibly strided) conv: the ``ConvLayer`` keys."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(k // 2)
        self.conv_layer = nn.Conv2d(cin, cout, k, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layer(self.pad(x))


class Residual(nn.Module):
    """``x + conv2(relu(conv1(x)))``; modulated: each conv's output becomes ``w * conv(.) + b * (its input)``."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = Conv(channels, channels, 3)
        self.conv2 = Conv(channels, channels, 3)

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if weight is None or bias is None:
            return x + self.conv2(torch.relu(self.conv1(x)))
        hidden = torch.relu(weight * self.conv1(x) + bias * x)
        return x + weight * self.conv2(hidden) + bias * hidden


def _separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    """Grouped 3x3 conv (``min(cin, cout)`` groups, as the original: 16 for 16->32, 32 for 64->32) + ReLU + 1x1 conv
    + ReLU."""
    return [Conv(cin, cout, 3, stride, groups=min(cin, cout)), nn.ReLU(), Conv(cout, cout, 1), nn.ReLU()]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(
            Conv(3, 16, 9), nn.ReLU(), *_separable(16, 32, 2), *_separable(32, 64, 2), Residual(64)
        )
        self.enc2 = nn.Sequential(Residual(64))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.enc1(x)
        return [first, self.enc2(first)]


class Modulator(nn.Module):
    """Style features -> per-channel (1, 64, 1, 1) filter weights and biases, one pair per feature level."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("weight1", "bias1", "weight2", "bias2"):
            self.add_module(name, nn.Sequential(Conv(64, 64, 3, groups=64), nn.AdaptiveAvgPool2d(1)))

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        weights = [self.weight1(feats[0]), self.weight2(feats[1])]
        biases = [self.bias1(feats[0]), self.bias2(feats[1])]
        return weights, biases


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dec1 = Residual(64)
        self.dec2 = Residual(64)
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec3 = nn.Sequential(
            up, *_separable(64, 32, 1), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *_separable(32, 16, 1), Conv(16, 3, 9),
        )  # fmt: skip

    def forward(
        self,
        content: list[torch.Tensor],
        style: list[torch.Tensor],
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        alpha: float,
    ) -> torch.Tensor:
        x = T.blend(T.adain(content[1], style[1]), content[1], alpha)
        x = self.dec1(x, weights[1], biases[1])
        x = T.blend(T.adain(x, style[0]), x, alpha)
        x = self.dec2(x, weights[0], biases[0])
        return self.dec3(x)


class MicroAST(MethodAdapter):
    name = "microast"
    kind = "artistic"
    version = "1"
    description = "Micro encoders + style modulator + dual-modulated decoder (no VGG at inference)"
    citation = (
        "Wang, Zhao, Zuo, Chen, Xing, Lu. MicroAST: Towards Super-Fast Ultra-Resolution Arbitrary Style Transfer. "
        "AAAI 2023"
    )
    weight_sets = WEIGHT_SETS
    params = {
        "alpha": Param(1.0, "content-style trade-off in [0, 1] at both AdaIN steps (1 = full style)", low=0, high=1)
    }

    def load(self, files: dict[str, Path]) -> None:
        parts: dict[str, nn.Module] = {
            "content_encoder": Encoder(),
            "style_encoder": Encoder(),
            "modulator": Modulator(),
            "decoder": Decoder(),
        }
        for role, module in parts.items():
            state = checkpoints.read_torch_state(files[role])
            checkpoints.load_checked(module, state, files[role], f"MicroAST {role.replace('_', ' ')}")
            module.eval().to(self.device, memory_format=torch.channels_last)
        self.parts = nn.ModuleDict(parts)

    def info(self) -> LoadedInfo:
        return LoadedInfo(
            count_parameters(self.parts),
            count_layers(self.parts, UPSAMPLINGS),
            {f"{role}_parameters": count_parameters(m) for role, m in self.parts.items()},
        )

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        p = self.parts
        style_feats = p["style_encoder"](style.to(memory_format=torch.channels_last))
        weights, biases = p["modulator"](style_feats)
        content_feats = p["content_encoder"](content.to(memory_format=torch.channels_last))
        out = p["decoder"](content_feats, style_feats, weights, biases, float(params["alpha"]))
        return out[..., : content.shape[-2], : content.shape[-1]].clamp(0, 1).contiguous()
