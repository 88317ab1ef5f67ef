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

from typing import ClassVar

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import as_batch, create_pyiqa_metric, same_size

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

    def setup(self) -> None:
        self.net = create_pyiqa_metric("ssim", self.device, downsample=False, test_y_channel=True, color_space="yiq")

    def compute(self, sample: EvalSample, features=None) -> float:
        out, ref = as_batch(sample.output, self.device), as_batch(sample.content, self.device)
        same_size(out, ref, "SSIM")
        return float(self.net(out, ref))
