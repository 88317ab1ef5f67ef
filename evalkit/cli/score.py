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

from evalkit.assets import AssetStore
from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_store
from evalkit.errors import EvalkitError
from evalkit.results import MetricValue


def _load(path: Path, eval_size: int | None):
    from evalkit import imaging

    img = imaging.load_image(path)
    if eval_size:
        img = imaging.resize(img, imaging.Resolution.parse(str(eval_size)))
    return img


def score_images(
    image: Path,
    names: list[str],
    store: AssetStore,
    ref: Path | None = None,
    style: Path | None = None,
    eval_size: int | None = None,
    device: str = "cpu",
) -> list[MetricValue]:
    """Metric values for ``image`` (in the order of ``names``); raises for bad input, never for a metric."""
    import torch

    from evalkit import imaging
    from evalkit.assets import sha256_file
    from evalkit.metrics import EvalSample, MetricSuite, get_metric_class, metric_names

    unknown = [n for n in names if n not in metric_names()]
    if unknown:
        raise EvalkitError(f"unknown metric(s) {', '.join(unknown)}: known metrics are {', '.join(metric_names())}")
    out_img = _load(image, eval_size)
    ref_img = _load(ref, eval_size) if ref else None
    style_img = _load(style, eval_size) if style else None
    if ref_img is not None and ref_img.size != out_img.size:
        raise EvalkitError(
            f"{image} is {out_img.size[0]}x{out_img.size[1]} but --ref {ref} is "
            f"{ref_img.size[0]}x{ref_img.size[1]}: full-reference metrics compare pixel-aligned images; "
            f"give a reference of the same size"
        )
    missing: dict[str, str] = {}
    for name in names:
        needs = get_metric_class(name).info.reference
        if needs == "content" and ref_img is None:
            missing[name] = "full-reference metric: pass --ref REFERENCE_IMAGE"
        elif needs == "style" and style_img is None:
            missing[name] = "style metric: pass --style STYLE_IMAGE"
    suite = MetricSuite([n for n in names if n not in missing], device, store)
    output = imaging.to_tensor(out_img, device)
    sample = EvalSample(
        output=output,
        content=imaging.to_tensor(ref_img, device) if ref_img is not None else output,
        style=imaging.to_tensor(style_img, device) if style_img is not None else output,
        output_key=f"file:{sha256_file(image)}:{eval_size}",
        content_key=f"file:{sha256_file(ref)}:{eval_size}" if ref else "none:content",
        style_key=f"file:{sha256_file(style)}:{eval_size}" if style else "none:style",
    )
    with torch.no_grad():
        scored = {v.name: v for v in suite.evaluate(sample)}
    return [scored.get(n) or MetricValue(n, None, "unavailable", missing[n]) for n in names]


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
