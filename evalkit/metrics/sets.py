"""Set-level metrics on the driver: a row's stored per-output states reduced into one value.

A row is one method variant at one resolution and precision (:class:`~evalkit.store.reads.SetRow`). Its value is
keyed by a hash of the metric, the evaluation size, the contributing job keys and the reference images' keys, so a
resumed run skips a reduction that is already stored, and a changed job (a new key) or reference replaces the row's
value. The reduction reads states from the store and never runs a network; it is one transaction, so a run killed
during it leaves the old value or the new one, and the next run (which reuses every finished job) redoes it from
the stored states.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from evalkit.assets import AssetStore
from evalkit.metrics import get_metric_class, pack_state, unpack_state
from evalkit.metrics.base import SetMetric
from evalkit.specs import JobSpec
from evalkit.store import ResultsStore
from evalkit.store.reads import SetRow, SetValue


def pair_identity(spec: JobSpec) -> str:
    """What a bootstrap resamples: a pair (and seed), the independent unit of a benchmark."""
    return f"{spec.pair_id}#{spec.seed}"


def resamples(metric: str, pairs: Sequence[str], count: int) -> np.ndarray:
    """``count`` bootstrap draws (indices into ``pairs``, with replacement), determined by the metric and the pairs
    alone, so rows over the same pairs are resampled identically."""
    seed = int(hashlib.sha256(json.dumps([metric, sorted(pairs)]).encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).integers(0, len(pairs), size=(count, len(pairs)))


def row_of(protocol: str, spec: JobSpec) -> SetRow:
    return SetRow(protocol, spec.label, spec.resolution, spec.precision)


def set_key(metric: str, eval_size: int, job_keys: Sequence[str], reference_keys: Sequence[str]) -> str:
    blob = json.dumps(
        {"metric": metric, "eval_size": eval_size, "jobs": sorted(job_keys), "references": sorted(reference_keys)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class SetReducer:
    """Reduces rows for the set-level metrics among ``metrics``; :meth:`reduce` returns what it (re)computed."""

    def __init__(self, results: ResultsStore, protocol: str, metrics: list[str], eval_size: int, assets: AssetStore):
        self.results = results
        self.protocol = protocol
        self.eval_size = eval_size
        self.metrics: dict[str, SetMetric] = {}
        for name in metrics:
            cls = get_metric_class(name)
            if issubclass(cls, SetMetric):
                self.metrics[name] = cls("cpu", assets)  # reduction needs no weights (setup() is never called)
        self.reductions = 0  # values computed (not skipped): tests check resume skips them

    def reduce(self, row: SetRow, jobs: list[JobSpec]) -> list[SetValue]:
        done = []
        for name, metric in self.metrics.items():
            value = self._value(row, jobs, name, metric)
            if value is not None:
                self.results.record_set_metric(row, value)
                self.reductions += 1
                done.append(value)
        return done

    def _value(self, row: SetRow, jobs: list[JobSpec], name: str, metric: SetMetric) -> SetValue | None:
        """The row's value, or ``None`` when the stored one was computed from exactly these states."""
        states = self.results.metric_states([j.key for j in jobs], name, self.eval_size)
        contributing = [j for j in jobs if j.key in states and states[j.key]["status"] == "ok"]
        role = metric.info.reference
        ref_keys = sorted({j.reference_key(role) for j in contributing}) if role != "none" else []
        key = set_key(name, self.eval_size, [j.key for j in contributing], ref_keys)
        stored = self.results.set_metric_key(row, name, self.eval_size)
        if stored is not None and stored == (key, "ok"):
            return None

        def result(value: float | None, status: str, message: str | None) -> SetValue:
            return SetValue(name, self.eval_size, key, value, status, message, [j.key for j in contributing], ref_keys)

        if not contributing:
            problems = [r for r in states.values() if r["status"] != "ok"]
            status = problems[0]["status"] if problems else "error"
            why = problems[0]["message"] if problems else "no output of this row has a state"
            return result(None, status, why)
        refs = self.results.reference_states(ref_keys, name, self.eval_size)
        missing = [k for k in ref_keys if k not in refs]
        if missing:
            return result(None, "error", f"{len(missing)} reference image state(s) missing: rescore the row")
        try:
            value = float(
                metric.reduce(
                    [unpack_state(states[j.key]["state"]) for j in contributing],
                    [unpack_state(refs[j.reference_key(role)]["state"]) for j in contributing] if ref_keys else [],
                )
            )
        except Exception as exc:  # noqa: BLE001 - a reduction that fails is a result, never a crash of the run
            return result(None, "error", f"{type(exc).__name__}: {exc}")
        if not math.isfinite(value):
            return result(None, "error", "metric returned NaN/Inf")
        note = None if len(contributing) == len(jobs) else f"from {len(contributing)} of {len(jobs)} outputs"
        out = result(value, "ok", note)
        return self._with_interval(out, metric, contributing, states, refs, role)

    def _with_interval(
        self, out: SetValue, metric: SetMetric, jobs: list[JobSpec], states: dict, refs: dict, role: str
    ) -> SetValue:
        """The 95 % percentile interval of ``metric.bootstrap`` resamples of the row's pairs. The resamples depend
        only on the metric and the set of pairs, so two rows over the same pairs share them: their replicates,
        stored, give paired intervals of differences (evalkit/report/set_intervals.py)."""
        if metric.bootstrap <= 0 or len(jobs) < 3:
            return out
        order = sorted(range(len(jobs)), key=lambda i: pair_identity(jobs[i]))
        xs = [unpack_state(states[jobs[i].key]["state"]) for i in order]
        rs = [unpack_state(refs[jobs[i].reference_key(role)]["state"]) for i in order] if out.reference_keys else []
        replicates = []
        for idx in resamples(metric.info.name, [pair_identity(jobs[i]) for i in order], metric.bootstrap):
            try:
                replicates.append(float(metric.reduce([xs[i] for i in idx], [rs[i] for i in idx] if rs else [])))
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                continue  # a degenerate resample (e.g. every draw the same pair): left out
        values = np.array([v for v in replicates if math.isfinite(v)])
        if len(values) < 0.9 * metric.bootstrap:
            return out
        lower, upper = np.percentile(values, [2.5, 97.5])
        return replace(out, lower=float(lower), upper=float(upper), replicates=pack_state(values))
