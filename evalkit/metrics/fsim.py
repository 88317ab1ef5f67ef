"""FSIMc (Zhang, Zhang, Mou & Zhang 2011) of the output against the content image, through pyiqa.

The definition evalkit uses, exactly (pyiqa ``fsim`` with ``chromatic=True``; piq's ``fsim`` computes the
same):

- input RGB in [0, 1] scaled to 0-255 (the paper's constants T1..T4 assume that range);
- downsampling as in the official ``FeatureSIM.m``: average pooling by ``f = max(1, round(min(H, W) / 256))``
  (f = 2 at evalkit's default eval_size 512). Unlike SSIM, this pooling is part of FSIM's published definition
  and of the official values it is calibrated against, so evalkit keeps it;
- colour: RGB -> YIQ; phase congruency (4 scales, 4 orientations, log-Gabor, k = 2) and Scharr gradient
  magnitude on Y; chrominance similarity of I and Q (T3 = T4 = 200) with exponent lambda = 0.03 (FSIMc, the
  colour variant), T1 = 0.85, T2 = 160;
- score = sum(S_PC * S_G * (S_I * S_Q)^0.03 * PC_max) / sum(PC_max), in [0, 1].

Why FSIMc: it is the variant the official calibration values (``results_official.csv``) are for; its chromatic
factor has exponent 0.03, so a deliberate palette change moves the score only slightly while structure
dominates.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import as_batch, create_pyiqa_metric, same_size

DEFINITION = (
    "FSIMc: phase congruency + Scharr gradient similarity on YIQ luma, I/Q chroma term ^0.03, "
    "inputs 0-255 average-pooled by round(min(H,W)/256) as in FeatureSIM.m (pyiqa 'fsim'), "
    "vs the content image"
)


_FILTERS_CACHED = False


def cache_fsim_filters(capacity: int = 8) -> None:
    """Build pyiqa's FSIM log-Gabor filter bank once per image size (it depends on nothing else) instead of for
    every image: about half of FSIM's time at 512 px. pyiqa looks the builder up in its module at call time, so the
    cached one replaces it there; it returns the same tensors (tests/test_metric_reference.py holds every value)."""
    global _FILTERS_CACHED
    if _FILTERS_CACHED:
        return
    from collections import OrderedDict

    from pyiqa.archs import fsim_arch

    build = fsim_arch._construct_filters
    cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def cached(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        key = (tuple(x.shape[-2:]), x.dtype, str(x.device), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = build(x, *args, **kwargs)
            while len(cache) > capacity:
                cache.popitem(last=False)
        return cache[key]

    fsim_arch._construct_filters = cached
    _FILTERS_CACHED = True


class FSIM(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="fsim",
        higher_is_better=True,
        reference="content",
        range=(0.0, 1.0),
        description="Feature similarity (phase congruency, gradients, chroma) of output and content image",
        weights=(),
        definition=DEFINITION,
    )

    def setup(self) -> None:
        cache_fsim_filters()
        self.net = create_pyiqa_metric("fsim", self.device, chromatic=True)

    def compute(self, sample: EvalSample, features=None) -> float:
        out, ref = as_batch(sample.output, self.device), as_batch(sample.content, self.device)
        same_size(out, ref, "FSIM")
        return float(self.net(out, ref))
