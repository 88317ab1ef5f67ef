"""``evalkit run``: plan, execute and record a benchmark."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from evalkit.cli import app
from evalkit.cli.common import DataMirror, Home, WeightsMirror, asset_settings
from evalkit.errors import EvalkitError
from evalkit.protocol import load_protocol
from evalkit.runner import RunRequest, parse_resolutions, run_benchmark


def parse_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``--param gatys.iterations=50`` -> {"gatys": {"iterations": "50"}} (coerced by the method's Param)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, name = target.rpartition(".")
        if not sep or not dot:
            raise EvalkitError(f"cannot parse --param '{item}': write METHOD.PARAM=VALUE, e.g. gatys.iterations=50")
        out.setdefault(method, {})[name] = value
    return out


def parse_sweeps(items: list[str]) -> dict[str, dict[str, list[str]]]:
    """``--sweep adain.alpha=0.25,0.5,1`` -> {"adain": {"alpha": ["0.25", "0.5", "1"]}}; several parameters of one
    method form a grid. (A value that itself holds commas, such as a layer list, is swept from a protocol's TOML.)"""
    out: dict[str, dict[str, list[str]]] = {}
    for item in items:
        target, sep, values = item.partition("=")
        method, dot, name = target.rpartition(".")
        points = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not dot or not points:
            raise EvalkitError(
                f"cannot parse --sweep '{item}': write METHOD.PARAM=V1,V2,..., e.g. adain.alpha=0.25,0.5,1"
            )
        out.setdefault(method, {})[name] = points
    return out


@app.command()
def run(
    protocol: str = typer.Option("quick", "--protocol", "-p", help="Protocol name (protocols/*.toml) or path."),
    methods: str = typer.Option(None, "--methods", "-m", help="Comma list, e.g. gatys,adain[cd16x]."),
    res: str = typer.Option(None, "--res", help="512|1k|hd|fhd|qhd|4k|all or a comma list (default: protocol's)."),
    metrics: str = typer.Option(None, "--metrics", help="Comma list of metrics (default: protocol's)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    out: Path = typer.Option(
        Path("results"),
        "--results",
        "-r",
        "--out",
        "-o",
        help="Results root written (one SQLite database per root; --out is an alias).",
    ),
    seeds: int = typer.Option(None, "--seeds", help="Seeds per job for seed-dependent methods."),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="Networks' precision: fp32 (exact), bf16, fp16 (autocast) or tf32 (CUDA); part of the job key.",
    ),
    param: list[str] = typer.Option([], "--param", help="Override a parameter: METHOD.PARAM=VALUE (repeatable)."),
    sweep: list[str] = typer.Option(
        [], "--sweep", help="Sweep a parameter: METHOD.PARAM=V1,V2,... (repeatable; several form a grid)."
    ),
    executor: str = typer.Option(
        None,
        "--executor",
        help="local, isolated, ray or a plug-in's (default: the protocol's timing.executor, else local; "
        "`evalkit executors` lists them with their options).",
    ),
    executor_opt: list[str] = typer.Option(
        [], "--executor-opt", help="An executor option: NAME=VALUE (repeatable; over the protocol's [executor.NAME])."
    ),
    max_retries: int = typer.Option(2, "--max-retries", help="Re-runs of a job whose worker or node was lost."),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster for --executor ray: auto or HOST:PORT (default: $RAY_ADDRESS, "
        "else a local Ray). See docs/scale-out.md.",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Disable the progress bar."),
    warmup: int = typer.Option(None, "--warmup", help="Untimed runs per job before timing (default: protocol's)."),
    repeats: int = typer.Option(None, "--repeats", help="Timed runs per job; median stored (default: protocol's)."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds per job before its worker is killed (isolated)."),
    cpu_memory: str = typer.Option(None, "--cpu-memory", help="Worker memory budget, e.g. 8GiB (isolated)."),
    device_memory: str = typer.Option(None, "--device-memory", help="CUDA memory budget, e.g. 12GiB (isolated)."),
    skip_after_oom: bool = typer.Option(
        True, "--skip-after-oom/--no-skip-after-oom", help="After an OOM, skip larger resolutions of that method."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="If another run is writing this results root, wait for it instead of refusing."
    ),
    home: Path = Home,
    weights_mirror: Path = WeightsMirror,
    data_mirror: Path = DataMirror,
) -> None:
    """Run a benchmark protocol; finished jobs are skipped, so rerunning resumes."""
    console = Console(stderr=True)
    proto = load_protocol(protocol)  # once: the runner uses this object, never reloads it
    request = RunRequest(
        protocol=proto,
        methods=_split_methods(methods),
        resolutions=parse_resolutions(res, proto) if res else None,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics is not None else None,
        device=device,
        out=out,
        seeds=seeds,
        precision=precision,
        params=parse_params(param),
        sweep=parse_sweeps(sweep),
        executor=executor,
        assets=asset_settings(home, weights_mirror, data_mirror),
        progress=not no_progress,
        command=shlex.join(["evalkit", *sys.argv[1:]]),
        warmup=warmup,
        repeats=repeats,
        executor_options={
            "timeout": timeout,
            "cpu_memory": cpu_memory,
            "device_memory": device_memory,
            "address": ray_address,
            **parse_executor_options(executor_opt),
        },
        skip_after_oom=skip_after_oom,
        max_retries=max_retries,
        wait=wait,
    )
    try:
        summary = run_benchmark(request, console)
    except ValueError as exc:
        raise EvalkitError(str(exc)) from exc
    table = Table(title=f"run {summary.run_id}")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    table.add_row("reused (already finished)", str(summary.reused))
    for status, n in sorted(summary.counts.items()):
        table.add_row(status, str(n))
    console.print(table)
    typer.echo(f"results: {summary.database.resolve()}")
    typer.echo(f"images:  {(summary.root / 'images').resolve()}")
    typer.echo(f"export:  evalkit export --results {summary.root}")
    failed = summary.failed
    if failed:
        what = ", ".join(f"{n} {status}" for status, n in sorted(failed.items()))
        console.print(
            f"[red]{sum(failed.values())} job(s) did not succeed ({what})[/red]: their messages are above "
            f"and in `evalkit runs --results {summary.root}`; exit status 1 (ok, oom and skipped-after-OOM "
            f"jobs are results; error, timeout and unavailable are not)"
        )
    if summary.plan_errors:
        console.print(f"[red]{len(summary.plan_errors)} method selector(s) could not be planned[/red] (see above)")
    if failed or summary.plan_errors:
        raise typer.Exit(1)


def parse_executor_options(items: list[str]) -> dict[str, str]:
    """``--executor-opt NAME=VALUE`` items (the executor coerces and checks each value)."""
    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EvalkitError(f"--executor-opt '{item}' is not NAME=VALUE: write e.g. --executor-opt timeout=600")
        options[name.strip()] = value.strip()
    return options


def _split_methods(text: str | None) -> list[str] | None:
    from evalkit.registry import split_selectors

    return split_selectors(text) if text else None
