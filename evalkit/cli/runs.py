"""``evalkit runs``: the runs of a results root, with status, when, and their jobs by outcome."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import Results


@app.command("runs")
def runs(
    results: Path = Results,
) -> None:
    """List every run of a results root: status (finished, running, interrupted, failed), times and job counts.

    Runs whose process is gone are marked ``interrupted`` here if no run is writing the root.
    """
    import json

    from evalkit.store import ResultsStore

    with ResultsStore.open_reader(results) as store:
        rows = store.run_summaries()
    table = Table(title=f"runs in {results}")
    for col in ("run", "status", "started", "finished", "protocol", "methods", "jobs", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(r["counts"].items())) or "none"
        if r["reused"]:
            counts += f" ({r['reused']} reused)"
        methods = ", ".join(json.loads(r["methods"])) if r.get("methods") else ""
        colour = {"finished": "green", "running": "cyan"}.get(r["status"], "yellow")
        table.add_row(
            r["run_id"],
            f"[{colour}]{escape(r['status'])}[/{colour}]",
            r["started"] or "",
            r["finished"] or "",
            escape(r["protocol"] or ""),
            escape(methods),
            escape(counts),
            escape(r.get("note") or ""),
        )
    Console(width=max(Console().width, 160)).print(table)
