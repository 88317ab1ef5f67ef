"""``evalkit compare``: paired statistics between methods on automatic metrics (see evalkit/report/paired.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import PROTOCOL_HELP, RUN_HELP, Results
from evalkit.errors import EvalkitError

FORMATS = ("table", "md", "tex")


@app.command()
def compare(
    results: Path = Results,
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric (repeatable; default: every metric)."),
    run: list[str] = typer.Option([], "--run", help=RUN_HELP),
    protocol: str | None = typer.Option(None, "--protocol", "-p", help=PROTOCOL_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md (Markdown) or tex (LaTeX booktabs)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise significance level (Holm) per metric."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the md/tex text to this file, not stdout."),
) -> None:
    """Is method A better than B on the same pairs? Mean paired difference (bootstrap CI), Wilcoxon, Holm."""
    from evalkit.report.data import load_report_data
    from evalkit.report.paired import paired_tables

    if fmt not in FORMATS:
        raise EvalkitError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if not 0 < alpha < 1:
        raise EvalkitError(f"--alpha must lie in (0, 1), got {alpha}")
    data = load_report_data(results, run or None, protocol)
    per_image = sorted(set(data.metrics["metric"])) if len(data.metrics) else []
    set_level = sorted(set(data.set_values["metric"])) if data.set_values is not None else []
    known = per_image + set_level
    unknown = [m for m in metric if m not in known]
    if unknown:
        raise EvalkitError(f"no values of metric '{unknown[0]}' in {results}: recorded metrics are {', '.join(known)}")
    wanted_sets = [m for m in set_level if not metric or m in metric]
    wanted_images = [m for m in per_image if not metric or m in metric]
    tables = paired_tables(data.metrics, wanted_images, alpha=alpha) if wanted_images else []
    if not tables and not wanted_sets:
        raise EvalkitError(f"{results} has fewer than two methods with values of {', '.join(metric or known)}")
    if wanted_sets:
        _print_set_values(data, wanted_sets, fmt, out)
    if tables:
        _print_paired(tables, fmt, out)


def _print_paired(tables: list, fmt: str, out: Path | None) -> None:
    from evalkit.report.paired import HEADER, rows, to_latex, to_markdown

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


def _print_set_values(data, metrics: list[str], fmt: str, out: Path | None) -> None:
    """Set-level metrics: each row's value with its bootstrap interval, then paired bootstrap differences between
    rows over the same pairs (on stderr for md/tex, so the paired tables on stdout or --out stay a clean document)."""
    from evalkit.report.quality import lookup_info
    from evalkit.report.set_intervals import compare_rows, tied_for_best

    frame = data.set_values[data.set_values["metric"].isin(metrics)]
    console = Console(stderr=fmt != "table" or out is not None)
    for name in metrics:
        info = lookup_info(name)
        direction = f" ({'higher' if info.higher_is_better else 'lower'} is better)" if info else ""
        grid = Table(title=f"{name}{direction}: set-level, one value per row, 95 % bootstrap interval over pairs")
        for h in ("method", "resolution", "value", "95 % CI", "n", "note"):
            grid.add_column(h)
        for _, r in frame[frame["metric"] == name].iterrows():
            shown = f"{r['value']:.6g}" if r["status"] == "ok" else f"{r['status']}"
            ci = f"[{r['lower']:.4g}, {r['upper']:.4g}]" if r["status"] == "ok" and r["lower"] == r["lower"] else "–"
            note = escape(str(r["message"] or ""))
            grid.add_row(escape(str(r["entry"])), str(r["resolution"]), shown, ci, str(r["n"]), note)
        console.print(grid)
        pairs = Table(title=f"{name}: paired bootstrap differences a − b (same resampled pairs)")
        for h in ("a", "b", "a − b", "95 % CI", "verdict"):
            pairs.add_column(h)
        for c in compare_rows(frame, name):
            ci = f"[{c.lower:.4g}, {c.upper:.4g}]" if c.lower is not None else "– (different pairs)"
            better = (
                (c.a if (c.mean_diff > 0) == bool(info and info.higher_is_better) else c.b) if c.significant else ""
            )
            pairs.add_row(escape(c.a), escape(c.b), f"{c.mean_diff:.4g}", ci, f"{better} better" if better else "–")
        console.print(pairs)
        if info is not None:
            console.print(
                f"tied for best: {escape(', '.join(sorted(tied_for_best(frame, name, info.higher_is_better))))}"
            )
