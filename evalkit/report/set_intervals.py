"""Confidence for set-level metrics (FID, KID, ArtFID, ...), which no tool in the field reports.

A row's 95 % interval is the percentile interval of its bootstrap over pairs, stored with its value
(evalkit/metrics/sets.py). Two rows over the same pairs were resampled identically, so the difference of their
stored replicates, resample by resample, is a paired bootstrap of the difference: its 95 % interval says whether
one row is better, and the rows whose interval against the best includes 0 are tied for best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evalkit.metrics import unpack_state


@dataclass(frozen=True)
class SetComparison:
    metric: str
    a: str
    b: str
    mean_diff: float
    lower: float | None
    upper: float | None

    @property
    def significant(self) -> bool:
        return self.lower is not None and self.upper is not None and (self.lower > 0 or self.upper < 0)


def _rows(values: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = values[(values["metric"] == metric) & (values["status"] == "ok") & values["value"].notna()]
    return rows.drop_duplicates("entry")


def compare_rows(values: pd.DataFrame, metric: str) -> list[SetComparison]:
    """Paired differences (a - b) of every two rows of ``metric``; the interval only where both rows were bootstrapped
    over the same pairs (same ``pairs`` signature and replicate count)."""
    rows = _rows(values, metric).to_dict("records")
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            lower = upper = None
            same_pairs = a.get("pairs") == b.get("pairs")
            if same_pairs and a.get("replicates") is not None and b.get("replicates") is not None:
                ra, rb = unpack_state(a["replicates"]), unpack_state(b["replicates"])
                if len(ra) == len(rb):
                    lower, upper = (float(v) for v in np.percentile(ra - rb, [2.5, 97.5]))
            out.append(SetComparison(metric, a["entry"], b["entry"], float(a["value"] - b["value"]), lower, upper))
    return out


def tied_for_best(values: pd.DataFrame, metric: str, higher_is_better: bool) -> set[str]:
    """The best row and every row not significantly worse than it (paired interval includes 0)."""
    rows = _rows(values, metric)
    if rows.empty:
        return set()
    best = rows.loc[rows["value"].idxmax() if higher_is_better else rows["value"].idxmin(), "entry"]
    tied = {best}
    for c in compare_rows(values, metric):
        if best in (c.a, c.b) and c.lower is not None and not c.significant:
            tied.add(c.b if c.a == best else c.a)
    return tied
