"""Strict checkpoint layout checks shared by the photorealistic adapters.

Why: ``load_state_dict`` errors are long multi-line lists, and a numpy archive has no checks at all. A
benchmark
must refuse a checkpoint of another variant (e.g. WCT² ``sum`` weights given for ``cat5``) with one line
that names
the file, the first offending key, and the fix -- never load it half-way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from evalkit.errors import AssetError


class CheckpointLayoutError(AssetError):
    """A weight file's keys or tensor shapes differ from the architecture's (status ``error``)."""


def check_layout(
    found: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    path: str | Path,
    what: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Raise :class:`CheckpointLayoutError` unless ``found`` has exactly ``expected``'s keys and shapes."""
    found = {k: tuple(v) for k, v in found.items() if not k.startswith(ignore_prefixes)}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    fix = f"supply the original {what} file (see docs/photoreal.md)"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), first '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first '{unexpected[0]}'")
        raise CheckpointLayoutError(f"{path} is not a {what} checkpoint: {'; '.join(parts)}. Fix: {fix}")
    for key, shape in expected.items():
        if found[key] != tuple(shape):
            raise CheckpointLayoutError(
                f"{path}: tensor '{key}' has shape {list(found[key])}, the {what} architecture needs "
                f"{list(shape)}. Fix: {fix}"
            )


def load_torch_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a ``torch.save`` file (tensors only, CPU), unwrapping
    ``{'model'|'state_dict': ...}``."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointLayoutError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Fix: re-download it"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointLayoutError(f"{path} does not hold a state dict of tensors. Fix: re-download it")
    return dict(obj)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a numpy ``.npz`` archive (no pickles)."""
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointLayoutError(
            f"{path} cannot be read as a numpy .npz archive ({type(exc).__name__}). "
            f"Fix: re-fetch it through the weights mirror"
        ) from exc
