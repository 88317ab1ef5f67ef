"""``evalkit weights status|fetch``: every weight set the installed methods and metrics use."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_store
from evalkit.errors import EvalkitError
from evalkit.registry import available_methods, get_method
from evalkit.weights import WeightSet, weight_label

weights_app = typer.Typer(help="Show and fetch weight sets.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


def all_weight_sets() -> dict[str, WeightSet]:
    """``label -> WeightSet`` for every installed method plus the shared VGG-19 used by metrics."""
    from evalkit.vgg import VGG19_WEIGHT_SETS

    sets = {weight_label("vgg19", name): ws for name, ws in VGG19_WEIGHT_SETS.items()}
    for method in available_methods():
        try:
            cls = get_method(method)
        except EvalkitError:
            continue
        for name, ws in cls.weight_sets.items():
            sets[weight_label(method, name)] = ws
    from evalkit.metrics import get_metric_class, metric_names

    for metric in metric_names():  # metrics declare weight sets exactly as methods do
        try:
            mcls = get_metric_class(metric)
        except EvalkitError:
            continue
        for name, ws in mcls.weight_sets.items():
            sets[weight_label(metric, name)] = ws
    return sets


@weights_app.command("status")
def status(home: Path = Home, weights_mirror: Path = WeightsMirror, data_mirror: Path = DataMirror) -> None:
    """List every weight set and whether it is available (cache, mirror, package) without downloading."""
    resolver = asset_store(home, weights_mirror, data_mirror)
    table = Table(title="weight sets")
    for col in ("weight set", "status", "files", "where / how to get it"):
        table.add_column(col, overflow="fold")
    for label, ws in all_weight_sets().items():
        state, detail = ws.availability(resolver)
        colour = {"available": "green", "downloadable": "yellow"}.get(state, "red")
        table.add_row(escape(label), f"[{colour}]{state}[/{colour}]", str(len(ws.files)), escape(detail))
    Console().print(table)


@weights_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="METHOD, METHOD[SET] or vgg19[imagenet]"),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Resolve (and download if needed) every file of a weight set, verifying sha256."""
    resolver = asset_store(home, weights_mirror, data_mirror)
    sets = all_weight_sets()
    chosen = {k: v for k, v in sets.items() if k == name or k.startswith(f"{name}[")}
    if not chosen:
        raise EvalkitError(f"unknown weight set '{name}': known sets are {', '.join(sets)}")
    for label, ws in chosen.items():
        paths = ws.resolve(resolver)
        for role, path in paths.items():
            typer.echo(f"{label} {role}: {path}")
