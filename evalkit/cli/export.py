"""``evalkit export``: CSV / Parquet tables derived from the results database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from evalkit.cli import app
from evalkit.cli.common import PROTOCOL_HELP, RUN_HELP, Results
from evalkit.errors import EvalkitError


@app.command()
def export(
    results: Path = Results,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    run: list[str] = typer.Option([], "--run", help=RUN_HELP),
    protocol: str | None = typer.Option(None, "--protocol", "-p", help=PROTOCOL_HELP),
    out: Path = typer.Option(
        None, "--out", "-o", "--dest", help="Folder the tables are written to (default: <results>/export)."
    ),
) -> None:
    """Write jobs, metrics (long), metrics_wide, set_metrics (one value per row) and timings (one row per timed
    repeat) of the selected runs (one protocol) as CSV or Parquet."""
    from evalkit.report.data import load_report_data

    if fmt not in ("csv", "parquet"):
        raise EvalkitError(f"unknown format '{fmt}': use csv or parquet")
    data = load_report_data(results, run or None, protocol)
    jobs = data.jobs.drop(columns=["spec", "entry"])
    metrics = data.metrics.drop(columns=["entry"])
    timings = data.timings if data.timings is not None else pd.DataFrame()
    sets = data.set_values if data.set_values is not None else pd.DataFrame()
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
    tables = {"jobs": jobs, "metrics": metrics, "metrics_wide": wide, "set_metrics": sets, "timings": timings}
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
