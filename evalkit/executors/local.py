"""Run jobs one after another in the current process (the default executor), optionally scoring each output in a
second process on cores the method does not use (``scoring_cores``, :mod:`evalkit.executors.overlap`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ClassVar

import torch

from evalkit.executors.base import ExecutorBase
from evalkit.executors.overlap import CorePlan, Scored, ScoringProcess, parse_scoring_cores, physical_cores, plan_cores
from evalkit.params import Param
from evalkit.results import JobResult, Reason
from evalkit.specs import Work
from evalkit.worker import JobContext, WorkerConfig


def _cores() -> list[list[int]]:
    return physical_cores(sorted(os.sched_getaffinity(0)))


class LocalExecutor(ExecutorBase):
    """One :class:`~evalkit.worker.JobContext` for the executor's lifetime, so each model loads once."""

    name = "local"
    summary = "jobs one after another in this process (models loaded once per run)"
    options: ClassVar[dict[str, Param]] = {
        "scoring_cores": Param(
            "auto",
            "physical cores that score job N while job N+1 runs (auto: the cores torch's threads leave idle; 0: off)",
            check=parse_scoring_cores,
        ),
    }

    def __init__(self, scoring_cores: str | int = "auto") -> None:
        self.scoring_cores = scoring_cores
        self._context: JobContext | None = None
        self._scorer: ScoringProcess | None = None
        self._restore: tuple[set[int], int] | None = None
        self.plan: CorePlan | None = None

    @classmethod
    def check(cls, options: dict[str, Any], device: str) -> None:
        requested = options.get("scoring_cores", "auto")
        plan_cores(requested, device, ["any"], _cores(), torch.get_num_threads())  # one line if it cannot fit

    def describe(self) -> str | None:
        if self.plan is None:
            return None
        return (
            f"scoring beside the method: the method on CPU(s) {_span(self.plan.method)} "
            f"({self.plan.method_threads} torch thread(s)), metrics on CPU(s) {_span(self.plan.scoring)}"
        )

    def prepare(self, config: WorkerConfig) -> None:
        """Split the cores when scoring beside the method applies (before the run's first job)."""
        if self._context is None:
            self._context = self._start(config)

    def _start(self, config: WorkerConfig) -> JobContext:
        self.plan = plan_cores(self.scoring_cores, config.device, config.metrics, _cores(), torch.get_num_threads())
        extra: dict[str, Any] = {}
        if self.plan is not None:
            self._restore = (os.sched_getaffinity(0), torch.get_num_threads())
            os.sched_setaffinity(0, self.plan.method)
            torch.set_num_threads(self.plan.method_threads)
            self._scorer = ScoringProcess(config, self.plan.scoring, self.plan.scoring_threads)
            extra = {"method_cpus": _span(self.plan.method), "scoring_cpus": _span(self.plan.scoring)}
        context = JobContext(config, environment_extra=extra)
        context.defer_scoring = self._scorer is not None
        return context

    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        if self._context is None:
            self._context = self._start(config)
        context = self._context
        if self._scorer is None:
            for spec in specs:
                yield context.run(spec)
            return
        scorer = self._scorer
        pending: list[tuple[JobResult, Future[Scored], int, tuple[Any, list[str]]]] = []
        for spec in specs:
            result = context.run(spec)  # the method's timed runs: the scoring process is on other cores
            request = context.deferred.pop(result.key, None)
            if request is None:
                yield result
            else:
                assert result.png is not None
                pending.append((result, scorer.submit(request[0], result.png, request[1]), scorer.generation, request))
            while pending and pending[0][1].done():
                yield self._scored(*pending.pop(0))
        while pending:
            yield self._scored(*pending.pop(0))

    def _scored(
        self, result: JobResult, future: Future[Scored], generation: int, request: tuple[Any, list[str]]
    ) -> JobResult:
        """``result`` with the scoring process's metrics, or an ``error`` naming why scoring failed. When the
        process died (killed, out of memory) the output is scored again by its successor; a second death is the
        job's error (its output may be what kills it)."""
        assert self._scorer is not None and result.png is not None
        for attempt in (1, 2):
            try:
                result.metrics, result.states, result.time_score_s = future.result()
                return result
            except BrokenProcessPool:
                self._scorer.restart(generation)
                if attempt == 2:
                    result.status, result.reason = "error", Reason.EXCEPTION
                    result.message = (
                        "the scoring process died twice scoring this output (out of memory or killed): "
                        "rerun to score it"
                    )
                    return result
                future, generation = self._scorer.submit(request[0], result.png, request[1]), self._scorer.generation
            except Exception as exc:  # noqa: BLE001 - a scoring failure is this job's result, not the run's end
                first = str(exc).splitlines()[0] if str(exc) else ""
                result.status, result.reason = "error", Reason.EXCEPTION
                result.message = f"scoring failed: {type(exc).__name__}: {first}"
                return result
        return result

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None
        if self._restore is not None:
            os.sched_setaffinity(0, self._restore[0])
            torch.set_num_threads(self._restore[1])
            self._restore = None
        self._context = None


def _span(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and cpu == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)
