"""The driver of ``evalkit run``: plan jobs from a protocol, skip finished ones, execute, record, report.

Planning turns (method selector, pair, resolution, seed) into frozen :class:`~evalkit.specs.JobSpec` objects keyed by
content hash. Jobs already in the store with a final status (``ok``/``oom``) are reused, so rerunning a command, or
resuming one that was killed, only does what is missing. Finished jobs that lack a requested metric are scored from
their stored PNG instead of being re-stylized.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evalkit import environment
from evalkit.assets import AssetSettings
from evalkit.errors import EvalkitError
from evalkit.executors import get_executor
from evalkit.imaging import NAMED_RESOLUTIONS, Resolution
from evalkit.metrics import metric_names
from evalkit.registry import MethodSelector, choose_weight_set, get_method
from evalkit.rootlock import RootLock
from evalkit.specs import JobSpec, Protocol, load_protocol
from evalkit.store import FAILED_STATUSES, FINAL_STATUSES, ResultsStore
from evalkit.weights import weight_label
from evalkit.worker import JobContext, WorkerConfig


@dataclass
class RunRequest:
    protocol: str = "quick"
    methods: list[str] | None = None
    resolutions: list[str] | None = None
    metrics: list[str] | None = None
    device: str = "cpu"
    out: Path = Path("results")
    seeds: int | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str | None = None  # None: the protocol's [timing] executor, else "local"
    executor_options: dict[str, Any] = field(default_factory=dict)  # e.g. timeout, cpu_memory (isolated)
    ray_address: str | None = None  # --executor ray: auto, HOST:PORT, or None ($RAY_ADDRESS / a local Ray)
    warmup: int | None = None  # None: the protocol's [timing] warmup (else 0)
    repeats: int | None = None  # None: the protocol's [timing] repeats (else 1)
    assets: AssetSettings = field(default_factory=AssetSettings.from_env)
    progress: bool = True
    command: str = ""
    wait: bool = False  # another run holds the results root: wait for it instead of refusing


@dataclass
class RunSummary:
    run_id: str
    root: Path
    planned: int
    reused: int
    counts: Counter
    plan_errors: list[str]
    failures: list[tuple[str, str, str]]  # (label/pair/res, status, message)

    @property
    def database(self) -> Path:
        return self.root / "evalkit.sqlite"

    @property
    def failed(self) -> Counter:
        """Jobs that ended error / timeout / unavailable: any of them makes ``evalkit run`` exit non-zero."""
        return Counter({k: v for k, v in self.counts.items() if k in FAILED_STATUSES})


def parse_resolutions(text: str | None, protocol: Protocol) -> list[str]:
    """``None`` -> the protocol's; ``all`` -> every named resolution; else a comma list (validated)."""
    if not text:
        return list(protocol.resolutions)
    if text.strip().lower() == "all":
        return list(NAMED_RESOLUTIONS)
    values = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not values:
        raise EvalkitError(f"--res '{text}' names no resolution: write e.g. --res 512 or --res 1k,4k")
    for value in values:
        try:
            Resolution.parse(value)
        except ValueError as exc:
            raise EvalkitError(f"--res: {exc}") from None
    return values


def plan_jobs(protocol: Protocol, request: RunRequest, console: Console) -> tuple[list[JobSpec], list[str], dict]:
    """Jobs for every valid method selector; invalid selectors become plan errors (other methods go on)."""
    selectors = request.methods or protocol.methods
    if not selectors:
        raise EvalkitError(f"protocol '{protocol.name}' names no default methods: pass --methods")
    resolutions = request.resolutions or list(protocol.resolutions)
    seeds = request.seeds if request.seeds is not None else protocol.seeds
    specs: list[JobSpec] = []
    errors: list[str] = []
    methods_info: dict[str, dict] = {}
    for text in selectors:
        try:
            selector = MethodSelector.parse(text)
            cls = get_method(selector.name)
            weight_set, reason = choose_weight_set(cls, selector.weight_set)
            label = weight_label(cls.name, weight_set)
            overrides = {**protocol.params.get(cls.name, {}), **protocol.params.get(label, {}),
                         **request.params.get(cls.name, {}), **request.params.get(label, {})}
            params = cls.resolve_params(overrides)
        except (EvalkitError, ValueError) as exc:
            errors.append(str(exc))
            continue
        if cls.weight_sets and not selector.weight_set:
            console.print(f"{cls.name}: using weight set [bold]{escape(weight_set)}[/bold] ({escape(reason)})")
        digests = cls.weight_sets[weight_set].digests() if weight_set else {}
        methods_info[label] = {"cls": cls, "weight_set": weight_set, "digests": digests}
        method_seeds = range(seeds) if not cls.deterministic else range(1)
        for pair in protocol.pairs:
            image_digests = {role: protocol.images[ref].sha256 for role, ref in
                             (("content", pair.content), ("style", pair.style), ("content_mask", pair.content_mask),
                              ("style_mask", pair.style_mask)) if ref}
            for res in resolutions:
                for seed in method_seeds:
                    specs.append(JobSpec(
                        method=cls.name, weight_set=weight_set, params=params, pair_id=pair.id, resolution=res,
                        seed=seed, content=pair.content, style=pair.style,
                        content_mask=pair.content_mask if cls.uses_masks else None,
                        style_mask=pair.style_mask if cls.uses_masks else None,
                        style_size=protocol.style_size, eval_size=protocol.eval_size, method_version=cls.version,
                        weight_digests=digests, image_digests=image_digests,
                    ).with_key())
    return specs, errors, methods_info


def run_benchmark(request: RunRequest, console: Console | None = None) -> RunSummary:
    """Plan, take the root's lock, clean up after crashed runs, execute, record; the run row always ends in a final
    status (``finished``, ``interrupted`` on Ctrl-C, ``failed`` with the reason on any other exception)."""
    console = console or Console(stderr=True)
    protocol = load_protocol(request.protocol)
    metrics = request.metrics if request.metrics is not None else protocol.metrics
    known = set(metric_names())
    bad_metrics = [m for m in metrics if m not in known]
    if bad_metrics:
        raise EvalkitError(f"unknown metric(s) {', '.join(bad_metrics)}: known metrics are {', '.join(sorted(known))}")
    specs, plan_errors, methods_info = plan_jobs(protocol, request, console)
    if not methods_info:
        raise EvalkitError(" ; ".join(plan_errors) or "no methods to run")
    for error in plan_errors:  # the valid methods still run; these are reported and make the exit status 1
        console.print(f"[red]error:[/red] {escape(error)}")
    root = Path(request.out)
    command = request.command or shlex.join(sys.argv)
    lock = RootLock(root, command).acquire(wait=request.wait, notify=lambda line: console.print(escape(line)))
    try:
        store = ResultsStore(root)
        try:
            _recover(store, console)
            return _execute(request, protocol, metrics, specs, plan_errors, methods_info, store, command, console)
        finally:
            store.close()
    finally:
        lock.release()


def _recover(store: ResultsStore, console: Console) -> None:
    """What a killed run left behind: runs still marked ``running`` and half-written PNGs. Called under the lock,
    which proves that no other process is writing this root."""
    stale = store.mark_interrupted(detected_by=f"evalkit run (pid {os.getpid()})")
    if stale:
        console.print(f"marked {len(stale)} earlier run(s) whose process is gone as interrupted: {', '.join(stale)}")
    orphans = store.remove_orphans()
    if orphans:
        console.print(f"removed {len(orphans)} half-written output file(s) left by a killed run")


def _execute(request: RunRequest, protocol: Protocol, metrics: list[str], specs: list[JobSpec],
             plan_errors: list[str], methods_info: dict, store: ResultsStore, command: str,
             console: Console) -> RunSummary:
    env = environment.capture(request.device)
    executor_name = request.executor or str(protocol.timing.get("executor", "local"))
    run_id = store.start_run(
        protocol.name, protocol.sha256, command, list(methods_info), request.resolutions or protocol.resolutions,
        request.device, executor_name, env, protocol_text=protocol.text, protocol_source=protocol.source,
    )
    status, note = "failed", None
    counts: Counter = Counter()
    failures: list[tuple[str, str, str]] = []
    statuses = store.job_status(spec.key for spec in specs)
    todo = [s for s in specs if statuses.get(s.key) not in FINAL_STATUSES]
    reused = [s for s in specs if statuses.get(s.key) in FINAL_STATUSES]
    try:
        store.attach_jobs(run_id, (s.key for s in reused))
        config = WorkerConfig(protocol=protocol, device=request.device, metrics=list(metrics),
                              assets=request.assets.to_dict(),
                              warmup=int(request.warmup if request.warmup is not None
                                         else protocol.timing.get("warmup", 0)),
                              repeats=int(request.repeats if request.repeats is not None
                                          else protocol.timing.get("repeats", 1)))
        if reused:
            console.print(f"resuming: {len(reused)} of {len(specs)} jobs already finished in {store.path}")
            _backfill_metrics(store, protocol, reused, config, statuses, console)
        executor = get_executor(executor_name, **request.executor_options, ray_address=request.ray_address)
        if getattr(executor, "note", None):
            console.print(executor.note)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not request.progress, transient=False) as progress:
            task = progress.add_task(_describe(todo[0]) if todo else "nothing to do", total=len(todo))
            for i, (spec, result) in enumerate(executor.map(todo, config)):
                store.record_job(run_id, protocol.name, spec, result, protocol.eval_size)
                counts[result.status] += 1
                for warning in result.warnings:
                    progress.console.print(f"[yellow]warning[/yellow] {escape(spec.label)} {escape(spec.pair_id)} "
                                           f"@{spec.resolution}: {escape(warning)}")
                if result.status != "ok":
                    failures.append((f"{spec.label} {spec.pair_id} {spec.resolution} s{spec.seed}",
                                     result.status, result.message or ""))
                    progress.console.print(f"[yellow]{result.status}[/yellow] {escape(spec.label)} "
                                           f"{escape(spec.pair_id)} @{spec.resolution}: {escape(result.message or '')}")
                nxt = todo[i + 1] if i + 1 < len(todo) else None
                progress.update(task, advance=1, description=_describe(nxt) if nxt else "done")
        for label, info in methods_info.items():
            _record_method(store, label, info, config, executor)
        status = "finished"
    except KeyboardInterrupt:
        status, note = "interrupted", "interrupted: stopped by the user (Ctrl-C)"
        raise
    except BaseException as exc:
        note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        raise
    finally:
        store.finish_run(run_id, status, note)
    return RunSummary(run_id, store.root, len(specs), len(reused), counts, plan_errors, failures)


def _describe(spec: JobSpec) -> str:
    return escape(f"{spec.label} · {spec.pair_id} · {spec.resolution} · seed {spec.seed}")  # keep [weights]


def _record_method(store: ResultsStore, label: str, info: dict, config: WorkerConfig, executor) -> None:
    """Store parameter and layer counts for a method (from the executor's loaded model when it has one)."""
    cls = info["cls"]
    context = getattr(executor, "context", None)
    adapter = None
    if context is not None:
        for (method, weight_set, _device), (loaded, _) in context._adapters.items():
            if method == cls.name and weight_set == info["weight_set"]:
                adapter = loaded
    if adapter is None:
        counts = getattr(executor, "method_info", {}).get(label)  # reported by worker processes (isolated)
        if counts is None:
            return
        parameters, layers = counts["parameters"], counts["layers"]
    else:
        details = adapter.info()
        parameters, layers = details.parameters, details.layers
    store.record_method(label, cls.name, info["weight_set"], cls.kind, cls.version, parameters, layers,
                        info["digests"])


def _backfill_metrics(store: ResultsStore, protocol: Protocol, reused: list[JobSpec], config: WorkerConfig,
                      statuses: dict[str, str], console: Console) -> None:
    """Score finished outputs that lack a requested metric, from their stored PNG (no re-stylization)."""
    wanted = set(config.metrics)
    missing = [s for s in reused if statuses.get(s.key) == "ok"
               and wanted - store.metric_names(s.key, protocol.eval_size)]
    if not missing:
        return
    console.print(f"scoring {len(missing)} finished outputs that lack requested metrics")
    context = JobContext(config)
    for spec in missing:
        row = store.conn.execute("SELECT output_path FROM jobs WHERE job_key=?", (spec.key,)).fetchone()
        if not row or not row["output_path"]:
            continue
        path = store.root / row["output_path"]
        if not path.is_file():
            continue
        with Image.open(path) as img:
            values = context.score(spec, img.convert("RGB"))
        store.record_metrics(spec.key, protocol.eval_size, values)
