"""``evalkit leaderboard``: the HTML leaderboard page, or the same quality and speed tables as Markdown / LaTeX."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from evalkit.cli import app
from evalkit.cli.common import PROTOCOL_HELP, RUN_HELP, DataMirror, Home, Results, WeightsMirror, asset_store
from evalkit.errors import EvalkitError

FORMATS = ("html", "md", "tex")


@app.command()
def leaderboard(
    results: Path = Results,
    run: list[str] = typer.Option([], "--run", help=RUN_HELP),
    protocol: str = typer.Option(None, "--protocol", "-p", help=PROTOCOL_HELP),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output file (default: <results>/leaderboard.<format>; '-' prints md/tex to stdout)."
    ),
    fmt: str = typer.Option("html", "--format", "-f", help="html (the page), md or tex (paper tables)."),
    exports: bool = typer.Option(
        True,
        "--exports/--no-exports",
        help="Write CSV (and Parquet when pyarrow is installed) exports and link them (html).",
    ),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Build a leaderboard from a results database: a self-contained HTML page or Markdown / LaTeX tables."""
    from evalkit.report.data import load_report_data

    if fmt not in FORMATS:
        raise EvalkitError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    data = load_report_data(results, run or None, protocol)
    for note in data.notes:
        typer.echo(f"note: {note}", err=True)
    if fmt in ("md", "tex"):
        from evalkit.report.text import render_tables

        text = render_tables(data, fmt)
        if out is not None and str(out) == "-":
            typer.echo(text, nl=False)
            return
        path = out or results / f"leaderboard.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        typer.echo(f"{fmt} tables: {path}")
        return
    from evalkit.report.html import render_leaderboard

    path = out or results / "leaderboard.html"
    links = _write_exports(results, data.run_ids, path) if exports else []
    render_leaderboard(data, path, exports=links, store=asset_store(home, weights_mirror, data_mirror))
    typer.echo(f"leaderboard: {path.resolve()}")


def _write_exports(results: Path, run_ids: list[str], page: Path) -> list[tuple[str, str]]:
    """CSV (and Parquet when possible) exports via ``evalkit export``, as (name, href relative to the page)."""
    from evalkit.cli.export import export

    dest = results / "export"
    export(results=results, fmt="csv", run=run_ids, protocol=None, out=dest)
    try:
        export(results=results, fmt="parquet", run=run_ids, protocol=None, out=dest)
    except EvalkitError as exc:
        typer.echo(f"note: {exc}; linking CSV exports only", err=True)
    base = page.resolve().parent
    return [
        (f.name, Path(os.path.relpath(f.resolve(), base)).as_posix())
        for f in sorted(dest.iterdir())
        if f.suffix in (".csv", ".parquet")
    ]
