"""``evalkit speed``: print the PhotoWCT2-style speed table (params, layers, seconds or OOM per resolution)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import Results
from evalkit.environment import describe
from evalkit.errors import EvalkitError

FORMATS = ("table", "md", "csv")


@app.command()
def speed(
    results: Path = Results,
    run: list[str] = typer.Option(
        [], "--run", help="Run id (repeatable; 'all': every run in --results; default: the latest run)."
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md (Markdown) or csv."),
    details: bool = typer.Option(False, "--details", help="Also print medians, spread and peak memory per cell."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the table (md/csv) to this file instead of stdout."),
) -> None:
    """Seconds per image (network+post, or OOM) per model and resolution, from a results database."""
    from evalkit.report.formatting import markdown_table, md_escape
    from evalkit.report.speed import frame_to_rows
    from evalkit.report.speed_table import speed_summary, speed_table
    from evalkit.store import ResultsStore

    if fmt not in FORMATS:
        raise EvalkitError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    with ResultsStore.open_reader(results, f"evalkit run --protocol speed --results {results}") as store:
        known = {r["run_id"]: dict(r) for r in store.runs()}
        latest = store.latest_run()
        run_ids = list(known) if run == ["all"] else (list(run) or ([latest] if latest else []))
        missing = [r for r in run_ids if r not in known]
        if not run_ids or missing:
            raise EvalkitError(
                f"unknown run id(s) {', '.join(missing) or '(none)'} in {store.path}: known runs are "
                f"{', '.join(known) or 'none'}"
            )
        jobs = store.jobs_frame(run_ids)
        timings = store.timings_frame(run_ids)
        methods = store.methods_table()
        protocol_notes = [note for r in run_ids if (note := store.stored_protocol(r)[1])]
        environments = list(store.job_environments(run_ids).values())
    if jobs.empty:
        raise EvalkitError(f"run(s) {', '.join(run_ids)} in {results} have no jobs")
    from evalkit.report.data import add_entries

    jobs["entry"] = add_entries(jobs)
    table = speed_table(jobs, methods, row_key="entry")
    if fmt == "csv":
        _emit(table.to_csv(index=False), out)
        return
    devices = sorted({describe(e) for e in environments}) or sorted(
        {describe(known[r].get("environment") and json.loads(known[r]["environment"]) or {}) for r in run_ids}
    )
    title = f"Seconds per image, network+post (median of timed repeats); runs {', '.join(run_ids)}"
    header, cells = frame_to_rows(table)
    if fmt == "md":
        lines = [
            title,
            "",
            *markdown_table([md_escape(h) for h in header], [[md_escape(c) for c in row] for row in cells]),
        ]
        lines += ["", *[f"measured on: {d}" for d in devices]]
        _emit("\n".join(lines) + "\n", out)
    else:
        console = Console(width=max(Console().width, 140))  # the paper's table is wide; never elide cells
        rich_table = Table(title=title)
        for i, column in enumerate(header):
            rich_table.add_column(column, justify="left" if i == 0 else "right")
        for row in cells:
            rich_table.add_row(*[escape(c) for c in row])  # keeps wct[cd16x] intact
        console.print(rich_table)
        for d in devices:
            console.print(f"measured on: {escape(d)}")
        if len(devices) > 1:
            console.print(
                "[yellow]warning:[/yellow] these runs were measured on different devices; compare timings "
                "only within one device"
            )
    if details:
        summary = speed_summary(jobs, timings if len(timings) else None, row_key="entry")
        typer.echo(summary.to_string(index=False))
    for note in dict.fromkeys(protocol_notes):
        typer.echo(f"note: {note}", err=True)
    if (jobs["status"] == "skipped").any():
        typer.echo(
            "note: 'OOM' includes resolutions skipped after an OOM at a smaller one (assumes memory grows "
            "with resolution)"
        )


def _emit(text: str, out: Path | None) -> None:
    """Print ``text``, or write it to ``out`` (the file this command writes)."""
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"speed table: {out}")
