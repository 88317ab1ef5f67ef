"""The quality table: per method (row) and metric (column), the mean over pairs with a 95 % confidence interval.

Interval: Student's t over pairs, ``mean ± t(0.975, n-1) · s / sqrt(n)`` (``scipy.stats.t.interval``). Pairs are
the independent unit of a benchmark, so each pair contributes one value: the mean of its seeds and resolutions.
Directions (arrows, best-in-column) come from each metric's own :class:`~evalkit.metrics.MetricInfo`; a metric
whose metadata is unknown gets neither, rather than a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from scipy import stats

from evalkit.metrics import MetricInfo, metric_info

CONFIDENCE = 0.95
CI_METHOD = "Student t-interval over pairs (95 %)"


@dataclass
class Cell:
    """One metric for one method: a mean and interval, or the reason there is none."""

    mean: float | None = None
    lower: float | None = None
    upper: float | None = None
    n: int = 0
    failed: int = 0
    reason: str = ""
    best: bool = False
    tied: bool = False  # in the metric's tied-for-best group (not significantly worse than the best, paired)

    @property
    def available(self) -> bool:
        return self.mean is not None

    @property
    def half_width(self) -> float | None:
        if self.mean is None or self.upper is None:
            return None
        return self.upper - self.mean


@dataclass
class Column:
    metric: str
    info: MetricInfo | None

    @property
    def arrow(self) -> str:
        if self.info is None:
            return ""
        return "↑" if self.info.higher_is_better else "↓"

    @property
    def direction(self) -> str:
        """``higher``/``lower`` is better, or ``unknown`` when the metric's metadata is missing."""
        if self.info is None:
            return "unknown"
        return "higher" if self.info.higher_is_better else "lower"


@dataclass
class Row:
    entry: str
    label: str
    jobs_ok: int
    jobs_total: int
    job_problems: str
    cells: dict[str, Cell] = field(default_factory=dict)
    imported: bool = False  # outputs made elsewhere (evalkit import): marked wherever the row is shown


@dataclass
class QualityTable:
    columns: list[Column]
    rows: list[Row]
    ci_method: str = CI_METHOD


def mean_ci(
    values: list[float] | pd.Series, confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None]:
    """(mean, lower, upper) with a Student t-interval; no interval for a single value."""
    series = pd.Series(values, dtype=float).dropna()
    n = len(series)
    if n == 0:
        raise ValueError("no values")
    mean = float(series.mean())
    if n == 1:
        return mean, None, None
    sem = float(series.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return mean, mean, mean
    lower, upper = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, float(lower), float(upper)


def lookup_info(metric: str) -> MetricInfo | None:
    """The metric's metadata, or ``None`` when it is unknown or its module fails to import (no guessed direction)."""
    try:
        return metric_info(metric)
    except Exception:  # noqa: BLE001 - a broken metric module must not take the whole report down
        return None


def _reason(rows: pd.DataFrame) -> str:
    """The most frequent failure message among non-ok metric rows (with its status)."""
    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return ""
    texts = (bad["status"] + ": " + bad["message"].fillna("no message")).value_counts()
    text = texts.index[0]
    return text if len(texts) == 1 else f"{text} (and {len(texts) - 1} other reason(s))"


def metric_order(metrics: pd.DataFrame, preferred: list[str] | None = None) -> list[str]:
    present = list(dict.fromkeys(metrics["metric"])) if len(metrics) else []
    ordered = [m for m in (preferred or []) if m in present]
    return ordered + sorted(m for m in present if m not in ordered)


def build_quality_table(
    jobs: pd.DataFrame,
    metrics: pd.DataFrame,
    preferred: list[str] | None = None,
    eval_size: int | None = None,
    set_values: pd.DataFrame | None = None,
    imported: set[str] | None = None,
) -> QualityTable:
    """Aggregate long-form metrics (columns entry, pair_id, metric, value, status, message) into the table; set-level
    metrics (``set_values``: entry, metric, eval_size, value, status, message, n) add one cell per row."""
    if eval_size is None and len(metrics):
        eval_size = int(metrics["eval_size"].mode().iloc[0])
    if len(metrics):
        metrics = metrics[metrics["eval_size"] == eval_size]
    if set_values is not None and len(set_values) and eval_size is not None:
        set_values = set_values[set_values["eval_size"] == eval_size]
    set_names = list(dict.fromkeys(set_values["metric"])) if set_values is not None and len(set_values) else []
    order = metric_order(pd.DataFrame({"metric": [*metrics["metric"], *set_names]}), preferred)
    columns = [Column(m, lookup_info(m)) for m in order]
    rows: list[Row] = []
    for entry in sorted(jobs["entry"].unique()) if len(jobs) else []:
        ejobs = jobs[jobs["entry"] == entry]
        ok = ejobs[ejobs["status"] == "ok"]
        bad = ejobs[ejobs["status"] != "ok"]
        problems = ""
        if len(bad):
            counts = (bad["status"] + ": " + bad["message"].fillna("")).value_counts()
            problems = "; ".join(f"{n}× {text}" for text, n in counts.head(3).items())
        row = Row(
            entry=entry,
            label=str(ejobs["label"].iloc[0]),
            jobs_ok=len(ok),
            jobs_total=len(ejobs),
            job_problems=problems,
            imported=entry in (imported or set()),
        )
        emetrics = metrics[metrics["entry"] == entry] if len(metrics) else metrics
        for col in columns:
            if col.metric in set_names:
                assert set_values is not None
                row.cells[col.metric] = set_cell(
                    set_values[(set_values["entry"] == entry) & (set_values["metric"] == col.metric)]
                )
                continue
            rows_m = emetrics[emetrics["metric"] == col.metric] if len(emetrics) else emetrics
            row.cells[col.metric] = image_cell(rows_m, len(ok), problems)
        rows.append(row)
    mark_best(columns, rows)
    return QualityTable(columns=columns, rows=rows)


def image_cell(rows_m: pd.DataFrame, ok_jobs: int, problems: str) -> Cell:
    """An image-level metric's cell: mean and interval over pairs (each pair the mean of its seeds and resolutions),
    or the reason there is none."""
    good = rows_m[(rows_m["status"] == "ok") & rows_m["value"].notna()] if len(rows_m) else rows_m
    cell = Cell(failed=int((rows_m["status"] != "ok").sum()) if len(rows_m) else 0)
    if len(good):
        per_pair = good.groupby("pair_id")["value"].mean()
        cell.mean, cell.lower, cell.upper = mean_ci(per_pair)
        cell.n = len(per_pair)
        cell.reason = _reason(rows_m)
    elif len(rows_m):
        cell.reason = _reason(rows_m)
    elif ok_jobs == 0:
        cell.reason = f"no successful output ({problems})" if problems else "no jobs"
    else:
        cell.reason = "not computed for this method's outputs"
    return cell


def set_cell(values: pd.DataFrame) -> Cell:
    """A set-level metric's cell: the row's value with its bootstrap interval (the mean over resolutions, without
    an interval, when the row has several)."""
    good = values[(values["status"] == "ok") & values["value"].notna()]
    cell = Cell(failed=int((values["status"] != "ok").sum()))
    if len(good):
        cell.mean = float(good["value"].mean())
        cell.n = int(good["n"].min())
        if len(good) == 1 and "lower" in good and pd.notna(good["lower"].iloc[0]):
            cell.lower, cell.upper = float(good["lower"].iloc[0]), float(good["upper"].iloc[0])
        cell.reason = "; ".join(dict.fromkeys(m for m in good["message"].dropna() if m))
    elif len(values):
        cell.reason = _reason(values)
    else:
        cell.reason = "not computed for this method's outputs"
    return cell


def mark_best(columns: list[Column], rows: list[Row]) -> None:
    """Flag the best mean in each column (ties all flagged), using the metric's declared direction."""
    for col in columns:
        if col.info is None:
            continue
        means = [m for r in rows if r.cells[col.metric].available and (m := r.cells[col.metric].mean) is not None]
        if len(means) < 2:
            continue
        best = max(means) if col.info.higher_is_better else min(means)
        for r in rows:
            if r.cells[col.metric].mean == best:
                r.cells[col.metric].best = True
