"""SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) of the output against the content image, through pyiqa.

The definition evalkit uses, exactly (pyiqa ``ssim`` with its options pinned, not left to pyiqa's defaults):

- colour: luminance only. RGB in [0, 1] -> Y = 0.299 R + 0.587 G + 0.114 B (NTSC/YIQ luma, the weights of
  MATLAB's ``rgb2gray``), scaled to 0-255 and rounded to integer levels as an 8-bit MATLAB image would be;
- data range 255, so C1 = (0.01*255)^2 and C2 = (0.03*255)^2;
- 11x11 Gaussian window, sigma 1.5, 'valid' filtering (no padding), mean of the SSIM map, float64;
- no downsampling;
- pyiqa clamps the contrast-structure term at 0 (ReLU), so the value lies in [0, 1].

Why this one. Style transfer changes colours on purpose, and SSIM was defined on greyscale: luminance SSIM
asks the question a content-fidelity metric should ask (is the content's structure still there?) without
charging the method for the palette it was asked to apply. piq's ``ssim`` instead averages SSIM over the R, G,
B channels, which mixes colour change into structure. Wang's reference ``ssim.m`` (and piq by default) first
average-pools the image by ``f = round(min(H, W) / 256)``; evalkit does not, because the evaluation scale is
already fixed by the protocol's ``eval_size`` (default 512 short side, where the pooling would silently halve
it, at 192 it would not), so a hidden second rescaling would make SSIM jump as eval_size crosses multiples of
256. This is the variant whose values match the official values of IQA-PyTorch's calibration set
(``results_official.csv``: 0.6993 on TID2013 I03; with the pooling the same image gives 0.64), which
tests/test_calibration.py checks.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
import torch.nn.functional as F

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import as_batch, same_size

DEFINITION = (
    "SSIM on luma Y=0.299R+0.587G+0.114B (0-255, rounded), data range 255, 11x11 Gaussian "
    "sigma 1.5, valid filtering, no downsampling, C-S term clamped at 0 (pyiqa 'ssim'), "
    "vs the content image"
)


class SSIM(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="ssim",
        higher_is_better=True,
        reference="content",
        range=(0.0, 1.0),
        description="Structural similarity of the output's luminance to the content image's (fidelity)",
        weights=(),
        definition=DEFINITION,
    )

    def compute(self, sample: EvalSample, features=None) -> float:
        out, ref = as_batch(sample.output, self.device), as_batch(sample.content, self.device)
        same_size(out, ref, "SSIM")
        return float(ssim_luma(out, ref))


WINDOW, SIGMA = 11, 1.5
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


@functools.cache
def gaussian_taps(device: str) -> torch.Tensor:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)`` in float64 (the 2-D window is its outer
    product; no tap is below MATLAB's eps cut-off at this size), scaled so that the window sums to what pyiqa's
    float32-rounded window sums to (1 - 6.2e-9): that sum, not the rounding of single taps, is what moves SSIM (by
    ~2e-8 where it is small); with it the two agree to ~1e-10."""
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-(x * x) / (2 * SIGMA * SIGMA))
    g = g / g.sum()
    window32_sum = torch.outer(g, g).float().double().sum()
    return (g * window32_sum.sqrt()).to(device)


def ssim_luma(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pyiqa's ``ssim`` (valid filtering, no downsampling, C-S term clamped at 0) on pyiqa's rounded luma, with the
    11x11 Gaussian applied as two 1-D passes over the five moment maps at once: 22 instead of 121 float64
    multiply-adds per pixel and map. pyiqa's window is the same Gaussian rounded to float32; values agree to
    about 1e-10 (tests/test_metric_formulations.py compares both; tests/test_metric_reference.py the stored values)."""
    from pyiqa.archs.func_util import preprocess_rgb

    a = preprocess_rgb(x, True, 255, "yiq").to(torch.float64)
    b = preprocess_rgb(y, True, 255, "yiq").to(torch.float64)
    maps = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    g = gaussian_taps(str(a.device))
    rows = F.conv2d(maps, g.view(1, 1, 1, WINDOW).expand(5, 1, 1, WINDOW), groups=5)
    mu1, mu2, xx, yy, xy = F.conv2d(rows, g.view(1, 1, WINDOW, 1).expand(5, 1, WINDOW, 1), groups=5).unbind(1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs = F.relu((2 * (xy - mu1_mu2) + C2) / ((xx - mu1_sq) + (yy - mu2_sq) + C2))
    return (((2 * mu1_mu2 + C1) / (mu1_sq + mu2_sq + C1)) * cs).mean()
