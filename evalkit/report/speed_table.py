"""The PhotoWCT2-style speed table (Chiu & Gurari, WACV 2022, Table 2) as a pure function of the jobs frame.

One row per model: parameter count, layer count, then seconds per image at 1024x512, 1280x720, 1920x1080,
2560x1440 and 3840x2160, written ``network+post`` (``0.39+0.14``), ``network`` alone for a method without
post-processing, or ``OOM`` (an ``oom`` job, or one skipped after an OOM at a smaller resolution). The cell of a
(model, resolution) is the median over its ``ok`` jobs of the per-job medians stored in ``jobs.time_network_s`` /
``jobs.time_post_s``. Methods that learn each style once before stylizing (InST) add a column ``fit/style``: the
median over the styles they learned of the time that took (``jobs.time_fit_s``, recorded on the job that learned
it), the cost a per-image column hides; it appears only when some row has one. Both ``evalkit speed`` and the
leaderboard call
:func:`speed_table`; :func:`speed_summary` gives the same cells as numbers with their spread (from ``timings``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from evalkit.resolution import NAMED_RESOLUTIONS, Resolution
from evalkit.results import Reason

PAPER_RESOLUTIONS: tuple[str, ...] = ("1k", "hd", "fhd", "qhd", "4k")
# the seed table's rows, in its order (PhotoNAS, WCT², PhWCT, PhotoWCT2); other methods follow alphabetically
SEED_ORDER: tuple[str, ...] = ("photonas", "wct2", "photowct", "photowct2")
FIT_COLUMN = "fit/style"  # seconds to learn one style, for methods with a per-style phase
_STATUS_CELL = {"timeout": "timeout", "error": "error", "unavailable": "n/a", "skipped": "skipped"}


def resolution_header(resolution: str) -> str:
    """``4k`` -> ``3840x2160``: the paper's column names; other resolutions keep their name."""
    if resolution in NAMED_RESOLUTIONS:
        w, h = NAMED_RESOLUTIONS[resolution]
        return f"{w}x{h}"
    return resolution


def format_seconds(value: float) -> str:
    """Two decimals like the paper, more for sub-0.1 s values so fast methods do not all read 0.00."""
    if value >= 0.1:
        return f"{value:.2f}"
    if value >= 0.001:
        return f"{value:.3f}"
    return f"{value:.1e}"


def format_count(n: Any) -> str | None:
    """Parameter counts as a paper writes them: ``8.35M``, ``120.3K``, ``0``."""
    if n is None or (isinstance(n, float) and pd.isna(n)):
        return None
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def is_oom(status: str, reason: Any) -> bool:
    """An ``oom`` job, or one skipped because a smaller resolution of its method ran out of memory (the structured
    ``reason`` the scheduler records, never the message text)."""
    return status == "oom" or (status == "skipped" and reason == Reason.AFTER_OOM)


IMPORTED_CELL = "not timed (imported)"


def _imported(spec: Any) -> bool:
    try:
        return bool(json.loads(spec).get("source"))
    except (TypeError, ValueError, AttributeError):
        return False


def cell(jobs: pd.DataFrame) -> str | None:
    """The display string for the jobs of one (model, resolution); ``None`` when there are none."""
    if jobs.empty:
        return None
    ok = jobs[(jobs["status"] == "ok") & jobs["time_network_s"].notna()]
    if len(ok):
        text = format_seconds(float(ok["time_network_s"].median()))
        post = ok["time_post_s"].dropna()
        return f"{text}+{format_seconds(float(post.median()))}" if len(post) else text
    if (jobs["status"] == "ok").any() and "spec" in jobs and jobs["spec"].map(_imported).any():
        return IMPORTED_CELL  # outputs made elsewhere (evalkit import) have no timing
    reasons = jobs["reason"] if "reason" in jobs else [None] * len(jobs)
    if any(is_oom(s, r) for s, r in zip(jobs["status"], reasons, strict=True)):
        return "OOM"
    for status in ("timeout", "error", "unavailable", "skipped"):
        if (jobs["status"] == status).any():
            return _STATUS_CELL[status]
    return str(jobs["status"].iloc[0])


def fit_cell(jobs: pd.DataFrame) -> str | None:
    """Median seconds of the style fits recorded on ``jobs`` (one per style learned); ``None`` without any."""
    if "time_fit_s" not in jobs:
        return None
    fits = jobs["time_fit_s"].dropna()
    return format_seconds(float(fits.median())) if len(fits) else None


def _method_counts(methods: pd.DataFrame | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if methods is None:
        return {}
    if isinstance(methods, pd.DataFrame):
        return {str(r["label"]): dict(r) for _, r in methods.iterrows()}
    return {str(k): dict(v) for k, v in methods.items()}


def ordered_resolutions(jobs: pd.DataFrame, resolutions: Sequence[str] | None) -> list[str]:
    """The paper's five columns plus any other resolution present, smallest first."""
    if resolutions is not None:
        return list(resolutions)
    extra = [r for r in jobs["resolution"].dropna().astype(str).unique() if r not in PAPER_RESOLUTIONS]

    def pixels(res: str) -> int:
        parsed = Resolution.parse(res)
        return parsed.pixels or (parsed.short_side or 0) ** 2

    return sorted([*PAPER_RESOLUTIONS, *extra], key=pixels)


def speed_table(
    jobs: pd.DataFrame,
    methods: pd.DataFrame | Mapping[str, Mapping[str, Any]] | None = None,
    resolutions: Sequence[str] | None = None,
    row_key: str = "label",
) -> pd.DataFrame:
    """Rows ``model, params, layers, <WxH>...`` from a jobs frame (columns ``label``/``row_key``, ``resolution``,
    ``status``, ``message``, ``time_network_s``, ``time_post_s``) and the ``methods`` table (``label``,
    ``parameters``, ``layers``; a DataFrame or a label-keyed mapping), then :data:`FIT_COLUMN` when some job
    recorded a style fit (``time_fit_s``). Missing cells are ``None``."""
    columns = ordered_resolutions(jobs, resolutions)
    with_fit = "time_fit_s" in jobs and bool(jobs["time_fit_s"].notna().any())
    counts = _method_counts(methods)
    rows = []
    for key in sorted(jobs[row_key].dropna().astype(str).unique(), key=lambda k: _row_rank(jobs, row_key, k)):
        mine = jobs[jobs[row_key].astype(str) == key]
        label = str(mine["label"].iloc[0]) if "label" in mine else key
        info = counts.get(label, {})
        layers = info.get("layers")
        row: dict[str, Any] = {
            "model": key,
            "params": format_count(info.get("parameters")),
            "layers": None if layers is None or pd.isna(layers) else int(layers),
        }
        if with_fit:
            row[FIT_COLUMN] = fit_cell(mine)
        for res in columns:
            row[resolution_header(res)] = cell(mine[mine["resolution"].astype(str) == res])
        rows.append(row)
    # object dtype: keep None (not NaN) for missing cells and ints (not floats) for layer counts
    fixed = ["model", "params", "layers", *([FIT_COLUMN] if with_fit else [])]
    return pd.DataFrame(rows, columns=[*fixed, *[resolution_header(r) for r in columns]], dtype=object)


def _row_rank(jobs: pd.DataFrame, row_key: str, key: str) -> tuple[int, str, bool, str]:
    """Seed-table methods first, in the paper's order, then everything else by name; a method's official set first."""
    methods = jobs.loc[jobs[row_key].astype(str) == key, "method"] if "method" in jobs else pd.Series([], dtype=str)
    method = str(methods.iloc[0]) if len(methods) else key.split("[")[0]
    weight_set = key.partition("[")[2].partition("]")[0]
    seed = SEED_ORDER.index(method) if method in SEED_ORDER else len(SEED_ORDER)
    return (seed, method, weight_set != "official", key)  # a method's official weights first, then the others


def not_run_notes(jobs: pd.DataFrame, row_key: str = "label") -> list[str]:
    """One line per row none of whose jobs ran (``unavailable``/``error``): what is missing and why, from the
    first job's message, so a table's ``n/a`` row explains itself."""
    notes = []
    for key in sorted(jobs[row_key].dropna().astype(str).unique(), key=lambda k: _row_rank(jobs, row_key, k)):
        mine = jobs[jobs[row_key].astype(str) == key]
        if (mine["status"] == "ok").any() or mine["status"].map(lambda s: s in ("oom", "skipped", "timeout")).any():
            continue
        message = str(mine["message"].dropna().iloc[0]) if mine["message"].notna().any() else ""
        notes.append(f"{key}: {cell(mine)} - {message.splitlines()[0] if message else 'no message recorded'}")
    return notes


def build(data: Any) -> pd.DataFrame:
    """The table for a leaderboard's :class:`~evalkit.report.data.ReportData` (``jobs``, ``methods``)."""
    row_key = "entry" if "entry" in data.jobs.columns else "label"
    return speed_table(data.jobs, data.methods, row_key=row_key)


def speed_summary(jobs: pd.DataFrame, timings: pd.DataFrame | None = None, row_key: str = "label") -> pd.DataFrame:
    """One row per (model, resolution): status, jobs, median network/post seconds, their spread over the timed
    repeats (min, quartiles, max, from ``timings``), load time and peak memory. Numbers, for plots and exports."""
    out = []
    for (key, res), group in jobs.groupby([row_key, "resolution"], sort=True):
        ok = group[group["status"] == "ok"]
        row: dict[str, Any] = {
            "model": key,
            "resolution": res,
            "status": cell(group),
            "jobs": len(group),
            "network_s": ok["time_network_s"].median() if len(ok) else None,
            "post_s": ok["time_post_s"].median() if len(ok) and ok["time_post_s"].notna().any() else None,
            "load_s": ok["time_load_s"].median() if "time_load_s" in ok and len(ok) else None,
            # the harness's metrics per output (not part of the method's time)
            "score_s": ok["time_score_s"].median()
            if "time_score_s" in ok and ok["time_score_s"].notna().any()
            else None,
            # a per-style learning phase (InST): median over the styles this cell's jobs learned
            "fit_s": group["time_fit_s"].median()
            if "time_fit_s" in group and group["time_fit_s"].notna().any()
            else None,
            "peak_memory_bytes": group["peak_memory_bytes"].max() if "peak_memory_bytes" in group else None,
        }
        if timings is not None and len(ok):
            reps = timings[timings["job_key"].isin(ok["job_key"])]
            for column, name in (("network_s", "network"), ("post_s", "post")):
                values = reps[column].dropna()
                if len(values):
                    row.update(
                        {
                            f"{name}_min": values.min(),
                            f"{name}_q1": values.quantile(0.25),
                            f"{name}_q3": values.quantile(0.75),
                            f"{name}_max": values.max(),
                            f"{name}_repeats": len(values),
                        }
                    )
        out.append(row)
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    order = {res: i for i, res in enumerate(ordered_resolutions(jobs, None))}
    frame["_order"] = frame["resolution"].map(order)
    return frame.sort_values(["model", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
