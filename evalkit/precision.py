"""Numerical precision of the networks, an axis of every job (``--precision fp32|bf16|fp16|tf32``).

- ``fp32`` (default): the exact path. Convolutions run in float32 in channels_last memory layout, which changes
  no result beyond float32 rounding and runs faster on CPUs with AVX-512/AMX and on GPUs.
- ``bf16`` / ``fp16``: the networks run under ``torch.autocast`` (CPU and CUDA); the feature transforms' linear
  algebra never does (see ``evalkit_methods._transforms.exact``): covariances and eigendecompositions stay float64,
  their application float32.
- ``tf32``: CUDA tensor-core float32 (``allow_tf32`` for matmuls and cuDNN convolutions); not available on CPU.

Metrics are always computed in float32 outside these contexts, so a bf16 output is scored exactly like an fp32 one.
The precision is part of the job key (except ``fp32``, so keys of earlier runs stay valid) and recorded per job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from evalkit.errors import EvalkitError

PRECISIONS = ("fp32", "bf16", "fp16", "tf32")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: str) -> str:
    """The precision, validated for ``device`` (one-line error otherwise)."""
    if precision not in PRECISIONS:
        raise EvalkitError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and not str(device).startswith("cuda"):
        raise EvalkitError("--precision tf32 is a CUDA tensor-core mode: use --device cuda, or bf16 on CPU")
    return precision


@contextmanager
def networks(precision: str, device: torch.device) -> Iterator[None]:
    """The context a method's networks run in for ``precision``."""
    if precision in _AUTOCAST:
        with torch.autocast(device.type, dtype=_AUTOCAST[precision]):
            yield
        return
    if precision == "tf32":
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        return
    yield


def to_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A 4-D image/feature tensor in channels_last layout (anything else unchanged)."""
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def modules_to_channels_last(owner: object) -> int:
    """Convert every ``nn.Module`` attribute of ``owner`` (an adapter) to channels_last; returns how many."""
    count = 0
    for value in vars(owner).values():
        if isinstance(value, torch.nn.Module):
            value.to(memory_format=torch.channels_last)
            count += 1
    return count
