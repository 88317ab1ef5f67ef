"""The driver of ``evalkit run``: plan, take the root, schedule, record - each step in its own module.

Data flows one way: protocol -> :mod:`evalkit.planner` (a typed :class:`~evalkit.planner.Plan` of frozen
:class:`~evalkit.specs.JobSpec` objects keyed by content hash) -> :class:`~evalkit.scheduler.Scheduler` -> an
executor (:mod:`evalkit.executors`) -> :class:`~evalkit.results.JobResult` objects -> :mod:`evalkit.recorder`, which
alone writes the :class:`~evalkit.store.ResultsStore` during a run. Jobs already in the store with a final status
(``ok``/``oom``) are reused, so rerunning a command, or resuming one that was killed, only does what is missing;
finished jobs that lack a requested metric travel the same channel as :class:`~evalkit.specs.ScoreJob` items (their
stored PNG is scored, nothing is re-stylized). This module validates the request, holds the root's lock and keeps
the run row's status true; it prints only through the display it is given.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from evalkit import environment, method_files, precision
from evalkit.assets import AssetSettings, AssetStore
from evalkit.display import ConsoleDisplay
from evalkit.errors import EvalkitError
from evalkit.executors import ExecutorChoice, check_options, choose, executor_names, get_executor_class
from evalkit.interrupts import SIGTERM_NOTE, Terminated, sigterm_interrupts
from evalkit.metrics import metric_names
from evalkit.metrics.sets import SetReducer
from evalkit.planner import Plan, PlanRequest, plan_jobs
from evalkit.protocol import Protocol, load_protocol
from evalkit.recorder import Recorder
from evalkit.resolution import NAMED_RESOLUTIONS, Resolution
from evalkit.results import FAILED_STATUSES, FINAL_STATUSES
from evalkit.rootlock import RootLock
from evalkit.scheduler import DEFAULT_MAX_RETRIES, Policy, Scheduler
from evalkit.specs import JobSpec, ScoreJob, Work
from evalkit.store import DB_NAME, ResultsStore
from evalkit.worker import WorkerConfig


@dataclass
class RunRequest:
    protocol: str | Protocol = "quick"  # a name, a path, or an already loaded protocol (loaded once per run)
    methods: list[Any] | None = None  # selectors; from Python also adapter classes and functions
    resolutions: list[str] | None = None
    metrics: list[str] | None = None
    device: str = "cpu"
    out: Path = Path("results")
    seeds: int | None = None
    precision: str = "fp32"  # of the networks: fp32 | bf16 | fp16 | tf32 (evalkit.precision)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # --sweep METHOD.PARAM=v1,v2 (a grid)
    executor: str | None = None  # None: the protocol's [timing] executor, else "local"
    # the executor's declared options (--executor-opt NAME=VALUE and the CLI's aliases such as --timeout), over the
    # protocol's [executor.NAME] table; None values are unset
    executor_options: dict[str, Any] = field(default_factory=dict)
    skip_after_oom: bool = True  # scheduler: skip larger resolutions of a method after an OOM
    max_retries: int = DEFAULT_MAX_RETRIES  # scheduler: re-runs of a job whose worker was lost
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


DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
MAX_SWEEP_POINTS = 1000  # variants of one method: beyond this a sweep is a typo, not a study
COUNT_LIMITS = {"seeds": (1, 1000), "repeats": (1, 1000), "warmup": (0, 1000)}


def disk_full(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in str(exc)


def validate_request(request: RunRequest, protocol: Protocol) -> None:
    """Every option and value of a run checked before anything is recorded, one line naming the bad one."""
    if not DEVICE.fullmatch(str(request.device)):
        raise EvalkitError(f"--device {request.device!r} is not a device: use cpu, cuda, cuda:N or mps")
    for name, (low, high) in COUNT_LIMITS.items():
        value = getattr(request, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise EvalkitError(f"--{name} {value!r} is out of range: give a whole number from {low} to {high}")
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise EvalkitError(f"--out {out} is a file: name a folder for the results root (it is created if missing)")
    in_files = {
        f"{Path(m.group('path')).stem}:{m.group('attr')}"
        for text in request.methods or []
        if isinstance(text, str) and (m := method_files.FILE_SELECTOR.match(text))
    }
    _check_method_tables("--param {}.PARAM", request.params, in_files)
    _check_method_tables("--sweep {}.PARAM", request.sweep, in_files)
    _check_method_tables(f"protocol {protocol.source}: [params.{{}}]", protocol.params, in_files)
    _check_method_tables(f"protocol {protocol.source}: [sweep.{{}}]", protocol.sweep, in_files)
    for name, table in protocol.executor_options.items():  # every table, also of executors this run does not use
        if name not in executor_names():
            raise EvalkitError(
                f"protocol {protocol.source}: [executor.{name}] names no installed executor "
                f"(executors: {', '.join(executor_names())}): check the spelling (evalkit executors)"
            )
        try:
            check_options(name, table)
        except EvalkitError as exc:
            raise EvalkitError(f"protocol {protocol.source}: [executor.{name}]: {exc}") from None
    for where, sweeps in (("--sweep", request.sweep), ("[sweep]", protocol.sweep)):
        for method, grid in sweeps.items():
            points = 1
            for values in grid.values():
                points *= len(values)
            if points > MAX_SWEEP_POINTS:
                raise EvalkitError(
                    f"{where} of {method} has {points} points, more than {MAX_SWEEP_POINTS}: sweep fewer values"
                )


def _check_method_tables(where: str, tables: dict[str, Any], in_files: set[str]) -> None:
    """Parameter tables must name an installed method (or a weight label of one) or a method of a file given with
    --methods: a typo is an error, not a no-op."""
    from evalkit.registry import MethodSelector, get_method

    for key in tables:
        if key in in_files or method_files.registered(key) is not None:
            continue
        try:
            get_method(MethodSelector.parse(key).name)
        except EvalkitError:
            raise EvalkitError(
                f"{where.format(key)} names no installed method '{key}': check the spelling (evalkit methods)"
            ) from None


def choose_executor(request: RunRequest, protocol: Protocol) -> tuple[ExecutorChoice, Policy]:
    """The executor, its options and the scheduling policy, validated once, before anything is recorded."""
    name = request.executor or str(protocol.timing.get("executor", "local"))
    precision.check(request.precision, request.device)
    options = {**protocol.executor_options.get(name, {}), **request.executor_options}
    choice = choose(name, options, request.device)
    # on a cluster (Ray, Slurm) the GPUs are on the workers, not on the driver's machine
    if request.device.startswith("cuda") and not get_executor_class(name).remote_devices:
        import torch

        if not torch.cuda.is_available():
            raise EvalkitError(f"--device {request.device} requested but torch sees no CUDA device: use --device cpu")
    return choice, Policy(request.skip_after_oom, request.max_retries)


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


def run_benchmark(
    request: RunRequest, console: Console | None = None, plan: Plan | None = None, imports: dict[str, str] | None = None
) -> RunSummary:
    """Plan, take the root's lock, clean up after crashed runs, execute, record; the run row always ends in a final
    status (``finished``, ``interrupted`` on Ctrl-C, ``failed`` with the reason on any other exception).

    ``plan`` replaces the planner's (``evalkit import`` plans from a folder), ``imports`` maps the sha256 of each
    imported file to its path for the workers."""
    console = console or Console(stderr=True)
    display = ConsoleDisplay(console, enabled=request.progress)
    protocol = resolve_protocol(request.protocol)
    validate_request(request, protocol)
    choice, policy = choose_executor(request, protocol)
    metrics = request.metrics if request.metrics is not None else protocol.metrics
    known = set(metric_names())
    bad_metrics = [m for m in metrics if m not in known]
    if bad_metrics:
        raise EvalkitError(f"unknown metric(s) {', '.join(bad_metrics)}: known metrics are {', '.join(sorted(known))}")
    if plan is None:
        plan = plan_jobs(protocol, plan_request(request), AssetStore(request.assets))
    if not plan.methods:
        raise EvalkitError(" ; ".join(plan.errors) or "no methods to run")
    for note in plan.notes:
        display.note(note)
    for error in plan.errors:  # the valid methods still run; these are reported and make the exit status 1
        display.note(f"error: {error}")
    root = Path(request.out)
    command = request.command or shlex.join(sys.argv)
    lock = RootLock(root, command).acquire(wait=request.wait, notify=display.note)
    try:
        store = ResultsStore(root)
        try:
            _recover(store, display)
            run = _Run(request, protocol, list(metrics), choice, policy, plan, store, display, imports or {})
            with sigterm_interrupts():
                return run.execute(command)
        finally:
            store.close()
    finally:
        lock.release()


def plan_request(request: RunRequest) -> PlanRequest:
    return PlanRequest(
        selectors=request.methods,
        resolutions=request.resolutions,
        seeds=request.seeds,
        precision=request.precision,
        params=request.params,
        sweep=request.sweep,
    )


def _recover(store: ResultsStore, display: ConsoleDisplay) -> None:
    """What a killed run left behind: runs still marked ``running`` and half-written PNGs. Called under the lock,
    which proves that no other process is writing this root."""
    stale = store.mark_interrupted(detected_by=f"evalkit run (pid {os.getpid()})")
    if stale:
        display.note(f"marked {len(stale)} earlier run(s) whose process is gone as interrupted: {', '.join(stale)}")
    orphans = store.remove_orphans()
    if orphans:
        display.note(f"removed {len(orphans)} half-written output file(s) left by a killed run")


@dataclass
class _Run:
    """One execution: everything the results loop needs, so that it reads as plan -> schedule -> record."""

    request: RunRequest
    protocol: Protocol
    metrics: list[str]
    choice: ExecutorChoice
    policy: Policy
    plan: Plan
    store: ResultsStore
    display: ConsoleDisplay
    imports: dict[str, str]

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
            method_files=method_files.sources(),
            imports=self.imports,
        )

    def execute(self, command: str) -> RunSummary:
        request, protocol, store, specs = self.request, self.protocol, self.store, self.plan.jobs
        run_id = store.start_run(
            protocol.name,
            protocol.sha256,
            command,
            list(self.plan.methods),
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
        reducer = SetReducer(store, protocol.name, self.metrics, protocol.eval_size, AssetStore(request.assets))
        recorder = Recorder(store, run_id, protocol.name, protocol.eval_size, self.plan, reducer, self.display)
        try:
            self._record_imported_methods()
            store.attach_jobs(run_id, (s.key for s in reused))
            if reused:
                self.display.note(f"resuming: {len(reused)} of {len(specs)} jobs already finished in {store.path}")
            work: list[Work] = [*self._scoring_jobs(reused, statuses), *todo]
            executor = self.choice.build()
            executor.attach(store.root)
            scheduler = Scheduler(executor, self.policy, log=self.display.note)
            recorder.expect(work)
            with self.display.start(len(work), work[0] if work else None):
                for job, result in scheduler.run(work, self.config()):
                    recorder.record(job, result)
            if self.plan.replaces:
                kept = {s.key: s.pair_id for s in specs}
                superseded = store.remove_superseded(protocol.name, self.plan.replaces, kept)
                if superseded:
                    self.display.note(f"replaced {superseded} job(s) of {self.plan.replaces} whose file changed")
            status = "finished"
        except KeyboardInterrupt as exc:
            stopped_by = SIGTERM_NOTE if isinstance(exc, Terminated) else "interrupted: stopped by the user (Ctrl-C)"
            status, note = "interrupted", stopped_by
            raise
        except (sqlite3.OperationalError, OSError) as exc:
            note = f"failed: {type(exc).__name__}: {exc}"[:500]
            if disk_full(exc):
                raise EvalkitError(
                    f"the results root {store.root} is full ({exc}): free space and rerun the same command; every "
                    f"job recorded so far is kept and the run resumes where it stopped"
                ) from None
            raise
        except BaseException as exc:
            note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            raise
        finally:
            try:
                store.finish_run(run_id, status, note)
            except (sqlite3.Error, OSError):
                pass  # e.g. still no space: the next run (or a reader) reports this run as interrupted
        plan_errors = self.plan.errors
        return RunSummary(run_id, store.root, len(specs), len(reused), recorder.counts, plan_errors, recorder.failures)

    def _record_imported_methods(self) -> None:
        for label, method in self.plan.methods.items():
            if method.cls is None:  # outputs made elsewhere: no model to count
                self.store.record_method(label, method.method, None, "imported", "imported", None, None, {})

    def _scoring_jobs(self, reused: list[JobSpec], statuses: dict[str, str]) -> list[ScoreJob]:
        """Finished outputs that lack a requested metric, as score jobs naming their stored PNG."""
        wanted = set(self.metrics)
        out = []
        for spec in reused:
            if statuses.get(spec.key) != "ok":
                continue
            missing = wanted - self.store.metric_names(spec.key, spec.eval_size)
            path = self.store.output_file(spec.key)
            if missing and path is not None:
                out.append(ScoreJob(spec, str(path), tuple(m for m in self.metrics if m in missing)))
        if out:
            self.display.note(f"scoring {len(out)} finished outputs that lack requested metrics")
        return out
