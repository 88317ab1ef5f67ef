"""Per-style fits kept on disk: a style is learned once per machine, not once per job, run or worker.

Why a store of its own: a fit (:meth:`~evalkit.adapter.MethodAdapter.fit_style`, e.g. InST's textual inversion)
costs minutes to hours per style, far more than any job, and is the same for every content, seed and resolution of
that style. It is keyed by what determines it (:class:`FitKey`: method and version, the weight files, the style
image's sha256 and size, the precision and the method's ``fit_params``), kept in memory for the process and on disk
under ``$EVALKIT_HOME/fits/<digest>/fit.pt`` (written atomically) for later workers and runs. A lock file per key
makes concurrent workers on one machine wait for the first instead of learning the same style twice. A damaged file
is refitted, never trusted; a read-only or full cache only costs the next process a refit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalkit import cachefiles

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FitKey:
    """What a fit depends on; :meth:`digest` names its file."""

    method: str
    version: str
    weights: str  # the weight set's label and its resolved files (a hub snapshot's path names its revision)
    style_sha256: str
    style_size: int | str  # the protocol's style size (a short side)
    precision: str
    params: dict[str, Any] = field(default_factory=dict)  # the method's fit_params only

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:40]


@dataclass
class Fitted:
    """A fit's tensors and, when this call learned them, how long that took (``None``: reused)."""

    tensors: Tensors
    seconds: float | None


class FitStore:
    """Fits in memory for this process and on disk under ``root`` (``None``: memory only)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, Tensors] = {}

    def get(self, key: FitKey, fit: Callable[[], Tensors], device: torch.device) -> Fitted:
        """The fit for ``key``: from memory, from disk, or learned now by ``fit()`` (timed) and kept."""
        digest = key.digest()
        if digest in self._memory:
            return Fitted(self._memory[digest], None)
        with self._locked(digest):
            tensors = self._load(digest, device)
            seconds = None
            if tensors is None:
                start = time.perf_counter()
                tensors = {name: value.detach() for name, value in fit().items()}
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
                self._save(digest, key, tensors)
        self._memory[digest] = tensors
        return Fitted(tensors, seconds)

    # -- disk ----------------------------------------------------------------------------------------------------
    def _path(self, digest: str) -> Path | None:
        return None if self.root is None else self.root / digest / "fit.pt"

    @contextmanager
    def _locked(self, digest: str) -> Iterator[None]:
        path = self._path(digest)
        try:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name("fit.lock"), "a+")  # noqa: SIM115 - held for the whole block
        except (AssertionError, OSError):
            yield  # memory only: no other process can share the fit anyway
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()

    def _load(self, digest: str, device: torch.device) -> Tensors | None:
        path = self._path(digest)
        saved = cachefiles.read(path, device) if path is not None else None
        tensors = saved.get("tensors") if isinstance(saved, dict) else None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            return None
        return tensors

    def _save(self, digest: str, key: FitKey, tensors: Tensors) -> None:
        path = self._path(digest)
        if path is not None:  # a read-only or full cache only costs the next process a refit
            key_text = json.dumps(asdict(key), default=str)
            cachefiles.write(path, {"key": key_text, "tensors": {k: v.cpu() for k, v in tensors.items()}})


def default_root(home: Path) -> Path:
    """Where fits live for an asset store's home (``$EVALKIT_HOME``)."""
    return home / "fits"
