"""``evalkit export``: CSV / Parquet tables derived from the results database."""

from __future__ import annotations

from pathlib import Path

import typer

from evalkit.cli import app
from evalkit.cli.common import Results
from evalkit.errors import EvalkitError
from evalkit.store import ResultsStore


@app.command()
def export(
    results: Path = Results,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    run: list[str] = typer.Option([], "--run", help="Only these run ids (repeatable; default: all)."),
    out: Path = typer.Option(
        None, "--out", "-o", "--dest", help="Folder the tables are written to (default: <results>/export)."
    ),
) -> None:
    """Write jobs, metrics (long), metrics_wide and timings (one row per timed repeat) as CSV or Parquet."""
    if fmt not in ("csv", "parquet"):
        raise EvalkitError(f"unknown format '{fmt}': use csv or parquet")
    with ResultsStore.open_reader(results, f"evalkit run --results {results}") as store:
        jobs = store.jobs_frame(run or None).drop(columns=["spec"])
        metrics = store.metrics_frame(run or None)
        timings = store.timings_frame(run or None)
    dest = out or results / "export"
    dest.mkdir(parents=True, exist_ok=True)
    wide = (
        metrics.pivot_table(
            index=["job_key", "label", "pair_id", "resolution", "seed"],
            columns="metric",
            values="value",
            aggfunc="first",
        ).reset_index()
        if len(metrics)
        else metrics
    )
    tables = {"jobs": jobs, "metrics": metrics, "metrics_wide": wide, "timings": timings}
    for name, frame in tables.items():
        path = dest / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            try:
                frame.to_parquet(path, index=False)
            except ImportError as exc:
                raise EvalkitError("Parquet export needs pyarrow: pip install 'evalkit[parquet]'") from exc
        typer.echo(f"{name}: {path} ({len(frame)} rows)")
