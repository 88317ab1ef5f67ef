"""One reader and one checker for every checkpoint evalkit loads: method adapters, metrics and the VGG-19.

Why: ``torch.load`` errors and ``load_state_dict`` reports are long, multi-line and name no fix, and a numpy archive
has no checks at all. A benchmark must refuse a checkpoint of another model or variant (WCT² ``sum`` weights for
``cat5``, a level-3 decoder for level 4) with one line that names the file, the first offending key and its shapes,
and never load it half-way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evalkit.errors import AssetError

WRAPPERS = ("state_dict", "model", "params")  # {'model': state} (Collaborative Distillation), {'params': ...} (pyiqa)
Shape = tuple[int, ...]


class CheckpointError(AssetError):
    """A weight file that cannot be read, or whose keys or tensor shapes differ from the architecture's."""


def read_torch_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file (CPU, no pickled code), unwrapped from the usual ``{'model'|'state_dict'|
    'params': ...}`` containers, with DataParallel's ``module.`` prefixes removed."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same actionable message
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise CheckpointError(
            f"cannot read weight file {path} ({type(exc).__name__}: {first}): the file is "
            f"truncated or not a PyTorch checkpoint; download it again"
        ) from exc
    for wrapper in WRAPPERS:
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"weight file {path} is not a state dict of tensors ({type(obj).__name__}): supply the original file"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a numpy ``.npz`` archive (no pickles)."""
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"cannot read weight file {path} as a numpy .npz archive ({type(exc).__name__}): "
            f"fetch it again through the weights mirror"
        ) from exc


def shapes(state: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, Shape]:
    return {k: tuple(v.shape) for k, v in state.items()}


def check_layout(
    found: Mapping[str, Shape],
    expected: Mapping[str, Shape],
    path: str | Path,
    what: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Raise :class:`CheckpointError` unless ``found`` has exactly ``expected``'s keys and shapes (keys for which
    ``ignore`` is true, e.g. training-only heads, are left out first)."""
    found = {k: tuple(v) for k, v in found.items() if not ignore(k)}
    missing = [k for k in expected if k not in found]
    if missing:
        raise CheckpointError(
            f"weight file {path} lacks key '{missing[0]}' ({len(missing)} missing) needed by the "
            f"{what}: it is not the expected checkpoint; supply the original file"
        )
    for key, shape in expected.items():
        if found[key] != tuple(shape):
            raise CheckpointError(
                f"weight file {path} key '{key}' has shape {found[key]} but the {what} needs "
                f"{tuple(shape)}: wrong level or wrong model; supply the original file"
            )
    extra = [k for k in found if k not in expected]
    if extra:
        raise CheckpointError(
            f"weight file {path} has unexpected key '{extra[0]}' ({len(extra)} extra) for the "
            f"{what}: wrong level or wrong model; supply the original file"
        )


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    what: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> nn.Module:
    """``module.load_state_dict(state)`` (as float32) after :func:`check_layout` against the module's own layout."""
    check_layout(shapes(state), shapes(module.state_dict()), path, what, ignore)
    module.load_state_dict({k: v.float() for k, v in state.items() if not ignore(k)})
    return module
