"""Run jobs one after another in the current process (the default executor)."""

from __future__ import annotations

from collections.abc import Iterator

from evalkit.specs import JobSpec
from evalkit.store import JobResult
from evalkit.worker import JobContext, WorkerConfig


class LocalExecutor:
    name = "local"

    def __init__(self) -> None:
        self.context: JobContext | None = None

    def map(self, specs: list[JobSpec], config: WorkerConfig) -> Iterator[tuple[JobSpec, JobResult]]:
        self.context = JobContext(config)
        for spec in specs:
            yield spec, self.context.run(spec)
