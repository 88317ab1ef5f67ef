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
from evalkit.store.selection import select_runs


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
    set_values: pd.DataFrame | None = None  # set-level metrics: one value per row (entry, metric, eval_size, ...)
    spec: Any = None  # the Protocol as stored with the newest selected run (None if it cannot be read)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)  # job key -> what the job ran on
    notes: list[str] = field(default_factory=list)  # e.g. the protocol file changed since the run

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs]

    @property
    def imported_entries(self) -> set[str]:
        """Entries whose outputs were made elsewhere (``evalkit import``; their method's kind is ``imported``)."""
        kinds = {label: info.get("kind") for label, info in self.methods.items()}
        if not len(self.jobs):
            return set()
        return {
            str(e)
            for e, label in zip(self.jobs["entry"], self.jobs["label"], strict=True)
            if kinds.get(label) == "imported"
        }

    @property
    def entries(self) -> list[str]:
        """Row keys in a stable order (by label), including entries whose every job failed."""
        return sorted(self.jobs["entry"].unique()) if len(self.jobs) else []


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


def set_values_of(store: ResultsStore, protocol: str, jobs: pd.DataFrame) -> pd.DataFrame:
    """The protocol's set-level values whose every contributing job is among ``jobs``, with each row's entry."""
    frame = store.set_metrics_frame(protocol)
    if frame.empty or jobs.empty:
        return frame.iloc[0:0].assign(entry=pd.Series(dtype=str))
    entry_of = dict(zip(jobs["job_key"], jobs["entry"], strict=True))
    pair_of = {k: f"{p}#{s}" for k, p, s in zip(jobs["job_key"], jobs["pair_id"], jobs["seed"], strict=True)}
    entry_of_label = dict(zip(jobs["label"], jobs["entry"], strict=False))
    keys = [json.loads(k) for k in frame["job_keys"]]
    # a value over the shown jobs; or a row that could not be computed at all (no job keys, e.g. unavailable
    # weights), shown with its reason under its label's entry
    keep = [
        (bool(ks) and all(k in entry_of for k in ks)) or (not ks and label in entry_of_label)
        for ks, label in zip(keys, frame["label"], strict=True)
    ]
    frame = frame[keep].copy()
    kept = [ks for ks, k in zip(keys, keep, strict=True) if k]
    frame["entry"] = [
        entry_of[ks[0]] if ks else entry_of_label[label] for ks, label in zip(kept, frame["label"], strict=True)
    ]
    frame["pairs"] = ["|".join(sorted(pair_of[k] for k in ks)) for ks in kept]  # rows over the same pairs compare
    return frame.drop(columns=["job_keys"]).reset_index(drop=True)


def load_report_data(root: str | Path, run_ids: list[str] | None = None, protocol: str | None = None) -> ReportData:
    """What reports show of the runs chosen by ``--run`` / ``--protocol`` (see :mod:`evalkit.store.selection`)."""
    root = Path(root)
    with ResultsStore.open_reader(root, f"evalkit run --results {root}") as store:
        selection = select_runs(store, run_ids, protocol)
        runs = list(selection.runs)
        notes: list[str] = []
        try:
            spec, note = store.stored_protocol(selection.newest["run_id"])
            if note:
                notes.append(note)
        except EvalkitError:  # a run recorded before protocols were stored, whose protocol is not found by name
            spec = None
        ids = selection.run_ids
        jobs = store.jobs_frame(ids)
        jobs = jobs[jobs["protocol"] == selection.protocol].reset_index(drop=True)
        jobs["entry"] = add_entries(jobs) if len(jobs) else pd.Series(dtype=str)
        metrics = store.metrics_frame(ids)
        metrics = metrics[metrics["job_key"].isin(jobs["job_key"])]
        metrics = metrics.merge(jobs[["job_key", "entry"]], on="job_key", how="left")
        set_values = set_values_of(store, selection.protocol, jobs)
        methods = store.methods_table()
        timings = store.timings_frame(ids)
        environments = store.job_environments(ids)
        preferences = store.preferences_frame(ids)
        agreement = store.agreement_frame(ids)
    return ReportData(
        root=root,
        protocol=selection.protocol,
        runs=runs,
        jobs=jobs,
        metrics=metrics,
        methods=methods,
        timings=timings if len(timings) else None,
        preferences=preferences if len(preferences) else None,
        agreement=agreement if len(agreement) else None,
        set_values=set_values if len(set_values) else None,
        spec=spec,
        notes=notes,
        environments=environments,
    )
