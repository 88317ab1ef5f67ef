"""Histogram loss, the colour metric of StyleID (Chung, Hyun, Heo, CVPR 2024): the Hellinger distance between the
RGB-uv histograms (HistoGAN, Afifi et al., CVPR 2021) of the output and of the style image.

Definition, as ``eval_histogan.py`` computes it (jiwoogit/StyleID at 35436fc, moved unchanged to
``evaluation/eval_histogan.py``; its ``RGBuvHistBlock`` is HistoGAN's ``histogram_classes/RGBuvHistBlock.py`` with
the default boundary [-3, 3], all three channels), with the script's settings ``insz=256``, ``h=64``,
``method='inverse-quadratic'``, ``sigma=0.02``, ``intensity_scale=True`` and ``EPS=1e-6``:

1. the image, values clamped to [0, 1], is resized to 256 x 256 (``F.interpolate``, bilinear,
   ``align_corners=False``, no antialiasing, aspect ratio *not* kept) when either side exceeds 256, else left as is;
2. per pixel (R, G, B): I_y = sqrt(R^2 + G^2 + B^2 + EPS); for each channel c with the other two c', c'':
   u = log(c + EPS) - log(c' + EPS), v = log(c + EPS) - log(c'' + EPS) (channel 0: R/G, R/B; 1: G/R, G/B;
   2: B/R, B/G);
3. 64 bin centres t_i = linspace(-3, 3, 64), inverse-quadratic kernel k(d) = 1 / (1 + d^2 / sigma^2);
   H[c, i, j] = sum over pixels of I_y k(u - t_i) k(v - t_j) (values outside [-3, 3] are not clipped: they add
   the kernel's tails);
4. H is divided by (sum of all 3 x 64 x 64 bins + EPS);
5. hist_loss = (1 / sqrt(2)) * || sqrt(H_output) - sqrt(H_style) ||_2 over all bins, divided by the batch size
   (1 here). StyleID reports the mean over its 800 pairs, which is the leaderboard's mean of this per-image value.

What evalkit feeds: the script reads PNG files with PIL and ``torchvision.transforms.ToTensor`` (8-bit values / 255
as float32). evalkit's samples are 8-bit images (decoded, or a method's output saved as 8-bit) divided by 255 as
float32, at the protocol's ``eval_size``; this module rounds them to 8 bits again (a no-op for those, and what saving a
float tensor as PNG would do), then applies the script's own resize on top. Everything after the 8-bit values is
float64 (the script mixes float32 and float64); on StyleID's images the two agree to ~1e-7 relative.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch
import torch.nn.functional as F

from evalkit.assets import AssetStore
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import FeatureProvider

BINS = 64  # h
MAX_SIDE = 256  # insz (``max_input_size``)
SIGMA = 0.02
EPS = 1e-6
BOUNDARY = (-3.0, 3.0)
# (channel, u partner, v partner): u = log(channel) - log(u partner), v = log(channel) - log(v partner)
CHANNEL_PAIRS = ((0, 1, 2), (1, 0, 2), (2, 0, 1))
STYLE_CACHE = 64  # style histograms kept per process (3 x 64 x 64 float64 = 96 KiB each)


def as_8bit(image: torch.Tensor) -> torch.Tensor:
    """The float32 values ``ToTensor`` gives for the 8-bit PNG of ``image`` (clamped to [0, 1], rounded)."""
    return torch.round(image.float().clamp(0, 1) * 255.0) / 255.0


def rgb_uv_histogram(image: torch.Tensor) -> torch.Tensor:
    """The normalised RGB-uv histogram (3, 64, 64) float64 of a (1, 3, H, W) image in [0, 1], as ``RGBuvHistBlock``
    computes it (module docstring, steps 1-4), on the image's 8-bit values."""
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] < 3:
        raise ValueError(f"hist_loss needs one (1, 3, H, W) image, got shape {tuple(image.shape)}")
    x = as_8bit(image[:, :3]).double()
    if x.shape[2] > MAX_SIDE or x.shape[3] > MAX_SIDE:
        x = F.interpolate(x, size=(MAX_SIDE, MAX_SIDE), mode="bilinear", align_corners=False)
    pixels = x[0].reshape(3, -1).T  # (N, 3)
    intensity = torch.sqrt((pixels * pixels).sum(dim=1) + EPS)[:, None]
    logs = torch.log(pixels + EPS)
    centres = torch.linspace(BOUNDARY[0], BOUNDARY[1], BINS, dtype=torch.float64, device=x.device)[None, :]
    hist = torch.empty((3, BINS, BINS), dtype=torch.float64, device=x.device)
    for c, cu, cv in CHANNEL_PAIRS:
        u = (logs[:, c] - logs[:, cu])[:, None]
        v = (logs[:, c] - logs[:, cv])[:, None]
        ku = 1.0 / (1.0 + (u - centres) ** 2 / SIGMA**2)
        kv = 1.0 / (1.0 + (v - centres) ** 2 / SIGMA**2)
        hist[c] = (intensity * ku).T @ kv
    return hist / (hist.sum() + EPS)


def hellinger(h1: torch.Tensor, h2: torch.Tensor) -> float:
    """(1 / sqrt(2)) * || sqrt(h1) - sqrt(h2) ||_2 over all bins (one image each, so the batch division is by 1)."""
    diff = torch.sqrt(h1.double()) - torch.sqrt(h2.double())
    return float(torch.sqrt((diff * diff).sum()) / 2.0**0.5)


def hist_loss(output: torch.Tensor, style: torch.Tensor) -> float:
    """StyleID's histogram loss of ``output`` against ``style``, both (1, 3, H, W) in [0, 1] (any sizes)."""
    return hellinger(rgb_uv_histogram(output), rgb_uv_histogram(style))


class HistLoss(Metric):
    """Per output, against its style image; style histograms are cached per process by the style's image key."""

    info: ClassVar[MetricInfo] = MetricInfo(
        name="hist_loss",
        higher_is_better=False,
        reference="style",
        range=(0.0, 1.0),
        description="StyleID's histogram loss: Hellinger distance of HistoGAN RGB-uv histograms (output vs style)",
        definition=(
            "(1/sqrt 2) ||sqrt(H_o) - sqrt(H_s)||_2, H = RGB-uv histogram (64x64 bins on [-3, 3] per channel, "
            "inverse-quadratic kernel sigma 0.02, weighted by sqrt(R^2+G^2+B^2+1e-6), normalised over all bins) of the "
            "8-bit image bilinearly resized to 256x256 when a side exceeds 256 (StyleID eval_histogan.py)"
        ),
    )

    def __init__(self, device: str | torch.device = "cpu", assets: AssetStore | None = None) -> None:
        super().__init__(device, assets)
        self._style_hists: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _style_histogram(self, image: torch.Tensor, key: str) -> torch.Tensor:
        hist = self._style_hists.get(key)
        if hist is None:
            hist = self._style_hists[key] = rgb_uv_histogram(image.to(self.device))
            while len(self._style_hists) > STYLE_CACHE:
                self._style_hists.popitem(last=False)
        else:
            self._style_hists.move_to_end(key)
        return hist

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        style = self._style_histogram(sample.style, sample.style_key)
        return hellinger(rgb_uv_histogram(sample.output.to(self.device)), style)
