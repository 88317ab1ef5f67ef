"""The body of one Slurm array task: load the run's config once, then run jobs of one (method, weight set) group
from the shared folder until the driver closes the group, the task is told to stop, or no work comes for a while.

Why one task serves many jobs (and several waves): the model loads once per task, so a 1K-to-4K sweep of a method
does not reload it per resolution, and Slurm's scheduling latency is paid once per task, not per job.

Signals: Slurm sends ``SIGUSR2`` before the time limit and on pre-emption (``--signal``, set by the executor); the
task then finishes the job it is running and takes no other, so the remaining jobs go to a fresh task instead of
being killed half-way. ``SIGTERM`` (``scancel``) is left to submitit, and Slurm kills the task after ``KillWait``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from evalkit.executors.base import worker_device
from evalkit.executors.slurm_queue import Session

POLL_S = 0.1  # how often an idle task looks at its queue (a listing of one folder on the shared filesystem)


def task_id() -> str:
    """``ARRAYJOB_INDEX`` as squeue prints it (a plain job id outside an array)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")


def slurm_environment(task: str) -> dict[str, Any]:
    """What every job run by this task adds to its recorded environment (the leaderboard shows node and ids)."""
    env = {
        "node": socket.gethostname(),
        "slurm_job_id": task,
        "slurm_cluster": os.environ.get("SLURM_CLUSTER_NAME"),
        "slurm_partition": os.environ.get("SLURM_JOB_PARTITION"),
        "slurm_cpus": os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE"),
    }
    return {k: v for k, v in env.items() if v}


def task_threads() -> int:
    """The CPUs Slurm gave this task: timings and CPU float reductions depend on the thread count."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        raw = os.environ.get(name, "")
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    return 1


class _Stop:
    """Set by SIGUSR2: finish the current job, take no other."""

    def __init__(self) -> None:
        self.requested = False
        try:
            signal.signal(signal.SIGUSR2, self._handler)
        except ValueError:  # not the main thread (only in tests): no signal handling
            pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True


def serve(session_root: str, group: str, idle_timeout: float) -> int:
    """Run queued jobs of ``group`` until closed, stopped or idle for ``idle_timeout`` seconds; returns how many."""
    import torch

    from evalkit.worker import JobContext

    session = Session(Path(session_root))
    task = task_id()
    config = session.read_config()
    device = worker_device(config.device)
    if not device.startswith("cuda"):
        torch.set_num_threads(task_threads())
    context = JobContext(dataclasses.replace(config, device=device), environment_extra=slurm_environment(task))
    stop = _Stop()
    session.mark_ready(task)
    served = 0
    idle_since = time.monotonic()
    while not stop.requested:
        taken = session.claim(group, task)
        if taken is None:
            if session.closed(group) or time.monotonic() - idle_since > idle_timeout:
                break
            time.sleep(POLL_S)
            continue
        claim, spec = taken
        session.finish(claim, context.run_checked(spec, "Slurm"))
        served += 1
        idle_since = time.monotonic()
    return served
