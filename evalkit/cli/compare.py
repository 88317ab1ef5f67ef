"""``evalkit compare``: paired statistics between methods on automatic metrics (see evalkit/report/paired.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import Results
from evalkit.errors import EvalkitError

FORMATS = ("table", "md", "tex")


@app.command()
def compare(
    results: Path = Results,
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric (repeatable; default: every metric)."),
    run: list[str] = typer.Option([], "--run", help="Run ids (default: every run of the latest run's protocol)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md (Markdown) or tex (LaTeX booktabs)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise significance level (Holm) per metric."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the md/tex text to this file, not stdout."),
) -> None:
    """Is method A better than B on the same pairs? Mean paired difference (bootstrap CI), Wilcoxon, Holm."""
    from evalkit.report.data import load_report_data
    from evalkit.report.paired import HEADER, paired_tables, rows, to_latex, to_markdown

    if fmt not in FORMATS:
        raise EvalkitError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if not 0 < alpha < 1:
        raise EvalkitError(f"--alpha must lie in (0, 1), got {alpha}")
    data = load_report_data(results, run or None)
    known = sorted(set(data.metrics["metric"])) if len(data.metrics) else []
    unknown = [m for m in metric if m not in known]
    if unknown:
        raise EvalkitError(f"no values of metric '{unknown[0]}' in {results}: recorded metrics are {', '.join(known)}")
    tables = paired_tables(data.metrics, metric or None, alpha=alpha)
    if not tables:
        raise EvalkitError(f"{results} has fewer than two methods with values of {', '.join(metric or known)}")
    if fmt in ("md", "tex"):
        text = to_markdown(tables) if fmt == "md" else to_latex(tables)
        if out is not None:
            out.write_text(text)
            typer.echo(f"wrote {out}")
        else:
            typer.echo(text, nl=False)
        return
    console = Console()
    for t in tables:
        grid = Table(title=f"{t.metric} ({t.direction} is better)" if t.direction != "unknown" else t.metric)
        for h in HEADER:
            grid.add_column(h)
        for r in rows(t):
            grid.add_row(*[escape(c) for c in r])
        console.print(grid)
        console.print(f"tied for best: {escape(', '.join(t.tied_for_best) or '-')}")
