"""Executors run planned jobs and yield results back to the driver, which alone writes the results store.

``local`` runs jobs in this process, grouped by method so each model is loaded once. Other executors (isolated
worker processes for speed measurements, Ray for clusters) implement the same :class:`Executor` protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol as TypingProtocol

from evalkit.specs import JobSpec
from evalkit.store import JobResult
from evalkit.worker import WorkerConfig


class Executor(TypingProtocol):
    name: str

    def map(self, specs: list[JobSpec], config: WorkerConfig) -> Iterator[tuple[JobSpec, JobResult]]:
        """Run ``specs`` and yield ``(spec, result)`` as each finishes (in any order)."""
        ...


def get_executor(name: str, **options) -> Executor:
    if name == "local":
        from evalkit.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "isolated":
        from evalkit.executors.isolated import IsolatedExecutor

        keys = ("timeout", "cpu_memory", "device_memory", "skip_after_oom")
        return IsolatedExecutor(**{k: v for k, v in options.items() if k in keys and v is not None})
    if name == "ray":
        from evalkit.executors.ray_executor import RayExecutor

        return RayExecutor(address=options.get("ray_address"))
    raise ValueError(f"unknown executor '{name}': available executors are local, isolated, ray")
