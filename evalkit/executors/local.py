"""Run jobs one after another in the current process (the default executor)."""

from __future__ import annotations

from collections.abc import Iterator

from evalkit.executors.base import ExecutorBase
from evalkit.results import JobResult
from evalkit.specs import Work
from evalkit.worker import JobContext, WorkerConfig


class LocalExecutor(ExecutorBase):
    """One :class:`~evalkit.worker.JobContext` for the executor's lifetime, so each model loads once."""

    name = "local"
    summary = "jobs one after another in this process (models loaded once per run)"

    def __init__(self) -> None:
        self._context: JobContext | None = None

    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        if self._context is None:
            self._context = JobContext(config)
        for spec in specs:
            yield self._context.run(spec)

    def close(self) -> None:
        self._context = None
