"""Reinhard, Ashikhmin, Gooch, Shirley, "Color Transfer between Images", IEEE CG&A 2001.

Convert both images to a decorrelated colour space, shift and scale each channel of the content so its mean and
standard deviation equal the style's (``l' = sigma_s/sigma_c * (l - mean_c) + mean_s``), convert back. No weights,
no network: the baseline that shows how much of a "style" is global colour statistics.

Colour spaces (``space``):

- ``lab`` (default): CIELAB (D65, 2 degree observer) - the space the issue names and most re-implementations use;
  identical to ``skimage.color.rgb2lab`` / ``lab2rgb`` (checked in the tests), written in torch so CPU and CUDA
  share the code.
- ``lalphabeta``: the paper's own l-alpha-beta space (RGB -> LMS -> log10 -> Ruderman's decorrelating transform,
  paper Eqs. 1-6).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from evalkit.adapter import Masks, MethodAdapter, Param

# sRGB (D65) <-> XYZ, the constants skimage.color uses
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65 = (0.95047, 1.0, 1.08883)
# Reinhard et al. Eq. 1 (RGB -> LMS) and Eqs. 4/6 (log LMS <-> l-alpha-beta)
_LMS_FROM_RGB = ((0.3811, 0.5783, 0.0402), (0.1967, 0.7244, 0.0782), (0.0241, 0.1288, 0.8444))
_LAB_FROM_LOGLMS = (
    (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)),
    (1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)),
    (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0),
)
_LMS_FLOOR = 1e-4  # log10(0) is -inf: black pixels are lifted to a value far below 1/255


def _matrix(rows, ref: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, device=ref.device)


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply (3, 3) by the channel axis of (1, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix, x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIELAB (L in [0, 100]), float64."""
    x = rgb.double()
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055).pow(2.4), x / 12.92)
    xyz = _apply(_matrix(_XYZ_FROM_RGB, x), linear) / _matrix(_D65, x).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0).pow(1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB -> sRGB, clipped to [0, 1] (as skimage.color.lab2rgb), float64."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([lab[:, 1] / 500 + fy, fy, (fy - lab[:, 2] / 200).clamp_min(0)], dim=1)
    xyz = torch.where(f > 0.2068966, f.pow(3), (f - 16 / 116) / 7.787) * _matrix(_D65, lab).view(1, 3, 1, 1)
    linear = _apply(torch.linalg.inv(_matrix(_XYZ_FROM_RGB, lab)), xyz)
    srgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308).pow(1 / 2.4) - 0.055, linear * 12.92)
    return srgb.clamp(0, 1)


def rgb_to_lalphabeta(rgb: torch.Tensor) -> torch.Tensor:
    lms = _apply(_matrix(_LMS_FROM_RGB, rgb), rgb.double()).clamp_min(_LMS_FLOOR)
    return _apply(_matrix(_LAB_FROM_LOGLMS, rgb), torch.log10(lms))


def lalphabeta_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    log_lms = _apply(torch.linalg.inv(_matrix(_LAB_FROM_LOGLMS, lab)), lab)
    return _apply(torch.linalg.inv(_matrix(_LMS_FROM_RGB, lab)), torch.pow(10.0, log_lms)).clamp(0, 1)


SPACES = {"lab": (rgb_to_lab, lab_to_rgb), "lalphabeta": (rgb_to_lalphabeta, lalphabeta_to_rgb)}


def reinhard_transfer(
    content: torch.Tensor, style: torch.Tensor, space: str = "lab", eps: float = 1e-6
) -> torch.Tensor:
    """Match the content's per-channel mean/std to the style's in ``space``; returns RGB in [0, 1] (content dtype)."""
    if space not in SPACES:
        raise ValueError(f"unknown colour space '{space}': use one of {', '.join(SPACES)}")
    forward, inverse = SPACES[space]
    c, s = forward(content), forward(style)
    c_mean, c_std = c.mean(dim=(2, 3), keepdim=True), c.std(dim=(2, 3), keepdim=True)
    s_mean, s_std = s.mean(dim=(2, 3), keepdim=True), s.std(dim=(2, 3), keepdim=True)
    out = (c - c_mean) * (s_std / (c_std + eps)) + s_mean
    return inverse(out).to(content.dtype)


class Reinhard(MethodAdapter):
    name = "reinhard"
    kind = "photorealistic"
    version = "1"
    description = "Global colour transfer: per-channel mean/std matching in a decorrelated space"
    citation = "Reinhard, Ashikhmin, Gooch, Shirley. Color Transfer between Images. IEEE CG&A 2001"
    params = {
        "space": Param("lab", "colour space: lab (CIELAB) or lalphabeta (the paper's)", tuple(SPACES)),
    }

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        return reinhard_transfer(content, style, str(params["space"]))
