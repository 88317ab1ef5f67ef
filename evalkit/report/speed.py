"""The leaderboard's speed section: the PhotoWCT2-format table built by :mod:`evalkit.report.speed_table`, plus
the device it was measured on. This module only adapts data and renders; the table logic lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from evalkit.report.data import ReportData


@dataclass
class SpeedSection:
    """A rendered-ready table: header cells, rows of display strings, the device and a note."""

    columns: list[str]
    rows: list[list[str]]
    device: str
    note: str = ""


def frame_to_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    def show(value: object) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "–"
        return str(value)

    return [str(c) for c in frame.columns], [[show(v) for v in row] for row in frame.itertuples(index=False)]


def measured_on(data: ReportData) -> str:
    """What the timed jobs ran on, from the environment each job recorded (on a Ray or GPU run that is the
    worker's device, not the driver's), in the words ``evalkit speed`` uses."""
    from evalkit.environment import describe

    timed = data.jobs.loc[data.jobs["time_network_s"].notna(), "job_key"]
    lines = sorted({describe(data.environments[k]) for k in timed if k in data.environments})
    if not lines:  # jobs recorded before per-job environments: the runs' (driver) environment
        lines = sorted({describe(r["environment"]) for r in data.runs if isinstance(r.get("environment"), dict)})
    return " | ".join(lines) or "unknown device"


def speed_section(data: ReportData) -> SpeedSection | None:
    """``None`` when no job of the selected runs was timed."""
    timed = data.jobs[data.jobs["time_network_s"].notna() | (data.jobs["status"] == "oom")]
    if timed.empty:
        return None
    try:
        from evalkit.report import speed_table
    except ImportError:
        return None
    frame = speed_table.build(data)
    n_fixed = 4 if speed_table.FIT_COLUMN in frame.columns else 3  # model, params, layers[, fit/style]
    fixed = list(frame.columns[:n_fixed])
    measured = [c for c in frame.columns[n_fixed:] if frame[c].notna().any()]
    skipped = [c for c in frame.columns[n_fixed:] if c not in measured]
    columns, rows = frame_to_rows(frame[fixed + measured])
    note = f"Not measured in these runs: {', '.join(skipped)}." if skipped else ""
    return SpeedSection(columns, rows, measured_on(data), note)
