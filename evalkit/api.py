"""The Python API, for notebooks and scripts: the same runs, results roots and numbers as the command line.

    import evalkit

    def stylize(content, style, strength: float = 1.0):   # tensors (1, 3, H, W) in [0, 1]
        shift = style.mean((2, 3), keepdim=True) - content.mean((2, 3), keepdim=True)
        return (content + strength * shift).clamp(0, 1)

    result = evalkit.evaluate(methods=["reinhard", stylize], protocol="quick", metrics=["ssim"], results="results")
    result.rows        # one row per method variant and metric: mean, 95 % interval, n (set-level: the value)
    result.jobs        # one row per job and metric (long form)
    evalkit.score(["out.png"], reference="content.png", metrics=["ssim", "lpips"])

``evaluate`` accepts method names (``adain[cd16x]``), ``./file.py:NAME`` selectors, adapter classes and plain
functions ``stylize(content, style, **params)``; it writes the results root ``evalkit leaderboard``, ``compare`` and
``study build`` read. ``evalkit run`` and ``evalkit import`` are this module's functions behind a command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from evalkit.adapter import MethodAdapter
from evalkit.assets import AssetSettings, AssetStore
from evalkit.errors import EvalkitError
from evalkit.results import MetricValue
from evalkit.runner import RunRequest, RunSummary, run_benchmark

MethodLike = str | type[MethodAdapter] | Callable[..., Any]


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the run and its results as pandas frames."""

    summary: RunSummary
    jobs: pd.DataFrame  # per job and metric: label, entry, pair_id, resolution, seed, status, metric, value, ...
    rows: pd.DataFrame  # per row (entry) and metric: mean, lower, upper, n, level ("image" | "set"), reason
    root: Path

    @property
    def run_id(self) -> str:
        return self.summary.run_id


def evaluate(
    methods: Sequence[MethodLike],
    protocol: str = "quick",
    metrics: list[str] | None = None,
    results: str | Path = "results",
    *,
    resolutions: list[str] | None = None,
    device: str = "cpu",
    params: dict[str, dict[str, Any]] | None = None,
    sweep: dict[str, dict[str, list[Any]]] | None = None,
    seeds: int | None = None,
    precision: str = "fp32",
    executor: str | None = None,
    executor_options: dict[str, Any] | None = None,
    assets: AssetSettings | None = None,
    progress: bool = False,
    console: Console | None = None,
) -> Evaluation:
    """Run ``methods`` on ``protocol`` into the results root ``results`` (resuming what is there) and return its
    frames. Failures of single jobs are rows with a status, as on the command line; bad arguments raise
    :class:`~evalkit.errors.EvalkitError` with one line."""
    request = RunRequest(
        protocol=protocol,
        methods=list(methods),
        resolutions=resolutions,
        metrics=metrics,
        device=device,
        out=Path(results),
        seeds=seeds,
        precision=precision,
        params=params or {},
        sweep=sweep or {},
        executor=executor,
        executor_options=executor_options or {},
        assets=assets or AssetSettings.from_env(),
        progress=progress,
        command=f"evalkit.evaluate(protocol={protocol!r})",
    )
    summary = run_benchmark(request, console or Console(stderr=True, quiet=not progress))
    return _evaluation(summary)


def import_outputs(
    folder: str | Path,
    name: str,
    protocol: str = "quick",
    results: str | Path = "results",
    *,
    pattern: str | None = None,
    map_file: str | Path | None = None,
    resolution: str | None = None,
    metrics: list[str] | None = None,
    assets: AssetSettings | None = None,
    progress: bool = False,
    console: Console | None = None,
    command: str = "",
    wait: bool = False,
) -> tuple[Evaluation, Any]:
    """Record a folder of outputs made elsewhere as method ``name`` of ``protocol`` (see :mod:`evalkit.importer`)
    and score them; returns the evaluation and the import plan (missing pairs, unmatched files). A folder with a
    refused file (unreadable, not an image, too small, another aspect ratio) records nothing:
    :class:`~evalkit.importer.ImportRefused` lists them."""
    from evalkit.importer import ImportRefused, plan_import
    from evalkit.protocol import load_protocol

    settings = assets or AssetSettings.from_env()
    proto = load_protocol(protocol)
    found = plan_import(
        Path(folder),
        proto,
        name,
        AssetStore(settings),
        pattern=pattern,
        map_file=Path(map_file) if map_file else None,
        resolution=resolution,
    )
    if found.errors:  # all or nothing: a folder with a refused file records nothing (fix it, import again)
        raise ImportRefused(found.errors)
    if len(found.missing) == len(proto.pairs):
        raise EvalkitError(f"no file in {folder} matches a pair of protocol '{proto.name}': check --pattern or --map")
    request = RunRequest(
        protocol=proto,
        metrics=metrics,
        out=Path(results),
        assets=settings,
        progress=progress,
        command=command or f"evalkit import {folder} --as {name}",
        wait=wait,
    )
    summary = run_benchmark(request, console or Console(stderr=True, quiet=not progress), found.plan, found.files)
    return _evaluation(summary), found


def _evaluation(summary: RunSummary) -> Evaluation:
    from evalkit.report.data import load_report_data
    from evalkit.report.quality import build_quality_table

    data = load_report_data(summary.root, [summary.run_id])
    jobs = data.jobs.drop(columns=["spec"]).merge(
        data.metrics[["job_key", "metric", "eval_size", "value", "status", "message"]].rename(
            columns={"status": "metric_status", "message": "metric_message"}
        ),
        on="job_key",
        how="left",
    )
    table = build_quality_table(data.jobs, data.metrics, None, set_values=data.set_values)
    set_names = set(data.set_values["metric"]) if data.set_values is not None else set()
    rows = pd.DataFrame(
        [
            {
                "entry": row.entry,
                "label": row.label,
                "metric": metric,
                "level": "set" if metric in set_names else "image",
                "mean": cell.mean,
                "lower": cell.lower,
                "upper": cell.upper,
                "n": cell.n,
                "jobs_ok": row.jobs_ok,
                "jobs_total": row.jobs_total,
                "reason": cell.reason,
            }
            for row in table.rows
            for metric, cell in row.cells.items()
        ]
    )
    return Evaluation(summary, jobs, rows, summary.root)


def score(
    images: Iterable[str | Path] | str | Path,
    reference: str | Path | None = None,
    style: str | Path | None = None,
    metrics: list[str] | None = None,
    eval_size: int | None = None,
    device: str = "cpu",
    assets: AssetSettings | None = None,
) -> pd.DataFrame:
    """Image-level metrics of image files (one row per image and metric), as ``evalkit score`` computes them."""
    from evalkit.metrics import metric_names
    from evalkit.scoring import score_images

    paths = [Path(images)] if isinstance(images, str | Path) else [Path(p) for p in images]
    store = AssetStore(assets or AssetSettings.from_env())
    names = metrics or metric_names()
    records = []
    for path in paths:
        values: list[MetricValue] = score_images(
            path,
            names,
            store,
            Path(reference) if reference else None,
            Path(style) if style else None,
            eval_size,
            device,
        )
        records += [
            {"image": str(path), "metric": v.name, "value": v.value, "status": v.status, "message": v.message}
            for v in values
        ]
    return pd.DataFrame(records)


__all__ = ["Evaluation", "evaluate", "import_outputs", "score"]
