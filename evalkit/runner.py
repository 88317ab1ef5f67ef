"""The driver of ``evalkit run``: plan jobs from a protocol, skip finished ones, schedule, record, report.

Data flows one way: protocol -> frozen :class:`~evalkit.specs.JobSpec` objects (keyed by content hash) ->
:class:`~evalkit.scheduler.Scheduler` -> an executor -> :class:`~evalkit.results.JobResult` objects -> the
:class:`~evalkit.store.ResultsStore`, which this module alone writes during a run. Jobs already in the store with a
final status (``ok``/``oom``) are reused, so rerunning a command, or resuming one that was killed, only does what is
missing; finished jobs that lack a requested metric travel the same channel as ``score`` jobs (their stored PNG is
scored, nothing is re-stylized).
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from evalkit import environment, precision
from evalkit.adapter import MethodAdapter
from evalkit.assets import AssetSettings, AssetStore
from evalkit.errors import EvalkitError
from evalkit.executors import NAMES as EXECUTORS
from evalkit.executors import ExecutorChoice
from evalkit.imaging import NAMED_RESOLUTIONS, Resolution
from evalkit.metrics import metric_names
from evalkit.protocol import Protocol, load_protocol
from evalkit.registry import MethodSelector, choose_weight_set, get_method
from evalkit.results import FAILED_STATUSES, FINAL_STATUSES, JobResult
from evalkit.rootlock import RootLock
from evalkit.scheduler import Policy, Scheduler
from evalkit.specs import JobSpec
from evalkit.store import DB_NAME, ResultsStore
from evalkit.weights import weight_label
from evalkit.worker import WorkerConfig

ISOLATED_OPTIONS = ("timeout", "cpu_memory", "device_memory")


@dataclass
class RunRequest:
    protocol: str | Protocol = "quick"  # a name, a path, or an already loaded protocol (loaded once per run)
    methods: list[str] | None = None
    resolutions: list[str] | None = None
    metrics: list[str] | None = None
    device: str = "cpu"
    out: Path = Path("results")
    seeds: int | None = None
    precision: str = "fp32"  # of the networks: fp32 | bf16 | fp16 | tf32 (evalkit.precision)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # --sweep METHOD.PARAM=v1,v2 (a grid)
    executor: str | None = None  # None: the protocol's [timing] executor, else "local"
    executor_options: dict[str, Any] = field(default_factory=dict)  # timeout, cpu_memory, device_memory (isolated),
    #                                                                  skip_after_oom (every executor)
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
        return self.root / DB_NAME

    @property
    def failed(self) -> Counter:
        """Jobs that ended error / timeout / unavailable: any of them makes ``evalkit run`` exit non-zero."""
        return Counter({k: v for k, v in self.counts.items() if k in FAILED_STATUSES})


def resolve_protocol(protocol: str | Protocol) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else load_protocol(protocol)


def choose_executor(request: RunRequest, protocol: Protocol) -> tuple[ExecutorChoice, Policy]:
    """The executor, its options and the scheduling policy, validated once, before anything is recorded."""
    from evalkit.executors.isolated import parse_bytes

    name = request.executor or str(protocol.timing.get("executor", "local"))
    if name not in EXECUTORS:
        raise EvalkitError(f"unknown executor '{name}': available executors are {', '.join(EXECUTORS)}")
    options = dict(request.executor_options)
    precision.check(request.precision, request.device)
    policy = Policy.from_env(skip_after_oom=bool(options.pop("skip_after_oom", True)))
    budgets = {k: v for k in ISOLATED_OPTIONS if (v := options.pop(k, None)) is not None}
    if options:
        raise EvalkitError(f"unknown executor option(s) {', '.join(options)}")
    if budgets and name != "isolated":
        raise EvalkitError("--timeout, --cpu-memory and --device-memory need worker processes: add --executor isolated")
    if "timeout" in budgets and float(budgets["timeout"]) <= 0:
        raise EvalkitError(f"--timeout must be a positive number of seconds, not {budgets['timeout']}")
    for key in ("cpu_memory", "device_memory"):
        if key in budgets:
            budgets[key] = parse_bytes(budgets[key])
    if "device_memory" in budgets and not request.device.startswith("cuda"):
        raise EvalkitError(
            f"--device-memory limits CUDA memory but --device is {request.device}: use --cpu-memory on CPU"
        )
    if request.ray_address and name != "ray":
        raise EvalkitError("--ray-address applies to the Ray executor only: add --executor ray")
    if name == "ray":
        from evalkit.executors.ray_executor import require_ray

        require_ray()  # before anything is recorded: one line saying how to install Ray
        return ExecutorChoice("ray", {"address": request.ray_address}), policy
    if request.device.startswith("cuda"):  # with Ray the GPUs are on the workers, not the driver
        import torch

        if not torch.cuda.is_available():
            raise EvalkitError(f"--device {request.device} requested but torch sees no CUDA device: use --device cpu")
    return ExecutorChoice(name, budgets), policy


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


def _sweep_for(method: str, label: str, *sweeps: dict[str, dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """The sweep grid of one method selector: its method name's and its label's tables, later sources winning
    per parameter (the protocol's ``[sweep.adain]``, then ``--sweep adain.alpha=...``)."""
    grid: dict[str, list[Any]] = {}
    for sweep in sweeps:
        for key in (method, label):
            grid.update(sweep.get(key, {}))
    return grid


def sweep_variants(
    cls: type[MethodAdapter], overrides: dict[str, Any], grid: dict[str, list[Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """``(variant, resolved params)`` for every point of ``grid`` (the product of its value lists; one point with
    variant ``""`` when there is no sweep). Points are validated like ``--param`` values; duplicates are dropped."""
    if not grid:
        return [("", cls.resolve_params(overrides))]
    names = list(grid)
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for values in itertools.product(*(grid[n] for n in names)):
        params = cls.resolve_params({**overrides, **dict(zip(names, values, strict=True))})
        variant = " ".join(f"{n}={_show(params[n])}" for n in names)
        if variant not in seen:
            seen.add(variant)
            out.append((variant, params))
    return out


def _show(value: Any) -> str:
    """A parameter value as a label writes it: ``0.5``, ``1e+03``, ``conv4_2``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plan_jobs(
    protocol: Protocol, request: RunRequest, store: AssetStore, console: Console
) -> tuple[list[JobSpec], list[str], dict]:
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
            weight_set, reason = choose_weight_set(cls, selector.weight_set, store)
            label = weight_label(cls.name, weight_set)
            overrides = {
                **protocol.params.get(cls.name, {}),
                **protocol.params.get(label, {}),
                **request.params.get(cls.name, {}),
                **request.params.get(label, {}),
            }
            variants = sweep_variants(cls, overrides, _sweep_for(cls.name, label, protocol.sweep, request.sweep))
        except (EvalkitError, ValueError) as exc:
            errors.append(str(exc))
            continue
        if cls.weight_sets and not selector.weight_set:
            console.print(f"{cls.name}: using weight set [bold]{escape(str(weight_set))}[/bold] ({escape(reason)})")
        digests = cls.weight_sets[weight_set].digests() if weight_set else {}
        methods_info[label] = {"cls": cls, "weight_set": weight_set, "digests": digests}
        method_seeds = range(seeds) if not cls.deterministic else range(1)
        for variant, params in variants:
            for pair in protocol.pairs:
                image_digests = {
                    role: protocol.images[ref].sha256
                    for role, ref in (
                        ("content", pair.content),
                        ("style", pair.style),
                        ("content_mask", pair.content_mask),
                        ("style_mask", pair.style_mask),
                    )
                    if ref
                }
                for res in resolutions:
                    for seed in method_seeds:
                        specs.append(
                            JobSpec(
                                method=cls.name,
                                weight_set=weight_set,
                                params=params,
                                pair_id=pair.id,
                                resolution=res,
                                seed=seed,
                                content=pair.content,
                                style=pair.style,
                                content_mask=pair.content_mask if cls.uses_masks else None,
                                style_mask=pair.style_mask if cls.uses_masks else None,
                                style_size=protocol.style_size,
                                eval_size=protocol.eval_size,
                                method_version=cls.version,
                                weight_digests=digests,
                                precision=request.precision,
                                image_digests=image_digests,
                                variant=variant,
                            ).with_key()
                        )
    return specs, errors, methods_info


def run_benchmark(request: RunRequest, console: Console | None = None) -> RunSummary:
    """Plan, take the root's lock, clean up after crashed runs, execute, record; the run row always ends in a final
    status (``finished``, ``interrupted`` on Ctrl-C, ``failed`` with the reason on any other exception)."""
    console = console or Console(stderr=True)
    protocol = resolve_protocol(request.protocol)
    choice, policy = choose_executor(request, protocol)
    metrics = request.metrics if request.metrics is not None else protocol.metrics
    known = set(metric_names())
    bad_metrics = [m for m in metrics if m not in known]
    if bad_metrics:
        raise EvalkitError(f"unknown metric(s) {', '.join(bad_metrics)}: known metrics are {', '.join(sorted(known))}")
    specs, plan_errors, methods_info = plan_jobs(protocol, request, AssetStore(request.assets), console)
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
            run = _Run(request, protocol, list(metrics), choice, policy, methods_info, store, console)
            return run.execute(specs, plan_errors, command)
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


@dataclass
class _Run:
    """One execution: everything the results loop needs, so that it reads as plan -> schedule -> record."""

    request: RunRequest
    protocol: Protocol
    metrics: list[str]
    choice: ExecutorChoice
    policy: Policy
    methods_info: dict[str, dict[str, Any]]
    store: ResultsStore
    console: Console
    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    recorded_models: set[str] = field(default_factory=set)

    def config(self) -> WorkerConfig:
        timing = self.protocol.timing
        return WorkerConfig(
            protocol=self.protocol,
            device=self.request.device,
            metrics=self.metrics,
            assets=self.request.assets.to_dict(),
            executor=self.choice.name,
            warmup=int(self.request.warmup if self.request.warmup is not None else timing.get("warmup", 0)),
            repeats=int(self.request.repeats if self.request.repeats is not None else timing.get("repeats", 1)),
        )

    def execute(self, specs: list[JobSpec], plan_errors: list[str], command: str) -> RunSummary:
        request, protocol, store = self.request, self.protocol, self.store
        run_id = store.start_run(
            protocol.name,
            protocol.sha256,
            command,
            list(self.methods_info),
            request.resolutions or protocol.resolutions,
            request.device,
            self.choice.name,
            environment.capture(request.device),
            protocol_text=protocol.text,
            protocol_source=protocol.source,
        )
        status, note = "failed", None
        statuses = store.job_status(spec.key for spec in specs)
        todo = [s for s in specs if statuses.get(s.key) not in FINAL_STATUSES]
        reused = [s for s in specs if statuses.get(s.key) in FINAL_STATUSES]
        try:
            store.attach_jobs(run_id, (s.key for s in reused))
            if reused:
                self.console.print(f"resuming: {len(reused)} of {len(specs)} jobs already finished in {store.path}")
            scoring = self._scoring_jobs(reused, statuses)
            executor = self.choice.build()
            described = executor.describe()
            if described:
                self.console.print(escape(described))
            scheduler = Scheduler(executor, self.policy, log=lambda line: self.console.print(escape(line)))
            self._consume(run_id, scheduler, scoring + todo)
            status = "finished"
        except KeyboardInterrupt:
            status, note = "interrupted", "interrupted: stopped by the user (Ctrl-C)"
            raise
        except BaseException as exc:
            note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            raise
        finally:
            store.finish_run(run_id, status, note)
        return RunSummary(run_id, store.root, len(specs), len(reused), self.counts, plan_errors, self.failures)

    def _scoring_jobs(self, reused: list[JobSpec], statuses: dict[str, str]) -> list[JobSpec]:
        """Finished outputs that lack a requested metric, as ``score`` jobs carrying their stored PNG."""
        wanted = set(self.metrics)
        out = []
        for spec in reused:
            if statuses.get(spec.key) != "ok" or not wanted - self.store.metric_names(spec.key, spec.eval_size):
                continue
            png = self.store.output_png(spec.key)
            if png is not None:
                out.append(spec.for_scoring(png))
        if out:
            self.console.print(f"scoring {len(out)} finished outputs that lack requested metrics")
        return out

    def _consume(self, run_id: str, scheduler: Scheduler, jobs: list[JobSpec]) -> None:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, disable=not self.request.progress, transient=False) as progress:
            task = progress.add_task(_describe(jobs[0]) if jobs else "nothing to do", total=len(jobs))
            for spec, result in scheduler.run(jobs, self.config()):
                self._record(run_id, spec, result, progress.console)
                progress.update(task, advance=1, description=_describe(spec))
            progress.update(task, description="done")

    def _record(self, run_id: str, spec: JobSpec, result: JobResult, console: Console) -> None:
        if result.model_info is not None and spec.label not in self.recorded_models:
            info = self.methods_info.get(result.model_info.label)
            if info is not None:  # recorded under the job's label, so a sweep variant's row finds its counts
                cls = info["cls"]
                self.store.record_method(
                    spec.label,
                    cls.name,
                    info["weight_set"],
                    cls.kind,
                    cls.version,
                    result.model_info.parameters,
                    result.model_info.layers,
                    info["digests"],
                )
                self.recorded_models.add(spec.label)
        if spec.task == "score":
            if result.status == "ok":
                self.store.record_metrics(spec.key, spec.eval_size, result.metrics)
            return
        self.store.record_job(run_id, self.protocol.name, spec, result, self.protocol.eval_size)
        self.counts[result.status] += 1
        where = f"{escape(spec.label)} {escape(spec.pair_id)} @{spec.resolution}"
        for warning in result.warnings:
            console.print(f"[yellow]warning[/yellow] {where}: {escape(warning)}")
        if result.status != "ok":
            self.failures.append(
                (f"{spec.label} {spec.pair_id} {spec.resolution} s{spec.seed}", result.status, result.message or "")
            )
            console.print(f"[yellow]{result.status}[/yellow] {where}: {escape(result.message or '')}")


def _describe(spec: JobSpec) -> str:
    return escape(f"{spec.label} · {spec.pair_id} · {spec.resolution} · seed {spec.seed}")  # keep [weights]
