"""The ``evalkit`` command line. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import sys

import typer

from evalkit.errors import EvalkitError

app = typer.Typer(
    name="evalkit",
    help="Benchmark harness for neural style transfer: run methods, score them, compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from evalkit.cli import compare, export, imports, inspect, leaderboard, run, runs, score, speed, study, weights  # noqa: E402  (modules register their commands on `app`)

__all__ = [
    "app",
    "main",
    "compare",
    "export",
    "imports",
    "inspect",
    "leaderboard",
    "run",
    "runs",
    "score",
    "speed",
    "study",
    "weights",
]


def main() -> None:
    """Console entry point: user errors print one line (no traceback) and exit with status 2."""
    try:
        app()
    except EvalkitError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
