"""Executors move planned jobs to where they run and their results back; the driver alone writes the store.

An executor implements :class:`Executor`: ``map(specs, config)`` yields one :class:`~evalkit.results.JobResult`
per spec as each finishes (in any order; ``status="lost"`` for a job whose worker vanished, which the scheduler may
retry), ``describe()`` says what it will do, ``close()`` releases workers. Ordering, skip-after-OOM, retries and
failing the rest are the :mod:`evalkit.scheduler`'s, the same for every executor:

- ``local``: jobs in this process (models loaded once per process);
- ``isolated``: a fresh worker process per (method, weight set, resolution), with timeouts and memory budgets;
- ``ray``: Ray actors on a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalkit.errors import EvalkitError
from evalkit.results import JobResult
from evalkit.specs import JobSpec
from evalkit.worker import WorkerConfig

NAMES = ("local", "isolated", "ray")


class Executor(Protocol):
    name: str

    def map(self, specs: list[JobSpec], config: WorkerConfig) -> Iterator[JobResult]:
        """Run ``specs`` and yield one result per spec as each finishes (in any order)."""
        ...

    def describe(self) -> str | None:
        """A line for the console about how jobs run (budgets, cluster), or ``None``."""
        ...

    def close(self) -> None:
        """Release workers and connections (called once, after the last ``map``)."""
        ...


@dataclass(frozen=True)
class ExecutorChoice:
    """Which executor and its validated options: chosen once per run (see :func:`evalkit.runner.choose_executor`)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Executor:
        if self.name == "local":
            from evalkit.executors.local import LocalExecutor

            return LocalExecutor()
        if self.name == "isolated":
            from evalkit.executors.isolated import IsolatedExecutor

            return IsolatedExecutor(**self.options)
        if self.name == "ray":
            from evalkit.executors.ray_executor import RayExecutor

            return RayExecutor(**self.options)
        raise EvalkitError(f"unknown executor '{self.name}': available executors are {', '.join(NAMES)}")
