"""The driver-side scheduler: every policy about *which* job runs *when*, for every executor.

Executors (local, isolated, Ray) only move job specs out and :class:`~evalkit.results.JobResult` objects back. The
scheduler decides the order (per method and weight set, small resolutions first), skips larger resolutions of a
method that ran out of memory (from the result's structured ``reason``, never its message), retries jobs whose
worker was lost (bounded), gives up after repeated worker start failures, and turns an executor that fails into
failure results for the jobs it did not run, so every planned job yields exactly one result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.executors.base import Executor, group_specs, size_key
from evalkit.results import JobResult, Reason, failure
from evalkit.specs import Work
from evalkit.worker import WorkerConfig

SKIP_NOTE = (
    "after an out-of-memory, larger resolutions of the same method are recorded as 'skipped' "
    "(this assumes memory grows with resolution; pass --no-skip-after-oom to run them anyway)"
)
DEFAULT_MAX_RETRIES = 2


@dataclass
class Policy:
    """The scheduler's options (``evalkit run --no-skip-after-oom``, ``--max-retries``), the same for every executor."""

    skip_after_oom: bool = True
    max_retries: int = DEFAULT_MAX_RETRIES  # lost-worker retries per job (OOM is an outcome, never retried)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise EvalkitError(f"--max-retries must be a whole number of at least 0, got {self.max_retries!r}")


def waves(specs: list[Work]) -> list[list[Work]]:
    """Wave *i* holds every method's *i*-th smallest resolution: a method's larger sizes wait for its smaller ones
    (so an OOM can skip them), while different methods still run side by side."""
    rank: dict[tuple[str, str | None], int] = {}
    out: list[list[Work]] = []
    for group in group_specs(specs):
        method = (group[0].method, group[0].weight_set)
        index = rank.get(method, 0)
        rank[method] = index + 1
        while len(out) <= index:
            out.append([])
        out[index].extend(group)
    return out


class Scheduler:
    """Runs planned jobs on one executor under a :class:`Policy`; yields ``(spec, result)`` as results arrive."""

    def __init__(
        self, executor: Executor, policy: Policy | None = None, log: Callable[[str], None] | None = None
    ) -> None:
        self.executor = executor
        self.policy = policy or Policy()
        self.log = log or (lambda line: None)
        self.retried: Counter[str] = Counter()  # job key -> lost-worker retries

    def run(self, specs: list[Work], config: WorkerConfig) -> Iterator[tuple[Work, JobResult]]:
        batches = waves(specs) if self.policy.skip_after_oom else ([list(specs)] if specs else [])
        oom_at: dict[tuple[str, str | None], str] = {}
        noted = False
        self._abort: tuple[str, str] | None = None
        try:
            self.executor.prepare(config)  # inside the try: whatever it arranged is released by close()
            described = self.executor.describe()
            if described:
                self.log(described)
            for batch in batches:
                runnable = []
                for spec in batch:
                    method = (spec.method, spec.weight_set)
                    if self._abort is not None:
                        yield spec, failure(spec.key, "error", self._abort[0], self._abort[1], config.device)
                    elif method in oom_at and size_key(spec.resolution) > size_key(oom_at[method]):
                        if not noted:
                            self.log(SKIP_NOTE)
                            noted = True
                        yield (
                            spec,
                            failure(
                                spec.key,
                                "skipped",
                                f"skipped because OOM at {oom_at[method]}, "
                                f"assuming memory grows with resolution (--no-skip-after-oom runs it)",
                                Reason.AFTER_OOM,
                                config.device,
                            ),
                        )
                    else:
                        runnable.append(spec)
                for spec, result in self._run_batch(runnable, config):
                    if result.status == "oom":
                        method = (spec.method, spec.weight_set)
                        if method not in oom_at or size_key(spec.resolution) < size_key(oom_at[method]):
                            oom_at[method] = spec.resolution
                    yield spec, result
        finally:
            self.executor.close()

    def _run_batch(self, batch: list[Work], config: WorkerConfig) -> Iterator[tuple[Work, JobResult]]:
        """One batch with bounded retries of lost jobs. When workers keep failing to start, or the executor itself
        fails, every job not yet answered gets that failure as its result (and so do later batches)."""
        by_key = {spec.key: spec for spec in batch}
        pending = list(batch)
        start_failures = 0
        while pending and self._abort is None:
            done: set[str] = set()  # keys that got their final result
            retry: list[Work] = []
            stream = self.executor.map(pending, config)
            try:
                for result in stream:
                    spec = by_key[result.key]
                    if not result.retryable:
                        start_failures = 0
                        done.add(spec.key)
                        yield spec, result
                        continue
                    if result.reason == Reason.START_FAILED:
                        start_failures += 1
                        if start_failures > self.policy.max_retries:
                            self._abort = (
                                f"{result.message} (workers failed to start {start_failures} times in a "
                                f"row; the remaining jobs were not run)",
                                Reason.START_FAILED,
                            )
                            break
                    self.retried[spec.key] += 1
                    attempt = self.retried[spec.key]
                    if attempt <= self.policy.max_retries:
                        self.log(
                            f"worker lost on {spec.label} {spec.pair_id} @{spec.resolution} ({result.message}); "
                            f"retry {attempt} of {self.policy.max_retries}"
                        )
                        retry.append(spec)
                    else:
                        done.add(spec.key)
                        yield (
                            spec,
                            failure(
                                spec.key,
                                "error",
                                f"worker lost {attempt} times ({result.message}); giving up after "
                                f"{self.policy.max_retries} retries",
                                Reason.LOST,
                                result.device,
                            ),
                        )
            except EvalkitError:
                raise  # the executor cannot run at all (e.g. no Ray cluster): a one-line error, before any job
            except Exception as exc:  # noqa: BLE001 - a failing executor fails its jobs, never the run's records
                self._abort = (f"the {self.executor.name} executor failed: {type(exc).__name__}: {exc}", Reason.BACKEND)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stop the executor's workers now, not when the generator is collected
            if self._abort is not None:
                for spec in pending:
                    if spec.key not in done:
                        yield spec, failure(spec.key, "error", self._abort[0], self._abort[1], config.device)
                return
            pending = retry
