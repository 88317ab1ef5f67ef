"""Helpers of the pyiqa-backed metrics: the pyiqa entry point and the input conversion.

pyiqa would download its files itself into ``$TORCH_HOME/hub/pyiqa`` without any checksum. evalkit instead
resolves each file with :class:`~evalkit.assets.AssetStore` (cache -> mirror -> download, sha256-verified) and
hands pyiqa the resolved path (``pretrained_model_path=``), so that

- a benchmark's NIQE/BRISQUE/NIMA numbers are tied to a verified file, whatever ``TORCH_HOME`` holds;
- a missing file makes the metric ``unavailable`` with the place it looked and the fix, never a crashed run.

Availability is decided without touching the network, by the resolver's own download rule (the weight sets the
metrics declare, see :class:`~evalkit.metrics.base.Metric`).
"""

from __future__ import annotations

from typing import Any

import torch

PYIQA_WEIGHTS_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


def create_pyiqa_metric(name: str, device: torch.device, **options: Any):
    """A pyiqa metric with its options pinned explicitly, built on ``device`` once (pyiqa is imported lazily:
    importing it costs seconds, which ``evalkit metrics`` and runs without these metrics should not pay)."""
    import pyiqa

    return pyiqa.create_metric(name, device=device, **options)


def as_batch(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] on ``device``: the range pyiqa asserts."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an RGB image tensor (1, 3, H, W), got shape {tuple(image.shape)}")
    return image.to(device=device, dtype=torch.float32).clamp(0.0, 1.0)


def same_size(output: torch.Tensor, reference: torch.Tensor, metric: str) -> None:
    if output.shape[-2:] != reference.shape[-2:]:
        raise ValueError(
            f"{metric} compares pixel-aligned images but the output is "
            f"{output.shape[-1]}x{output.shape[-2]} and the reference "
            f"{reference.shape[-1]}x{reference.shape[-2]}: "
            f"resize both to the same size first"
        )
