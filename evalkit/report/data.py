"""Load what a leaderboard shows from a results root, through the store's read models: the selected runs, their jobs
and metrics, the environment each job ran on, and the tables other parts of evalkit add (``timings`` from speed runs,
``preferences`` / ``metric_agreement`` from human studies), which may be empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.errors import EvalkitError
from evalkit.store import ResultsStore


@dataclass
class ReportData:
    """Everything a report renders, already restricted to the selected runs (one protocol)."""

    root: Path
    protocol: str
    runs: list[dict[str, Any]]
    jobs: pd.DataFrame
    metrics: pd.DataFrame
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: pd.DataFrame | None = None
    preferences: pd.DataFrame | None = None
    agreement: pd.DataFrame | None = None
    spec: Any = None  # the Protocol as stored with the newest selected run (None if it cannot be read)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)  # job key -> what the job ran on
    notes: list[str] = field(default_factory=list)  # e.g. the protocol file changed since the run

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs]

    @property
    def labels(self) -> list[str]:
        """Row keys in a stable order (by label), including entries whose every job failed."""
        return sorted(self.jobs["entry"].unique()) if len(self.jobs) else []


def select_runs(store: ResultsStore, run_ids: list[str] | None) -> list[dict[str, Any]]:
    """The requested runs, or (default) every run of the protocol of the latest run.

    Defaulting to all runs of one protocol lets ``evalkit run -m a`` followed by ``evalkit run -m b`` show both
    methods, while never mixing protocols, whose metrics are not comparable.
    """
    runs = [dict(r) for r in store.runs()]
    if not runs:
        raise EvalkitError(f"no runs in {store.path}: run `evalkit run --out {store.root}` first")
    if run_ids:
        by_id = {r["run_id"]: r for r in runs}
        missing = [r for r in run_ids if r not in by_id]
        if missing:
            raise EvalkitError(
                f"unknown run id(s) {', '.join(missing)} in {store.path}: known runs are {', '.join(by_id)}"
            )
        chosen = [by_id[r] for r in run_ids]
    else:
        latest = store.latest_run()
        protocol = next(r["protocol"] for r in runs if r["run_id"] == latest)
        chosen = [r for r in runs if r["protocol"] == protocol]
    protocols = sorted({r["protocol"] for r in chosen})
    if len(protocols) > 1:
        raise EvalkitError(
            f"the selected runs use different protocols ({', '.join(protocols)}): pass --run ids of "
            f"one protocol, since metrics of different protocols are not comparable"
        )
    for run in chosen:
        for key in ("environment", "methods", "resolutions"):
            try:
                run[key] = json.loads(run[key]) if run.get(key) else None
            except (TypeError, ValueError):
                pass
    return chosen


def add_entries(jobs: pd.DataFrame) -> pd.Series:
    """A row key per job: the label, its precision when not fp32, plus the differing parameters when one label ran
    with several settings.

    Results of ``gatys`` with 60 and with 300 iterations, or of ``adain`` in fp32 and bf16, must not be averaged
    into one row.
    """
    labels = jobs["label"].astype(str)
    if "precision" in jobs:
        precisions = jobs["precision"].fillna("fp32").astype(str)
        labels = labels.where(precisions == "fp32", labels + " " + precisions)
    entries = labels.copy()
    for label, group in jobs.assign(_base=labels).groupby("_base"):
        variants = group["params"].unique()
        if len(variants) < 2:
            continue
        decoded = {v: json.loads(v) for v in variants}
        keys = sorted({k for d in decoded.values() for k in d})
        differing = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in decoded.values()}) > 1]
        for raw, params in decoded.items():
            suffix = ", ".join(f"{k}={params.get(k)}" for k in differing)
            entries[group.index[group["params"] == raw]] = f"{label} ({suffix})"
    return entries


def load_report_data(root: str | Path, run_ids: list[str] | None = None) -> ReportData:
    root = Path(root)
    with ResultsStore.open_reader(root, f"evalkit run --results {root}") as store:
        runs = select_runs(store, run_ids)
        notes: list[str] = []
        try:
            spec, note = store.stored_protocol(runs[-1]["run_id"])
            if note:
                notes.append(note)
        except EvalkitError:  # a run recorded before protocols were stored, whose protocol is not found by name
            spec = None
        ids = [r["run_id"] for r in runs]
        protocol = runs[0]["protocol"]
        jobs = store.jobs_frame(ids)
        jobs = jobs[jobs["protocol"] == protocol].reset_index(drop=True)
        jobs["entry"] = add_entries(jobs) if len(jobs) else pd.Series(dtype=str)
        metrics = store.metrics_frame(ids)
        metrics = metrics[metrics["job_key"].isin(jobs["job_key"])]
        metrics = metrics.merge(jobs[["job_key", "entry"]], on="job_key", how="left")
        methods = store.methods_table()
        timings = store.timings_frame(ids)
        environments = store.job_environments(ids)
        preferences = store.preferences_frame()
        agreement = store.agreement_frame()
    return ReportData(
        root=root,
        protocol=protocol,
        runs=runs,
        jobs=jobs,
        metrics=metrics,
        methods=methods,
        timings=timings if len(timings) else None,
        preferences=preferences if len(preferences) else None,
        agreement=agreement if len(agreement) else None,
        spec=spec,
        notes=notes,
        environments=environments,
    )
