"""``evalkit import``: record a folder of outputs made elsewhere as a method's results for a protocol."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_settings

SHOWN = 10  # file names listed before "... and N more"


def _listing(items: list[str]) -> str:
    more = f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


@app.command("import")
def import_folder(
    folder: Path = typer.Argument(..., help="Folder holding the outputs (subfolders allowed)."),
    protocol: str = typer.Option("quick", "--protocol", "-p", help="Protocol name or path to a .toml file."),
    name: str = typer.Option(..., "--as", help="The method name the outputs are recorded under, e.g. stylid."),
    pattern: str = typer.Option(
        None, "--pattern", help="File name per pair with {content}, {style}, {pair}: '{content}_stylized_{style}.png'."
    ),
    map_file: Path = typer.Option(None, "--map", help="CSV with columns pair_id,file (paths relative to FOLDER)."),
    res: str = typer.Option(
        None, "--res", help="The resolution the outputs stand for (default: the protocol's first)."
    ),
    metrics: str = typer.Option(None, "--metrics", help="Comma list (default: the protocol's metrics)."),
    out: Path = typer.Option(Path("results"), "--results", "-r", "--out", "-o", help="Results root written."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Disable the progress bar."),
    wait: bool = typer.Option(False, "--wait", help="If a run is writing the results root, wait for it."),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Record outputs made elsewhere as a method of a protocol: checked, sha256-pinned, scored like any run."""
    from evalkit.api import import_outputs
    from evalkit.importer import ImportRefused

    console = Console(stderr=True)
    try:
        evaluation, found = import_outputs(
            folder,
            name,
            protocol,
            out,
            pattern=pattern,
            map_file=map_file,
            resolution=res,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics is not None else None,
            assets=asset_settings(home, weights_mirror, data_mirror),
            progress=not no_progress,
            console=console,
            command=shlex.join(["evalkit", *sys.argv[1:]]),
            wait=wait,
        )
    except ImportRefused as refused:
        for line in refused.errors[1:]:  # the first is in the exception's own line
            console.print(f"error: {escape(line)}", soft_wrap=True)
        raise
    summary = evaluation.summary
    if found.missing:
        console.print(
            f"[yellow]missing[/yellow]: {len(found.missing)} pair(s) without a file, recorded as missing "
            f"(statistics use the pairs both methods have): {escape(_listing(found.missing))}"
        )
    if found.unmatched:
        console.print(
            f"[yellow]warning[/yellow]: {len(found.unmatched)} file(s) in {escape(str(folder))} match no pair: "
            f"{escape(_listing(found.unmatched))}"
        )
    imported = len(found.plan.jobs) - len(found.missing)
    typer.echo(
        f"imported {imported} output(s) as {name} ({summary.reused} unchanged) into {summary.database.resolve()}; "
        f"run {summary.run_id}"
    )
    if summary.failed:
        raise typer.Exit(1)


__all__ = ["import_folder"]
