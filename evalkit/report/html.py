"""Render the self-contained HTML leaderboard from :class:`~evalkit.report.data.ReportData`.

The page is one file with inline CSS, JS and SVG (no CDN, no network), plus JPEG thumbnails and the output PNGs it
links to under the results root. Templates live in ``evalkit/templates`` with autoescaping on, so method names,
parameters, paths and messages can never inject markup.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from evalkit import __version__
from evalkit.assets import AssetStore
from evalkit.environment import describe
from evalkit.imaging import Resolution
from evalkit.report.data import ReportData
from evalkit.report.figures import write_figures
from evalkit.report.formatting import fmt_num, fmt_pm
from evalkit.report.paired import PairedTable, paired_tables
from evalkit.report.paired import rows as paired_rows
from evalkit.report.plots import Plot, color_for, make_plot, pareto_front
from evalkit.report.quality import QualityTable, build_quality_table, lookup_info
from evalkit.report.speed import SpeedSection, speed_section
from evalkit.report.thumbs import Thumb, ThumbMaker
from evalkit.weights import weight_label


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("evalkit", "templates"),
        autoescape=select_autoescape(["html", "j2", "svg"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["pm"] = fmt_pm
    env.filters["sortval"] = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))
    return env


# -- image grid ----------------------------------------------------------------------------------------------------
@dataclass
class GridCell:
    thumb: Thumb | None
    status: str
    message: str = ""


@dataclass
class GridRow:
    pair_id: str
    content: GridCell
    style: GridCell
    outputs: list[GridCell]


@dataclass
class Grid:
    entries: list[str]
    resolution: str | None
    rows: list[GridRow] = field(default_factory=list)
    note: str = ""


def build_grid(data: ReportData, thumbs: ThumbMaker, store: AssetStore) -> Grid:
    """One row per pair: content | style | each entry's output (seed 0 at the grid's resolution); the inputs are
    located through ``store`` (never downloaded)."""
    jobs = data.jobs
    entries = data.entries
    if jobs.empty:
        return Grid(entries, None, note="no jobs")
    ok = jobs[jobs["status"] == "ok"]
    counts = ok["resolution"].value_counts() if len(ok) else jobs["resolution"].value_counts()
    resolution = str(counts.index[0])
    protocol = data.spec
    inputs: dict[str, GridCell] = {}
    problems: list[str] = []

    def input_cell(image_id: str) -> GridCell:
        if image_id in inputs:
            return inputs[image_id]
        cell = GridCell(None, "missing", f"image '{image_id}' not found in the cache, mirror or packages")
        if protocol is not None and image_id in protocol.images:
            try:
                located = store.locate(protocol.images[image_id])
                if located is not None:
                    cell = GridCell(thumbs.input_thumb(located.path), "ok", image_id)
            except Exception as exc:  # noqa: BLE001 - a missing input must not stop the page
                cell = GridCell(None, "error", f"{type(exc).__name__}: {exc}")
        elif protocol is None:
            cell.message = f"protocol '{data.protocol}' not found, so its input images cannot be located"
        if cell.thumb is None:
            problems.append(cell.message)
        inputs[image_id] = cell
        return cell

    grid = Grid(entries, resolution)
    at_res = jobs[jobs["resolution"] == resolution]
    pair_order = [p.id for p in protocol.pairs] if protocol is not None else []
    pair_ids = [p for p in pair_order if p in set(at_res["pair_id"])]
    pair_ids += sorted(set(at_res["pair_id"]) - set(pair_ids))
    for pair_id in pair_ids:
        pjobs = at_res[at_res["pair_id"] == pair_id].sort_values("seed")
        first = pjobs.iloc[0]
        outputs = []
        for entry in entries:
            ejobs = pjobs[pjobs["entry"] == entry]
            good = ejobs[(ejobs["status"] == "ok") & ejobs["output_path"].notna()]
            if len(good):
                path = data.root / good.iloc[0]["output_path"]
                if path.is_file():
                    outputs.append(GridCell(thumbs.thumb(path), "ok", f"{entry} · seed {good.iloc[0]['seed']}"))
                else:
                    outputs.append(GridCell(None, "missing", f"output file {path} is missing"))
            elif len(ejobs):
                outputs.append(GridCell(None, str(ejobs.iloc[0]["status"]), str(ejobs.iloc[0]["message"] or "")))
            else:
                outputs.append(GridCell(None, "absent", "no job for this pair"))
        grid.rows.append(GridRow(pair_id, input_cell(str(first["content"])), input_cell(str(first["style"])), outputs))
    if problems:
        grid.note = f"{len(problems)} input image(s) unavailable: {problems[0]}"
    return grid


# -- plots ---------------------------------------------------------------------------------------------------------
def _megapixels(res: str, group: pd.DataFrame) -> float | None:
    sizes = group.dropna(subset=["width", "height"])
    if len(sizes):
        return float((sizes["width"] * sizes["height"]).median()) / 1e6
    pixels = Resolution.parse(res).pixels
    return pixels / 1e6 if pixels else None


def time_plot(data: ReportData, colors: dict[str, str]) -> Plot | None:
    """Median ``network + post`` seconds per entry and resolution (ok jobs only), against megapixels."""
    jobs = data.jobs[(data.jobs["status"] == "ok") & data.jobs["time_network_s"].notna()].copy()
    if jobs.empty:
        return None
    jobs["total"] = jobs["time_network_s"] + jobs["time_post_s"].fillna(0.0)
    series: dict[str, list[tuple[float, float, str]]] = {}
    for (entry, res), group in jobs.groupby(["entry", "resolution"]):
        mp = _megapixels(res, group)
        if mp is None:
            continue
        seconds = float(group["total"].median())
        series.setdefault(entry, []).append(
            (mp, seconds, f"{entry} @ {res}: {fmt_num(seconds)} s (median of {len(group)} jobs)")
        )
    devices = ", ".join(sorted(set(jobs["device"].dropna().astype(str)))) or "unknown device"
    return make_plot(
        "Time vs resolution",
        "megapixels",
        "seconds (network + post, median)",
        series,
        colors,
        lines=True,
        note=f"measured on {devices}",
    )


TRADEOFFS: tuple[tuple[str, str], ...] = (("content_loss", "style_loss"), ("ssim", "style_loss"))


def _axis_label(metric: str, info: Any) -> str:
    name = metric.replace("_", " ")
    if info is None:
        return f"{name} (mean over pairs)"
    return f"{name} {'↑ higher' if info.higher_is_better else '↓ lower'} is better"


def series_name(jobs: pd.DataFrame, entry: str) -> str:
    """The curve an entry belongs to: its method and weight set (sweep variants of one model share a curve)."""
    row = jobs[jobs["entry"] == entry].iloc[0]
    base = weight_label(str(row["method"]), row["weight_set"] if isinstance(row["weight_set"], str) else None)
    precision = str(row.get("precision") or "fp32")
    return base if precision == "fp32" else f"{base} {precision}"


def tradeoff_plot(
    data: ReportData,
    table: QualityTable,
    colors: dict[str, str],
    x_metric: str = "content_loss",
    y_metric: str = "style_loss",
) -> Plot | None:
    """Mean ``x_metric`` vs mean ``y_metric`` per entry; each model a curve through its sweep variants, and the
    Pareto frontier over all entries (directions from the metrics' metadata) dashed."""
    names = {c.metric for c in table.columns}
    if not {x_metric, y_metric} <= names or data.jobs.empty:
        return None
    x_info, y_info = lookup_info(x_metric), lookup_info(y_metric)
    series: dict[str, list[tuple[float, float, str]]] = {}
    points: list[tuple[float, float]] = []
    for row in table.rows:
        c, s = row.cells[x_metric], row.cells[y_metric]
        if c.available and s.available and c.mean is not None and s.mean is not None:
            text = f"{row.entry}: {x_metric} {fmt_num(c.mean)}, {y_metric} {fmt_num(s.mean)}"
            series.setdefault(series_name(data.jobs, row.entry), []).append((c.mean, s.mean, text))
            points.append((c.mean, s.mean))
    frontier = (
        pareto_front(points, x_info.higher_is_better, y_info.higher_is_better)
        if x_info is not None and y_info is not None and len(points) > 1
        else []
    )
    curve_colors = {name: colors.get(name, color_for(i)) for i, name in enumerate(series)}
    return make_plot(
        f"{x_metric.replace('_', ' ')} vs {y_metric.replace('_', ' ')}",
        _axis_label(x_metric, x_info),
        _axis_label(y_metric, y_info),
        series,
        curve_colors,
        lines=any(len(v) > 1 for v in series.values()),
        note="each model a curve through its sweep variants" if any(len(v) > 1 for v in series.values()) else "",
        frontier=frontier,
    )


def tradeoff_plots(data: ReportData, table: QualityTable, colors: dict[str, str]) -> list[Plot]:
    return [p for x, y in TRADEOFFS if (p := tradeoff_plot(data, table, colors, x, y)) is not None]


# -- environment ---------------------------------------------------------------------------------------------------
def environment_info(data: ReportData) -> dict[str, Any]:
    envs = [r["environment"] for r in data.runs if isinstance(r.get("environment"), dict)]
    env = envs[-1] if envs else {}
    weight_rows = []
    for entry in data.entries:
        ejobs = data.jobs[data.jobs["entry"] == entry]
        label = str(ejobs["label"].iloc[0])
        method = data.methods.get(label, {})
        digests = method.get("weight_digests") or {}
        if not digests:
            try:
                digests = json.loads(ejobs["spec"].iloc[0]).get("weight_digests") or {}
            except (KeyError, TypeError, ValueError):
                digests = {}
        params = json.loads(ejobs["params"].iloc[0]) if ejobs["params"].iloc[0] else {}
        weight_rows.append(
            {
                "entry": entry,
                "method": str(ejobs["method"].iloc[0]),
                "weight_set": ejobs["weight_set"].iloc[0] if ejobs["weight_set"].notna().iloc[0] else "",
                "params": params,
                "digests": sorted(digests.items()),
                "parameters": method.get("parameters"),
                "layers": method.get("layers"),
                "version": method.get("version"),
            }
        )
    # the device the *jobs* ran on (each job's own environment: a Ray or GPU run's workers, not the driver)
    job_envs = list(data.environments.values()) or envs
    devices = sorted({str(e.get("device")) for e in job_envs if e.get("device")}) or sorted(
        {str(r.get("device")) for r in data.runs if r.get("device")}
    )
    hardware: list[str] = []
    for e in job_envs:
        text = e.get("gpu_model") or e.get("cpu_model")
        if text and text not in hardware:
            hardware.append(text)
    scored = data.jobs["time_score_s"].dropna() if "time_score_s" in data.jobs else pd.Series(dtype=float)
    return {
        "placement": placement(job_envs),
        "harness_time": float(scored.median()) if len(scored) else None,
        "devices": devices,
        "hardware": hardware,
        "env": env,
        "ran_on": sorted({describe(e) for e in job_envs}),
        "packages": sorted((env.get("packages") or {}).items()),
        "weights": weight_rows,
    }


def placement(job_envs: list[dict[str, Any]]) -> list[str]:
    """Where the jobs ran on a cluster, one line per node: ``vm: Slurm jobs 12_0, 12_1 (partition gpu)`` or
    ``10.0.0.2: Ray``; empty for jobs that ran in the driver's process."""
    nodes: dict[str, dict[str, set[str]]] = {}
    for env in job_envs:
        node = env.get("node") or env.get("node_ip")
        if not node:
            continue
        entry = nodes.setdefault(str(node), {"slurm": set(), "partition": set(), "ray": set()})
        if env.get("slurm_job_id"):
            entry["slurm"].add(str(env["slurm_job_id"]))
        if env.get("slurm_partition"):
            entry["partition"].add(str(env["slurm_partition"]))
        if env.get("ray_version"):
            entry["ray"].add(str(env["ray_version"]))
    lines = []
    for node, entry in sorted(nodes.items()):
        parts = []
        if entry["slurm"]:
            ids = sorted(entry["slurm"], key=lambda t: [int(x) if x.isdigit() else x for x in t.split("_")])
            shown = ", ".join(ids[:12]) + (f" and {len(ids) - 12} more" if len(ids) > 12 else "")
            partitions = f" (partition {', '.join(sorted(entry['partition']))})" if entry["partition"] else ""
            parts.append(f"Slurm jobs {shown}{partitions}")
        if entry["ray"]:
            parts.append(f"Ray {', '.join(sorted(entry['ray']))}")
        lines.append(f"{node}: {'; '.join(parts) or 'cluster worker'}")
    return lines


# -- human study ---------------------------------------------------------------------------------------------------
def preference_columns(data: ReportData) -> list[dict[str, Any]]:
    """One column per human study, by title: ``{study (its title), study_id, best, by_label: {label: row}}``.

    A study's title is its name; ``NAME (legacy)`` for rows analysed before evalkit recorded which runs a study was
    built from (shown with every run selection, see :mod:`evalkit.store.studies`); ``NAME · ID`` (a short study id)
    where two studies shown share a name."""
    if data.preferences is None:
        return []
    titles = study_titles(data)
    out = []
    for study_id, group in data.preferences.groupby("study_id", sort=False):
        out.append(
            {
                "study": titles[str(study_id)],
                "study_id": str(study_id),
                "best": group["score"].max(),
                "by_label": {str(r["label"]): r for r in study_rows(group, titles)},
            }
        )
    return sorted(out, key=lambda c: c["study"])


def study_titles(data: ReportData) -> dict[str, str]:
    """``study id -> title`` of every study in the report's preference and agreement rows (see above)."""
    studies: dict[str, tuple[str, bool]] = {}
    for frame in (data.preferences, data.agreement):
        if frame is not None:
            for r in frame.to_dict("records"):
                studies[str(r["study_id"])] = (str(r["study"]), bool(r.get("legacy")))
    titles = {}
    for study_id, (name, legacy) in studies.items():
        namesakes = [s for s, (n, old) in studies.items() if n == name and not old]
        width = 6
        while len({s[:width] for s in namesakes}) < len(namesakes):
            width += 2
        if legacy:
            titles[study_id] = f"{name} (legacy)"
        else:
            titles[study_id] = f"{name} · {study_id[:width]}" if len(namesakes) > 1 else name
    return titles


def study_rows(frame: pd.DataFrame | None, titles: dict[str, str]) -> list[dict[str, Any]]:
    """A frame's records with ``study`` replaced by the study's title (its name stays in ``study_name``)."""
    if frame is None:
        return []
    return [
        {**r, "study_name": r["study"], "study": titles.get(str(r["study_id"]), str(r["study"]))}
        for r in frame.to_dict("records")
    ]


def mark_tied(table: QualityTable, paired: list[PairedTable], set_values: pd.DataFrame | None = None) -> None:
    """Flag the cells of entries in each metric's tied-for-best group (paired tests, Holm; see report/paired.py;
    set-level metrics: paired bootstrap intervals, report/set_intervals.py)."""
    from evalkit.report.set_intervals import tied_for_best

    groups = {t.metric: set(t.tied_for_best) for t in paired}
    for col in table.columns:
        if set_values is not None and col.info is not None and col.info.level == "set":
            groups[col.metric] = tied_for_best(set_values, col.metric, col.info.higher_is_better)
    for row in table.rows:
        for metric, cell in row.cells.items():
            cell.tied = cell.available and row.entry in groups.get(metric, set())


# -- page ----------------------------------------------------------------------------------------------------------
def render_leaderboard(
    data: ReportData,
    out: Path,
    exports: list[tuple[str, str]] | None = None,
    title: str | None = None,
    store: AssetStore | None = None,
) -> Path:
    """Write the page to ``out`` (thumbnails under ``data.root / 'thumbs'``) and return its path; input images are
    located with ``store`` (default: the ``EVALKIT_*`` environment's)."""
    store = store if store is not None else AssetStore.from_env()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    protocol = data.spec
    preferred = list(protocol.metrics) if protocol is not None else None
    table = build_quality_table(
        data.jobs, data.metrics, preferred, set_values=data.set_values, imported=data.imported_entries
    )
    paired = paired_tables(data.metrics, [c.metric for c in table.columns]) if len(data.metrics) else []
    mark_tied(table, paired, data.set_values)
    colors = {entry: color_for(i) for i, entry in enumerate(data.entries)}
    thumbs = ThumbMaker(data.root, out)
    speed: SpeedSection | None = speed_section(data)
    plots = [p for p in (time_plot(data, colors),) if p is not None] + tradeoff_plots(data, table, colors)
    eval_sizes = sorted(set(data.metrics["eval_size"])) if len(data.metrics) else []
    context = {
        "title": title or f"evalkit leaderboard · {data.protocol}",
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "protocol": data.protocol,
        "protocol_obj": protocol,
        "protocol_current": protocol is not None and protocol.sha256 == data.runs[0].get("protocol_sha256"),
        "runs": data.runs,
        "table": table,
        "prefs": preference_columns(data),
        "agreement": study_rows(data.agreement, study_titles(data)),
        "preferences": study_rows(data.preferences, study_titles(data)),
        "speed": speed,
        "grid": build_grid(data, thumbs, store),
        "plots": plots,
        "paired": paired,
        "paired_rows": {t.metric: paired_rows(t) for t in paired},
        "colors": colors,
        "environment": environment_info(data),
        "exports": exports or [],
        "eval_sizes": eval_sizes,
    }
    env = environment()
    figures = write_figures(plots, out.parent / "figures", env)
    context["figures"] = [f.relative_to(out.parent).as_posix() for f in figures]
    html = env.get_template("leaderboard.html.j2").render(**context)
    tmp = out.with_suffix(".html.part")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
