"""Files of evalkit's own caches (reference features, style fits): written atomically, read back only when whole.

Why one place: a cache file may be written by two workers at once and read by a third, a disk may be full or
read-only, and a file may be truncated by a crash. The rules are the same for every cache: the last complete write
wins (a temporary file renamed over the target), a failed write only costs a recomputation, and a file that does not
load is treated as absent, never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def write(path: Path, obj: Any) -> bool:
    """Save ``obj`` (tensors on the CPU) to ``path`` atomically; ``False`` when the cache cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError):  # torch.save reports a full disk or a missing folder as RuntimeError
        return False
    return True


def read(path: Path, device: torch.device) -> Any | None:
    """What :func:`write` saved at ``path`` (tensors on ``device``), or ``None``: absent or damaged."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        return None
