"""The executor seam: what every executor implements, how it declares its options, and how jobs are grouped.

Policy (:mod:`evalkit.scheduler`) and transports (the executors) both import this module and nothing of each other.

An executor is one class registered under the ``evalkit.executors`` entry-point group (evalkit's own ``local``,
``isolated`` and ``ray`` register exactly as a third-party package does). It declares its options as
:class:`~evalkit.params.Param` tables (reachable as ``--executor-opt NAME=VALUE`` and as a protocol's
``[executor.NAME]`` table), may check them against the run in :meth:`ExecutorBase.check`, and lives for the whole
run: the scheduler calls :meth:`~Executor.map` once per wave and :meth:`~Executor.close` once at the end, so an
executor keeps its workers (and the models they loaded) from one wave to the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

from evalkit.params import Param
from evalkit.resolution import Resolution
from evalkit.results import JobResult
from evalkit.specs import Work
from evalkit.worker import WorkerConfig


class Executor(Protocol):
    name: str

    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        """Run ``specs`` and yield one result per spec as each finishes (in any order); called once per wave."""
        ...

    def attach(self, results_root: Path) -> None:
        """The results root of the run, before the first ``map``."""
        ...

    def prepare(self, config: WorkerConfig) -> None:
        """The run's worker configuration, before :meth:`describe` and the first ``map``."""
        ...

    def describe(self) -> str | None:
        """A line for the console about how jobs run (budgets, cluster), or ``None``."""
        ...

    def close(self) -> None:
        """Release workers and connections (called once, after the last ``map``)."""
        ...


class ExecutorBase:
    """Base class of the executor plug-ins: a name, declared options and an option check.

    The constructor receives the resolved options as keyword arguments."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Param]] = {}
    # jobs run on other machines (a cluster's nodes): the driver need not have the --device itself
    remote_devices: ClassVar[bool] = False

    @classmethod
    def check(cls, options: dict[str, Any], device: str) -> None:
        """Checks that need the run (device, installed packages), raising ``ValueError`` or ``EvalkitError``
        with one line; the options' own types and values are checked by their :class:`Param`."""

    def attach(self, results_root: Path) -> None:
        """The results root this run records into, given before the first ``map``: an executor that needs a shared
        folder (Slurm's specs and results) defaults to one under it."""

    def prepare(self, config: WorkerConfig) -> None:
        """The run's worker configuration, given before :meth:`describe` and the first ``map``: an executor that
        arranges its workers by the run (the local executor's scoring process by device and metrics) does it here."""

    def describe(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def worker_device(device: str) -> str:
    """Inside a cluster worker holding one GPU, the scheduler exposes only that GPU, so it is always ``cuda``."""
    return "cuda" if device.startswith("cuda") else device


def size_key(resolution: str) -> int:
    """Pixels of a resolution, for ordering and skip-after-OOM (a short side N counts as N*N, a lower bound)."""
    res = Resolution.parse(resolution)
    return res.pixels if res.pixels else (res.short_side or 0) ** 2


def group_specs(specs: list[Work]) -> list[list[Work]]:
    """Groups of one (method, weight set, resolution), methods in first-seen order, resolutions small to large."""
    groups: dict[tuple[str, str | None, str], list[Work]] = {}
    first_seen: dict[tuple[str, str | None], int] = {}
    for spec in specs:
        first_seen.setdefault((spec.method, spec.weight_set), len(first_seen))
        groups.setdefault((spec.method, spec.weight_set, spec.resolution), []).append(spec)
    order = sorted(groups, key=lambda k: (first_seen[k[:2]], size_key(k[2]), k[2]))
    return [groups[k] for k in order]
