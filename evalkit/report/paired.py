"""Paired comparisons of methods on an automatic metric: do two methods differ *on the same pairs*?

A leaderboard's per-method means with intervals hide the pairing: two methods whose intervals overlap can still
differ consistently pair by pair, and vice versa. For every two entries (methods, or sweep variants) and one metric:

- the per-pair values (mean over seeds and resolutions, at one eval size) on the pairs both have;
- the mean paired difference ``a - b`` with a 95 % bootstrap interval (``scipy.stats.bootstrap``, percentile method,
  fixed seed so a report is reproducible);
- a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``; exact for small samples), because metric
  differences are rarely normal;
- Holm's step-down correction across all method pairs of the metric (family-wise error at ``alpha``).

Per metric, the **tied-for-best** group is the best entry (by mean, in the metric's declared direction) and every
entry whose Holm-adjusted difference from it is not significant: the methods the data cannot tell from the best.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from evalkit.report.quality import lookup_info

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
METHOD_TEXT = (
    "paired over pairs: mean difference with a 95 % percentile bootstrap interval, two-sided Wilcoxon signed-rank "
    "test, Holm-corrected across method pairs"
)


@dataclass
class Comparison:
    """Entry ``a`` against entry ``b`` on one metric (difference = a - b)."""

    a: str
    b: str
    n: int
    mean_diff: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    p_holm: float | None = None
    better: str | None = None  # the entry that is significantly better after Holm, if any

    @property
    def significant(self) -> bool:
        return self.better is not None


@dataclass
class PairedTable:
    metric: str
    direction: str  # higher | lower | unknown
    entries: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    best: str | None = None
    tied_for_best: list[str] = field(default_factory=list)
    alpha: float = ALPHA
    method: str = METHOD_TEXT


def per_pair_values(metrics: pd.DataFrame, metric: str, eval_size: int | None = None) -> pd.DataFrame:
    """``pair_id x entry`` table of one metric's ok values (each cell the mean over seeds and resolutions)."""
    rows = metrics[(metrics["metric"] == metric) & (metrics["status"] == "ok") & metrics["value"].notna()]
    if eval_size is None and len(rows):
        eval_size = int(rows["eval_size"].mode().iloc[0])
    if len(rows):
        rows = rows[rows["eval_size"] == eval_size]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index="pair_id", columns="entry", values="value", aggfunc="mean")


def bootstrap_interval(diff: np.ndarray, seed: int = BOOTSTRAP_SEED) -> tuple[float | None, float | None]:
    if len(diff) < 2:
        return None, None
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    result = stats.bootstrap(
        (diff,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(diff: np.ndarray) -> float | None:
    """Two-sided signed-rank p-value; 1.0 when every difference is zero, ``None`` with fewer than 2 pairs."""
    if len(diff) < 2:
        return None
    if np.all(diff == 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (monotone, capped at 1); ``None`` entries are skipped."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare(pivot: pd.DataFrame, metric: str, alpha: float = ALPHA) -> PairedTable:
    """Every pairwise comparison of the entries (columns of ``pivot``) on ``metric``."""
    info = lookup_info(metric)
    direction = "unknown" if info is None else ("higher" if info.higher_is_better else "lower")
    entries = sorted(str(c) for c in pivot.columns)
    table = PairedTable(metric, direction, entries, alpha=alpha)
    table.means = {e: float(pivot[e].mean()) for e in entries if pivot[e].notna().any()}
    for a, b in itertools.combinations(entries, 2):
        both = pivot[[a, b]].dropna()
        diff = (both[a] - both[b]).to_numpy(dtype=float)
        lower, upper = bootstrap_interval(diff)
        mean = float(diff.mean()) if len(diff) else None
        table.comparisons.append(Comparison(a, b, len(diff), mean, lower, upper, wilcoxon_p(diff)))
    for comp, p in zip(table.comparisons, holm([c.p_value for c in table.comparisons]), strict=True):
        comp.p_holm = p
        if p is not None and p < alpha and comp.mean_diff and direction != "unknown":
            a_better = (comp.mean_diff > 0) == (direction == "higher")
            comp.better = comp.a if a_better else comp.b
    if table.means and direction != "unknown":
        pick = max if direction == "higher" else min
        table.best = pick(table.means, key=lambda e: table.means[e])
        table.tied_for_best = [e for e in entries if e in table.means and not _worse_than(table, e, table.best)]
    return table


def _worse_than(table: PairedTable, entry: str, best: str) -> bool:
    if entry == best:
        return False
    for comp in table.comparisons:
        if {comp.a, comp.b} == {entry, best}:
            return comp.better == best
    return False


def paired_tables(
    metrics: pd.DataFrame, names: list[str] | None = None, eval_size: int | None = None, alpha: float = ALPHA
) -> list[PairedTable]:
    """One :class:`PairedTable` per metric (all metrics present, or ``names``) with at least two entries."""
    present = list(dict.fromkeys(metrics["metric"])) if len(metrics) else []
    out = []
    for metric in names or present:
        pivot = per_pair_values(metrics, metric, eval_size)
        if pivot.shape[1] >= 2:
            out.append(compare(pivot, metric, alpha))
    return out


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def rows(table: PairedTable) -> list[list[str]]:
    """Table rows ``a, b, n, mean a-b, 95 % CI, Wilcoxon p, Holm p, verdict`` for text formats."""
    out = []
    for c in table.comparisons:
        ci = f"[{_num(c.lower)}, {_num(c.upper)}]" if c.lower is not None else "–"
        verdict = f"{c.better} better" if c.better else "no significant difference"
        out.append([c.a, c.b, str(c.n), _num(c.mean_diff), ci, _p(c.p_value), _p(c.p_holm), verdict])
    return out


HEADER = ["a", "b", "pairs", "mean a−b", "95 % CI", "Wilcoxon p", "Holm p", "verdict"]


def to_markdown(tables: list[PairedTable]) -> str:
    from evalkit.report.formatting import markdown_table, md_escape

    out: list[str] = []
    for t in tables:
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(t.direction, "")
        out += [f"### {md_escape(t.metric)}{arrow}", ""]
        out += markdown_table(HEADER, [[md_escape(c) for c in r] for r in rows(t)])
        tied = ", ".join(md_escape(e) for e in t.tied_for_best) or "–"
        out += ["", f"Tied for best (not significantly worse than {md_escape(t.best or '–')}): {tied}", ""]
    out.append(f"*{METHOD_TEXT}; alpha = {tables[0].alpha if tables else ALPHA}.*")
    return "\n".join(out) + "\n"


def to_latex(tables: list[PairedTable]) -> str:
    from evalkit.report.formatting import latex_escape

    out = [r"% generated by evalkit compare --format tex; needs \usepackage{booktabs}"]
    for t in tables:
        out += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{Paired comparison on {latex_escape(t.metric)} ({latex_escape(METHOD_TEXT)}). Tied for best: "
            rf"{latex_escape(', '.join(t.tied_for_best) or '--')}.}}",
            r"\begin{tabular}{llrrlrrl}",
            r"\toprule",
            " & ".join(latex_escape(h) for h in HEADER) + r" \\",
            r"\midrule",
            *[" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows(t)],
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    return "\n".join(out) + "\n"
