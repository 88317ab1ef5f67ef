"""The driver's recorder: every result of a run goes into the results store here, and nowhere else.

It writes a job (PNG, row, metrics, states) per result, the method's counts once per label, the metrics of score
jobs, and a row's set-level values as soon as the row's last job is recorded (:mod:`evalkit.metrics.sets`). It tells
a :class:`RunEvents` listener what happened (the console's progress display is one); it prints nothing itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from evalkit.metrics.sets import SetReducer, row_of
from evalkit.planner import Plan
from evalkit.results import JobResult
from evalkit.specs import JobSpec, ScoreJob, Work
from evalkit.store import ResultsStore
from evalkit.store.reads import SetRow


class RunEvents(Protocol):
    """What a run reports as it goes (the console display implements it; tests may record it)."""

    def note(self, line: str) -> None: ...

    def job_done(self, job: Work, result: JobResult) -> None: ...


@dataclass
class Recorder:
    """Records results of one run into ``store`` (the run's only writer, under the root's lock)."""

    store: ResultsStore
    run_id: str
    protocol: str
    eval_size: int
    plan: Plan
    reducer: SetReducer
    events: RunEvents
    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (label/pair/res/seed, status, message)
    _recorded_models: set[str] = field(default_factory=set)
    _pending: Counter = field(default_factory=Counter)  # row -> work items not yet recorded
    _rows: dict[SetRow, list[JobSpec]] = field(default_factory=dict)

    def expect(self, work: Iterable[Work]) -> None:
        """The work the scheduler will run: rows with nothing left to run are reduced now, the others when their
        last item is recorded."""
        if not self.reducer.metrics:
            return
        for spec in self.plan.jobs:
            self._rows.setdefault(row_of(self.protocol, spec), []).append(spec)
        for item in work:
            self._pending[self._row(item)] += 1
        for row in self._rows:
            if not self._pending[row]:
                self._reduce(row)

    def record(self, job: Work, result: JobResult) -> None:
        self._record_model(job, result)
        if isinstance(job, ScoreJob):
            if result.status == "ok":
                self.store.record_metrics(
                    job.key, job.job.eval_size, result.metrics, result.states, result.time_score_s
                )
        else:
            self.store.record_job(self.run_id, self.protocol, job, result, self.eval_size)
            self.counts[result.status] += 1
            if result.status != "ok":
                self.failures.append(
                    (f"{job.label} {job.pair_id} {job.resolution} s{job.seed}", result.status, result.message or "")
                )
        self.events.job_done(job, result)
        if self.reducer.metrics:
            row = self._row(job)
            self._pending[row] -= 1
            if self._pending[row] == 0:
                self._reduce(row)

    def _row(self, job: Work) -> SetRow:
        return row_of(self.protocol, job.job if isinstance(job, ScoreJob) else job)

    def _reduce(self, row: SetRow) -> None:
        jobs = self._rows.get(row, [])
        statuses = self.store.job_status(j.key for j in jobs)
        for value in self.reducer.reduce(row, [j for j in jobs if statuses.get(j.key) == "ok"]):
            shown = f"{value.value:.6g}" if value.value is not None else f"{value.status}: {value.message}"
            self.events.note(f"{value.metric} of {row.label} @{row.resolution}: {shown} (n={len(value.job_keys)})")

    def _record_model(self, job: Work, result: JobResult) -> None:
        if result.model_info is None or job.label in self._recorded_models:
            return
        method = self.plan.methods.get(result.model_info.weight_label)
        if method is None or method.cls is None:
            return
        cls = method.cls  # recorded under the job's label, so a sweep variant's row finds its counts
        self.store.record_method(
            job.label,
            cls.name,
            method.weight_set,
            cls.kind,
            cls.version,
            result.model_info.parameters,
            result.model_info.layers,
            method.digests,
        )
        self._recorded_models.add(job.label)
