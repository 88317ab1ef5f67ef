"""Run jobs on a Slurm cluster through submitit: one job array per (method, weight set), results through a folder.

Each array task (:mod:`evalkit.executors.slurm_task`) loads the run's config and model once and takes jobs of its
group from a queue in the shared folder (:mod:`evalkit.executors.slurm_queue`) until the run ends, so a method's
resolutions (the scheduler's waves) and all its pairs share one model load per task and one Slurm scheduling
delay per task. ``array_parallelism`` caps the tasks of an array (and how many run at once). The driver alone
reads results and writes the results store, exactly as with the other executors: resume, no duplicates, the same
job keys and outputs.

Faults are results: the driver watches its tasks with ``squeue`` and turns the job a task was running when Slurm
ended it into ``timeout`` (the task's time limit ran out during its first job: the job does not fit in ``time``),
``oom`` (``OUT_OF_MEMORY``) or a lost worker the scheduler retries (cancelled, pre-empted, node failure, a time
limit reached after other jobs), with the Slurm job id and state in the reason. Ctrl-C and SIGTERM (which the
runner raises as Ctrl-C, :mod:`evalkit.interrupts`) cancel the run's arrays (``scancel``); a driver killed with
SIGKILL is detected by the next one on the same host, which cancels its tasks, takes the results they finished, and
submits the rest again.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.executors import slurm_jobs
from evalkit.executors.base import ExecutorBase, worker_device
from evalkit.executors.slurm_jobs import OOM_STATES, TIMEOUT_STATES, TaskState
from evalkit.executors.slurm_queue import Claim, Session, group_name, orphans, wait_for
from evalkit.params import Param
from evalkit.results import LOST, JobResult, Reason, failure
from evalkit.specs import Work
from evalkit.worker import WorkerConfig

INSTALL_HINT = "pip install 'evalkit[slurm]'"
POLL_S = 0.1  # result folder listing
STATE_POLL_S = 1.0  # squeue
SUBMIT_GRACE_S = 15.0  # a task squeue does not list yet right after sbatch is not taken for gone
WAIT_NOTE_S = 60.0  # tasks pending longer than this are reported, with Slurm's reason


def require_submitit():
    if importlib.util.find_spec("submitit") is None:
        raise EvalkitError(f"--executor slurm needs submitit, which is not installed: {INSTALL_HINT}")
    import submitit

    return submitit


def _count(value: Any, low: int = 1) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < low:
        raise ValueError(f"must be a whole number of at least {low}, got {value!r}")
    return int(value)


def _seconds(value: Any) -> float:
    seconds = float(value)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return seconds


class SlurmExecutor(ExecutorBase):
    """Slurm job arrays through submitit; options are sbatch's (``--executor-opt NAME=VALUE`` or a protocol's
    ``[executor.slurm]`` table)."""

    name = "slurm"
    summary = "Slurm job arrays through submitit, one per (method, weight set) (docs/scale-out.md)"
    remote_devices = True
    options = {
        "folder": Param(
            None, "shared folder for job specs and results (default RESULTS/slurm; every node must mount it)"
        ),
        "partition": Param(None, "Slurm partition (default: the cluster's default partition)"),
        "account": Param(None, "Slurm account to charge"),
        "qos": Param(None, "Slurm quality of service"),
        "gpus_per_task": Param(
            None, "GPUs per task (default 1 with --device cuda, none on CPU)", check=lambda v: _count(v, 0)
        ),
        "cpus_per_task": Param(
            None, "CPUs per task; torch uses that many threads (default: Slurm's, usually 1)", check=_count
        ),
        "mem": Param(None, "memory per task, e.g. 16G (sbatch --mem)", check=slurm_jobs.check_mem),
        "time": Param(
            None,
            "time limit of each task: minutes, M:S, H:M:S or D-H:M:S (default: the partition's)",
            check=slurm_jobs.check_time,
        ),
        "array_parallelism": Param(4, "tasks per (method, weight set) array, all may run at once", check=_count),
        "sbatch": Param(
            None, "further sbatch flags, e.g. '--constraint=a100 --exclusive'", check=slurm_jobs.check_sbatch
        ),
        "idle_timeout": Param(120.0, "seconds a task waits for more work of its method before it ends", check=_seconds),
    }

    @classmethod
    def check(cls, options: dict[str, Any], device: str) -> None:
        require_submitit()
        if shutil.which("sbatch") is None:
            raise EvalkitError("--executor slurm needs Slurm's sbatch on PATH: run evalkit on a Slurm login node")
        partition = options.get("partition")
        if partition:
            known = slurm_jobs.partitions()
            if partition not in known:
                raise EvalkitError(
                    f"Slurm has no partition '{partition}' (partitions: {', '.join(known) or 'none'}): "
                    f"fix --executor-opt partition=..."
                )
        if options.get("gpus_per_task") and not device.startswith("cuda"):
            raise EvalkitError(
                f"--executor-opt gpus_per_task={options['gpus_per_task']} reserves GPUs but --device is {device}: "
                f"add --device cuda"
            )

    def __init__(
        self,
        folder: str | None = None,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        gpus_per_task: int | None = None,
        cpus_per_task: int | None = None,
        mem: str | None = None,
        time: str | None = None,
        array_parallelism: int = 4,
        sbatch: dict[str, Any] | None = None,
        idle_timeout: float = 120.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve() if folder else None
        self.sbatch = {
            "partition": partition,
            "account": account,
            "qos": qos,
            "gpus_per_task": gpus_per_task,
            "cpus_per_task": cpus_per_task,
            "mem": mem,
        }
        self.time = time
        self.array_parallelism = int(array_parallelism)
        self.extra = dict(sbatch or {})
        self.idle_timeout = float(idle_timeout)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._session: Session | None = None
        self._config: WorkerConfig | None = None
        self._tasks: dict[str, tuple[str, float]] = {}  # task -> (group, submitted at)
        self._ended: dict[str, TaskState] = {}
        self._served: Counter[str] = Counter()  # task -> results it returned
        self._seq = itertools.count()
        self._failed = False  # keep the folder (the tasks' logs) when something went wrong
        self._next_wait_note = 0.0

    def attach(self, results_root: Path) -> None:
        if self.folder is None:
            self.folder = Path(results_root).resolve() / "slurm"

    def describe(self) -> str | None:
        given = {k: v for k, v in self.sbatch.items() if v is not None}
        limits = ", ".join(f"{k}={v}" for k, v in given.items()) or "the cluster's defaults"
        return (
            f"slurm executor: one array per (method, weight set), up to {self.array_parallelism} tasks each; "
            f"{limits}; time {self.time or 'the partition default'}; folder {self.folder or 'RESULTS/slurm'}"
        )

    # -- session ------------------------------------------------------------------------------------------------
    def _open(self, config: WorkerConfig) -> Session:
        if self._session is None:
            folder = self.folder or Path.cwd() / "evalkit-slurm"
            self._session = Session.create(folder)
            self._adopt_orphans(folder, config)
        if self._config is not config:
            self._session.write_config(config)
            self._config = config
        return self._session

    def _adopt_orphans(self, folder: Path, config: WorkerConfig) -> None:
        """Cancel the tasks of drivers on this host that died (SIGKILL), take the results they finished for the
        same config, and remove their folders."""
        assert self._session is not None
        for orphan in orphans(folder, self._session.root):
            slurm_jobs.cancel(orphan.job_ids())
            taken = 0
            try:
                same = orphan.read_config() == config
            except Exception:  # noqa: BLE001 - an unreadable config: nothing is taken over
                same = False
            if same:
                for path in orphan.results():
                    os.replace(path, self._session.root / "results" / path.name)
                    taken += 1
            self.log(
                f"slurm: a run killed earlier left {orphan.root.name}: cancelled its tasks"
                + (f", took {taken} finished result(s)" if taken else "")
            )
            orphan.remove()

    def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        session.close_groups()
        ids = session.job_ids()
        slurm_jobs.cancel(ids)
        if not wait_for(lambda: not slurm_jobs.active_tasks(ids), timeout=30.0, interval=0.5):
            self.log(f"slurm: tasks still listed after scancel: {', '.join(slurm_jobs.active_tasks(ids))}")
        if self._failed:
            self.log(f"slurm: the tasks' logs are kept in {session.root / 'submitit'}")
        else:
            session.remove()
        self._config = None

    # -- submission ---------------------------------------------------------------------------------------------
    def _parameters(self, config: WorkerConfig, method: str) -> dict[str, Any]:
        params = {k: v for k, v in self.sbatch.items() if v is not None}
        if config.device.startswith("cuda") and "gpus_per_task" not in params:
            params["gpus_per_task"] = 1
        extra = dict(self.extra)
        delay = 90
        if self.time:
            extra["time"] = self.time
            delay = max(1, min(90, slurm_jobs.time_seconds(self.time) // 10))
        return {
            **params,
            "time": None,  # submitit's default of 5 minutes would override the partition's
            "job_name": f"evalkit-{method}",
            "array_parallelism": self.array_parallelism,
            "signal_delay_s": delay,
            "stderr_to_stdout": True,
            "additional_parameters": extra,
        }

    def _submit(self, session: Session, config: WorkerConfig, group: str, method: str, count: int) -> None:
        submitit = require_submitit()
        from evalkit.executors.slurm_task import serve

        executor = submitit.SlurmExecutor(folder=session.root / "submitit", max_num_timeout=0)
        executor.update_parameters(**self._parameters(config, method))
        root = str(session.root)
        try:
            jobs = executor.map_array(serve, [root] * count, [group] * count, [self.idle_timeout] * count)
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal, as one line
            text = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()] or [str(exc)]
            raise EvalkitError(f"sbatch refused the {method} array: {text[0][:300]}: check --executor-opt") from None
        ids = [str(job.job_id) for job in jobs]
        session.record_jobs(ids)
        now = time.monotonic()
        for task in ids:
            self._tasks[task] = (group, now)
        self.log(
            f"slurm: array {slurm_jobs.array_id(ids[0])} for {method}: {count} task(s), "
            f"logs in {session.root / 'submitit'}"
        )

    def _top_up(self, session: Session, config: WorkerConfig, methods: dict[str, str]) -> None:
        """Every group with queued jobs gets tasks: up to ``array_parallelism`` alive per group."""
        claimed = Counter(c.group for c in session.claims())
        for group, method in methods.items():
            queued = len(session.queued(group))
            if not queued:
                continue
            alive = sum(1 for t, (g, _) in self._tasks.items() if g == group and t not in self._ended)
            need = min(self.array_parallelism, queued + claimed[group]) - alive
            if need > 0:
                self._submit(session, config, group, method, need)

    # -- the wave -----------------------------------------------------------------------------------------------
    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        if not specs:
            return
        session = self._open(config)
        pending = {spec.key: spec for spec in specs}
        methods: dict[str, str] = {}
        for spec in specs:
            group = group_name(spec.method, spec.weight_set)
            methods[group] = spec.method
            if not session.has_result(spec.key):  # a result taken over from a killed driver needs no task
                session.put(group, next(self._seq), spec)
        try:
            self._top_up(session, config, methods)
            next_poll = time.monotonic() + STATE_POLL_S
            while pending:
                got = False
                for path in session.results():
                    key = path.name.removesuffix(".pkl")
                    if key not in pending:
                        continue  # a later wave's, taken over from a killed driver
                    task, result = session.read_result(path)
                    path.unlink(missing_ok=True)
                    self._served[task] += 1
                    del pending[key]
                    got = True
                    yield result
                if time.monotonic() >= next_poll:
                    for result in self._reap(session, config, pending):
                        del pending[result.key]
                        yield result
                    self._top_up(session, config, methods)
                    next_poll = time.monotonic() + STATE_POLL_S
                if not got:
                    time.sleep(POLL_S)
        finally:
            session.unqueue(set(pending))  # the scheduler no longer waits for these: no task may start them

    def _reap(self, session: Session, config: WorkerConfig, pending: dict[str, Work]) -> list[JobResult]:
        """Results for the jobs of tasks Slurm ended: what each task was running, and start failures."""
        now = time.monotonic()
        watch = [t for t in self._tasks if t not in self._ended]
        out: list[JobResult] = []
        states = slurm_jobs.query(watch)
        waiting = [state for state in states.values() if state.state == "PENDING"]
        if waiting:
            self._release_idle(session)
            self._report_waiting(waiting, now)
        all_claims: list[Claim] | None = None  # listed once per poll, and only when a task has ended
        for task, state in states.items():
            group, submitted = self._tasks[task]
            if state.active or (state.state == slurm_jobs.GONE and now - submitted < SUBMIT_GRACE_S):
                continue
            self._ended[task] = state
            if all_claims is None:
                all_claims = session.claims()
            claims = [c for c in all_claims if c.task == task]
            for claim in claims:
                if session.has_result(claim.key):
                    continue  # finished just before the end: the result is read on the next pass
                claim.path.unlink(missing_ok=True)
                if claim.key in pending:
                    out.append(self._lost(claim, state, pending[claim.key], config))
            if not claims and not session.is_ready(task) and state.state != "CANCELLED":
                spec = session.take_queued(group)
                if spec is not None and spec.key in pending:
                    self._failed = True
                    out.append(
                        failure(
                            spec.key,
                            LOST,
                            f"{state.describe()} before evalkit started in it: {self._log_tail(session, task)}",
                            Reason.START_FAILED,
                            worker_device(config.device),
                        )
                    )
        return out

    def _report_waiting(self, waiting: list[TaskState], now: float) -> None:
        """A line when tasks have waited in Slurm's queue for a minute (then every 10 minutes), with Slurm's reason:
        a run that waits for resources, a reservation or a QOS limit must not look hung."""
        oldest = min(self._tasks[state.task][1] for state in waiting)
        if now - oldest < WAIT_NOTE_S or now < self._next_wait_note:
            return
        reasons = Counter(state.reason or "?" for state in waiting)
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        self.log(f"slurm: {len(waiting)} task(s) waiting in the queue for {now - oldest:.0f}s ({why})")
        self._next_wait_note = now + 600

    @staticmethod
    def _release_idle(session: Session) -> None:
        """Tasks of ours wait for resources: the tasks of groups with nothing queued or running end, so the waiting
        ones start (a group's later waves then get fresh tasks)."""
        busy = {c.group for c in session.claims()}
        for group in session.groups():
            if group not in busy and not session.queued(group):
                session.release(group)

    def _lost(self, claim: Claim, state: TaskState, spec: Work, config: WorkerConfig) -> JobResult:
        """The result of a job whose task Slurm ended while it ran: timeout, oom or a retry."""
        device = worker_device(config.device)
        self._failed = True
        where = state.describe()
        if state.state in TIMEOUT_STATES and self._served[claim.task] == 0:
            limit = self.time or "the partition's default"
            return failure(
                spec.key,
                "timeout",
                f"{where}: the job did not finish within the task's time limit ({limit}); "
                f"raise --executor-opt time=...",
                Reason.TIMEOUT,
                device,
            )
        if state.state in OOM_STATES:
            return failure(
                spec.key, "oom", f"out of memory: {where} (raise --executor-opt mem=...)", Reason.OOM, device
            )
        if state.state in TIMEOUT_STATES:
            where += f" after {self._served[claim.task]} other job(s); the job goes to a fresh task"
        return failure(spec.key, LOST, where, Reason.LOST, device)

    @staticmethod
    def _log_tail(session: Session, task: str) -> str:
        """The last line of a task's log (submitit writes ``<array>_<index>_0_log.out``)."""
        for path in (session.root / "submitit").glob(f"{task}_*log.out"):
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1][:300]
        return f"no log in {session.root / 'submitit'}"
