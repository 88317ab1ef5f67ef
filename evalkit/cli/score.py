"""``evalkit score``: evalkit's metrics on arbitrary image files (calibration, spot checks, other outputs).

The images are scored at their own resolution unless ``--eval-size`` asks for the protocol rule (short side N,
Lanczos), so that published reference values (e.g. IQA calibration sets) can be reproduced exactly. A metric
that needs an image that was not given (``--ref`` for full-reference metrics, ``--style`` for the style loss)
or weights that are missing is reported ``unavailable`` with the reason; the command still scores the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_store
from evalkit.scoring import score_images


@app.command("score")
def score(
    image: Path = typer.Argument(..., help="Image to score (e.g. a stylized output)."),
    metrics: str = typer.Option(None, "--metrics", help="Comma list (default: every metric; see `evalkit metrics`)."),
    ref: Path = typer.Option(None, "--ref", help="Reference (content) image for full-reference metrics."),
    style: Path = typer.Option(None, "--style", help="Style image, for the style loss."),
    eval_size: int = typer.Option(
        None,
        "--eval-size",
        help="Resize every image to this short side first (default: score at the images' own size).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Score one image with evalkit's metrics (full-reference ones against --ref)."""
    from evalkit.metrics import get_metric_class, metric_names

    store = asset_store(home, weights_mirror, data_mirror)
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else metric_names()
    values = score_images(image, names, store, ref, style, eval_size, device)
    if as_json:
        typer.echo(
            json.dumps(
                [{"metric": v.name, "value": v.value, "status": v.status, "message": v.message} for v in values],
                indent=2,
            )
        )
        return
    table = Table(title=f"{image}" + (f" vs {ref}" if ref else ""))
    for col in ("metric", "value", "better", "status"):
        table.add_column(col, overflow="fold")
    for v in values:
        better = "higher" if get_metric_class(v.name).info.higher_is_better else "lower"
        shown = f"{v.value:.6g}" if v.value is not None else "-"
        table.add_row(v.name, shown, better, "ok" if v.status == "ok" else escape(f"{v.status}: {v.message}"))
    Console().print(table)


__all__ = ["score", "score_images"]
