"""``evalkit methods``, ``evalkit protocols``, ``evalkit metrics``: what is installed and usable."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.assets import AssetStore
from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_store
from evalkit.errors import EvalkitError
from evalkit.registry import available_methods, get_method


@app.command("methods")
def methods(
    extra: str = typer.Option(
        None, "--methods", "-m", help="Also list these selectors, e.g. ./my_method.py:stylize (comma-separated)."
    ),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """List installed methods (and --methods ones, e.g. from files) with kind, weight sets, parameters, layers."""
    from evalkit import method_files
    from evalkit.registry import split_selectors

    store = asset_store(home, weights_mirror, data_mirror)
    table = Table(title="methods")
    for col in ("method", "kind", "extra", "weight sets", "params", "layers", "parameters (defaults)"):
        table.add_column(col, overflow="fold")
    names: list[str] = available_methods()
    for selector in split_selectors(extra or ""):  # one-line errors for a bad file, like `evalkit run`
        cls = (
            method_files.load_selector(selector)[0] if method_files.is_file_selector(selector) else get_method(selector)
        )
        names.append(cls.name)
    for name in dict.fromkeys(names):
        try:
            cls = get_method(name)
        except EvalkitError as exc:
            table.add_row(name, "?", "", f"[red]{escape(str(exc))}[/red]", "", "", "")
            continue
        sets = []
        for ws_name, ws in cls.weight_sets.items():
            state, _ = ws.availability(store)
            sets.append(f"{ws_name} ({state})")
        counts = _counts(cls, store)
        defaults = ", ".join(f"{k}={p.default}" for k, p in cls.params.items())
        kind = f"{cls.kind}\nlearns each style" if cls.fits_style() else cls.kind
        extra = escape(f"evalkit[{cls.extra}]") if cls.extra else "-"
        table.add_row(name, kind, extra, escape("\n".join(sets)) or "none needed", *counts, escape(defaults))
    Console().print(table)


def _counts(cls, store: AssetStore) -> tuple[str, str]:
    """Parameter and layer counts, from the first available weight set (blank when none is available)."""
    for ws_name, ws in (cls.weight_sets or {None: None}).items():
        if ws is not None and ws.availability(store)[0] != "available":
            continue
        try:
            adapter = cls(ws_name, "cpu", assets=store)
            adapter.load(ws.resolve(store, download=False) if ws else {})
            info = adapter.info()
            return f"{info.parameters:,}", str(info.layers)
        except Exception:  # noqa: BLE001 - listing must never fail on one broken method
            continue
    return "-", "-"


@app.command("protocols")
def protocols() -> None:
    """List protocols with their pairs, resolutions and metrics."""
    from evalkit.protocol import list_protocols, load_protocol

    table = Table(title="protocols")
    for col in ("protocol", "pairs", "resolutions", "metrics", "description"):
        table.add_column(col, overflow="fold")
    for name, path in list_protocols().items():
        proto = load_protocol(str(path))
        table.add_row(
            name, str(len(proto.pairs)), ",".join(proto.resolutions), ",".join(proto.metrics), proto.description
        )
    Console().print(table)


@app.command("metrics")
def metrics(home: Path = Home, weights_mirror: Path = WeightsMirror, data_mirror: Path = DataMirror) -> None:
    """List metrics with their metadata and availability (installed plug-ins included)."""
    from evalkit.metrics import get_metric_class, metric_names

    store = asset_store(home, weights_mirror, data_mirror)
    table = Table(title="metrics")
    for col in ("metric", "level", "better", "reference", "range", "weights", "available", "definition"):
        table.add_column(col, overflow="fold")
    for name in metric_names():
        cls = get_metric_class(name)
        ok, reason = cls("cpu", store).availability()
        info = cls.info
        lo, hi = info.range
        table.add_row(
            name,
            info.level,
            "higher" if info.higher_is_better else "lower",
            info.reference,
            f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]",
            escape("\n".join(info.weights) or "none"),
            escape(f"yes ({reason})" if reason else "yes") if ok else f"[red]no[/red]: {escape(reason)}",
            escape(info.definition or info.description),
        )
    Console().print(table)


@app.command("executors")
def executors() -> None:
    """List executors (installed plug-ins included) with their options (--executor-opt NAME=VALUE, or a protocol's
    [executor.NAME] table)."""
    from evalkit.executors import executor_names, get_executor_class

    table = Table(title="executors")
    for col in ("executor", "what it does", "options"):
        table.add_column(col, overflow="fold")
    for name in executor_names():
        cls = get_executor_class(name)
        options = "\n".join(f"{key}={p.default!r}: {p.help}" for key, p in cls.options.items()) or "none"
        table.add_row(name, escape(cls.summary), escape(options))
    Console(width=max(Console().width, 160), emoji=False).print(table)


__all__ = ["executors", "methods", "protocols", "metrics", "typer"]
