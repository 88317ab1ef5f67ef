"""Run jobs on a Ray cluster: long-lived worker actors, each result streamed back to the driver.

Why actors rather than bare tasks: a worker that keeps its :class:`~evalkit.worker.JobContext` loads each
model once (like the local executor), and an actor that holds ``num_gpus=1`` keeps *its* GPU for its whole
life. Bare Ray tasks that reuse a process could be handed a different GPU than the one the process
initialised CUDA on, which is why Ray recycles GPU task workers after every call by default
(ray-project/ray#29624) - that would reload every model for every job. Every job is still a Ray (actor) task
with explicit resources: a whole GPU for any CUDA job (never a fraction - timings must not share a device)
and ``num_cpus`` for CPU jobs.

The driver alone writes the results store: workers return :class:`~evalkit.results.JobResult` objects (PNG
bytes, timings, metric values) and :func:`evalkit.runner.run_benchmark` records each in its own transaction,
so resume and no-duplicates hold exactly as with the local executor, also across executors.

Failures: a lost worker or node (crashed process, dead node, dead actor) comes back as a ``lost`` result, which the
scheduler retries (bounded, :mod:`evalkit.scheduler`); a worker that cannot start comes back ``lost`` with reason
``worker-start-failed``, and the scheduler gives up after repeated ones. Out-of-memory is a result, never
retried: the worker reports ``oom`` itself (CUDA/host allocation failure inside the job), and a worker killed by
Ray's memory monitor is recorded as ``oom`` too.

Weights and images reach the workers through the same resolver (cache -> mirror -> package -> download) as
locally: the driver ships its :class:`~evalkit.assets.AssetSettings` and each worker resolves on its own
node (see docs/scale-out.md for shared and non-shared filesystems)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

from evalkit.errors import EvalkitError
from evalkit.executors.base import ExecutorBase, worker_device
from evalkit.params import Param
from evalkit.results import LOST, JobResult, Reason, failure
from evalkit.specs import Work
from evalkit.worker import JobContext, WorkerConfig, method_version_problem

INSTALL_HINT = "pip install 'evalkit[ray]'"
# Driver environment that workers need to resolve assets exactly like the driver (pyiqa finds weights via
# TORCH_HOME); forwarded to the Ray job's workers when set, since Ray workers inherit `ray start`'s environment.
FORWARDED_ENV = (
    "EVALKIT_HOME",
    "EVALKIT_WEIGHTS_MIRROR",
    "EVALKIT_DATA_MIRROR",
    "EVALKIT_OFFLINE",
    "TORCH_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
FailureKind = Literal["retry", "oom", "error"]


def require_ray():
    """Import Ray or fail with one line that says how to install it (Ray is an optional extra)."""
    if importlib.util.find_spec("ray") is None:
        raise EvalkitError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}")
    import ray

    return ray


def classify_failure(exc: BaseException) -> FailureKind:
    """What a Ray-level exception from ``ray.get`` means for the job.

    ``retry``: the worker process or its node was lost (nothing wrong with the job itself); ``oom``: Ray's
    memory monitor killed the worker, which is an out-of-memory outcome of the job, not a transient failure;
    ``error``: anything else (e.g. evalkit failing to import on a node), which retrying would not fix.
    """
    from ray import exceptions as rx

    text = str(exc).lower()
    if isinstance(exc, rx.OutOfMemoryError) or (
        isinstance(exc, rx.RayActorError)
        and any(sign in text for sign in ("outofmemoryerror", "low on memory", "out of memory"))
    ):
        return "oom"
    if isinstance(exc, rx.RayActorError) and getattr(exc, "actor_init_failed", False):
        return "error"
    lost = (
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.LocalRayletDiedError,
        rx.RayActorError,
        rx.ObjectLostError,
        rx.RaySystemError,
    )
    if isinstance(exc, lost):
        return "retry"
    if isinstance(exc, rx.RayTaskError) and isinstance(getattr(exc, "cause", None), lost):
        return "retry"
    return "error"


def resources_for(device: str, cpus_per_job: float) -> dict[str, float]:
    """Explicit Ray resources for one worker: a whole GPU for CUDA jobs, ``cpus_per_job`` CPUs otherwise."""
    if device.startswith("cuda"):
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": cpus_per_job}


def _cpus(value: Any) -> float | None:
    if value is None or value == "":
        return None
    cpus = float(value)
    if not 0 < cpus < float("inf"):
        raise ValueError(f"must be a positive number of CPUs, got {value!r}")
    return cpus


def _count(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
        raise ValueError(f"must be a positive whole number, got {value!r}")
    return int(value)


class JobWorker:
    """Body of the Ray actor: one :class:`JobContext` per worker process, so models load once per worker."""

    def __init__(self, config: WorkerConfig, context_factory: Callable[..., Any], threads: int) -> None:
        import torch

        if not config.device.startswith("cuda"):
            # Timings and numerics of a CPU job depend on its thread count: pin it to the CPUs Ray reserved.
            torch.set_num_threads(max(1, threads))
        self.device = config.device
        self.context = context_factory(config, environment_extra=_node_environment())

    def run(self, spec: Work) -> JobResult:
        problem = method_version_problem(spec, "Ray")
        if problem:
            return failure(spec.key, "error", problem, Reason.BAD_INPUT, self.device)
        return self.context.run(spec)


class RayExecutor(ExecutorBase):
    """Runs jobs on the Ray cluster at ``address``: ``HOST:PORT``, ``auto``, or ``None`` ($RAY_ADDRESS, else a
    fresh local Ray). Worker actors live for the whole run (returned to a pool between waves), so each loads a
    model once per run, not once per resolution."""

    name = "ray"
    remote_devices = True
    summary = "Ray actors on a cluster (pip install 'evalkit[ray]'; docs/scale-out.md)"
    options = {
        "address": Param(None, "Ray cluster: auto or HOST:PORT (--ray-address; default $RAY_ADDRESS, else local)"),
        "cpus_per_job": Param(None, "CPUs per CPU job (default $EVALKIT_RAY_CPUS_PER_JOB, else 1)", check=_cpus),
        "workers": Param(
            None, "worker actors (default $EVALKIT_RAY_WORKERS, else what the cluster fits)", check=_count
        ),
    }

    @classmethod
    def check(cls, options: dict[str, Any], device: str) -> None:
        require_ray()  # before anything is recorded: one line saying how to install Ray

    def __init__(
        self,
        address: str | None = None,
        cpus_per_job: float | None = None,
        workers: int | None = None,
        context_factory: Callable[..., Any] = JobContext,
        log: Callable[[str], None] | None = None,
    ) -> None:
        require_ray()
        self.address = address
        self.cpus_per_job = _env_number("EVALKIT_RAY_CPUS_PER_JOB", cpus_per_job, 1.0, float)
        self.workers = _env_number("EVALKIT_RAY_WORKERS", workers, None, int)
        self.context_factory = context_factory
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._connected_here = False
        self._idle: list[Any] = []  # healthy actors kept between waves (each holds its loaded models)
        self._config: tuple[WorkerConfig, Any] | None = None  # the config and its object ref, put once per run

    def describe(self) -> str | None:
        return f"ray executor: {self.address or os.environ.get('RAY_ADDRESS') or 'a new local Ray cluster'}"

    def close(self) -> None:
        if self._idle:
            ray = require_ray()
            for actor in self._idle:
                _kill(ray, actor)
            self._idle.clear()
        self._config = None
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    # -- cluster ------------------------------------------------------------------------------------------
    def _connect(self, ray) -> bool:
        """Connect (or start a local Ray); True when this call did, so ``map`` disconnects only its own."""
        if ray.is_initialized():
            return False
        try:
            local = self.address is None and not os.environ.get("RAY_ADDRESS")
            extra: dict[str, Any] = {"include_dashboard": False} if local else {}
            env_vars = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
            if env_vars:
                extra["runtime_env"] = {"env_vars": env_vars}
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False, **extra)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
            first = (str(exc).splitlines() or [""])[0]
            raise EvalkitError(
                f"cannot connect to Ray at {where} ({first}): start it with 'ray start "
                f"--head' and pass --ray-address HOST:PORT (or auto)"
            ) from exc
        return True

    def _plan_workers(self, ray, device: str, jobs: int) -> tuple[int, dict[str, float]]:
        resources = resources_for(device, self.cpus_per_job)
        total = ray.cluster_resources()
        if device.startswith("cuda"):
            slots = int(total.get("GPU", 0))
            if slots < 1 and not self.workers:
                raise EvalkitError("the Ray cluster has no GPU: add GPU nodes, or run with --device cpu")
        else:
            slots = int(total.get("CPU", 0) // self.cpus_per_job)
            if slots < 1 and not self.workers:
                raise EvalkitError(
                    f"the Ray cluster has {total.get('CPU', 0):g} CPUs, fewer than the "
                    f"{self.cpus_per_job:g} each job needs: lower EVALKIT_RAY_CPUS_PER_JOB"
                )
        return max(1, min(self.workers or slots, jobs)), resources

    # -- executor protocol --------------------------------------------------------------------------------
    def _config_ref(self, ray, config: WorkerConfig) -> Any:
        if self._config is None or self._config[0] is not config:
            remote_config = dataclasses.replace(config, device=worker_device(config.device), executor="ray")
            self._config = (config, ray.put(remote_config))
        return self._config[1]

    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        if not specs:
            return
        ray = require_ray()
        if self._connect(ray):
            self._connected_here = True
        actors: list[Any] = []  # this wave's actors: idle ones reused first, new ones up to the plan
        inflight: dict[Any, tuple[Any, Work]] = {}
        try:
            count, resources = self._plan_workers(ray, config.device, len(specs))
            config_ref = self._config_ref(ray, config)
            actor_cls = ray.remote(JobWorker).options(max_restarts=0, max_concurrency=1, **resources)
            threads = max(1, int(self.cpus_per_job))

            def new_actor():
                actor = self._idle.pop() if self._idle else actor_cls.remote(config_ref, self.context_factory, threads)
                actors.append(actor)
                return actor

            totals = ray.cluster_resources()
            self.log(
                f"ray: {count} workers x {_describe(resources)} on cluster "
                f"{ray.get_runtime_context().gcs_address} ({totals.get('CPU', 0):g} CPU, "
                f"{totals.get('GPU', 0):g} GPU)"
            )
            queue = deque(specs)

            def submit(actor) -> None:
                spec = queue.popleft()
                inflight[actor.run.remote(spec)] = (actor, spec)

            for _ in range(count):
                submit(new_actor())
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                actor, spec = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    _kill(ray, actor)  # a worker that failed is never trusted with another job
                    actors.remove(actor)
                    actor = None
                    result = self._failure(exc, spec, config.device)
                yield result  # before replacing a failed worker: the scheduler may stop here
                if queue:
                    submit(actor if actor is not None else new_actor())
        finally:
            busy = {actor for actor, _ in inflight.values()}
            for actor in actors:  # a worker still running a job is killed (which ends the job); idle ones wait
                if actor in busy:
                    _kill(ray, actor)
                else:
                    self._idle.append(actor)

    @staticmethod
    def _failure(exc: BaseException, spec: Work, device: str) -> JobResult:
        """A Ray-level failure as a result: ``lost`` (the scheduler may retry), ``oom`` or ``error``."""
        kind = classify_failure(exc)
        text = _summary(exc)
        if getattr(exc, "actor_init_failed", False):
            return failure(spec.key, LOST, f"{type(exc).__name__}: {text}", Reason.START_FAILED, worker_device(device))
        if kind == "retry":
            return failure(spec.key, LOST, f"{type(exc).__name__}: {text}", Reason.LOST, worker_device(device))
        if kind == "oom":
            return failure(
                spec.key,
                "oom",
                f"out of memory: Ray killed the worker ({type(exc).__name__}: {text})",
                Reason.OOM,
                worker_device(device),
            )
        return failure(spec.key, "error", f"{type(exc).__name__}: {text}", Reason.EXCEPTION, worker_device(device))


def _node_environment() -> dict[str, Any]:
    """What a Ray worker adds to every job's environment: on a cluster the driver's machine says nothing about it."""
    import ray

    return {"node_ip": ray.util.get_node_ip_address(), "ray_version": ray.__version__}


def _summary(exc: BaseException) -> str:
    """One line for a Ray exception: the underlying ``Type: message`` when Ray wraps a traceback (a worker
    that failed in its constructor), else Ray's own first line."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    from ray.exceptions import RayTaskError

    wrapped = isinstance(exc, RayTaskError) or getattr(exc, "actor_init_failed", False)
    return (lines[-1] if wrapped else lines[0])[:300]


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - the actor may already be gone with its node
        pass


def _describe(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k.removeprefix('num_').upper().rstrip('S')}" for k, v in resources.items() if v)


def _env_number(name: str, given, default, kind):
    """An explicit argument wins, then the environment variable ``name``, then the default."""
    if given is not None:
        return kind(given)
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise EvalkitError(f"{name}={raw!r} is not a number: set it to e.g. {default or 1}") from None
