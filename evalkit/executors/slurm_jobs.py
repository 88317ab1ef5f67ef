"""What Slurm says about the executor's array tasks, and what a task's end state means for the job it was running.

States come from ``squeue --states=all`` (which also lists jobs that ended within the controller's ``MinJobAge``),
not ``sacct``: accounting is optional in Slurm and often off on small clusters, while the controller always answers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from evalkit.errors import EvalkitError

# states in which a task may still claim or finish jobs
ACTIVE: frozenset[str] = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
TIMEOUT_STATES = frozenset({"TIMEOUT", "DEADLINE"})
OOM_STATES = frozenset({"OUT_OF_MEMORY"})
GONE = "GONE"  # the controller no longer knows the job (purged after MinJobAge, or never accepted)


@dataclass(frozen=True)
class TaskState:
    """One array task as the controller sees it."""

    task: str  # ARRAYJOB_INDEX (or a plain job id)
    state: str
    reason: str = ""
    node: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        """``Slurm job 12_3 TIMEOUT (TimeLimit) on node vm`` for failure messages."""
        reason = f" ({self.reason})" if self.reason and self.reason not in ("None", "(null)") else ""
        node = f" on node {self.node}" if self.node and self.node not in ("(null)", "") else ""
        return f"Slurm job {self.task} {self.state}{reason}{node}"


def _run(command: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise EvalkitError(f"'{command[0]}' is not on PATH: run evalkit on a Slurm login node") from None
    except subprocess.TimeoutExpired:
        raise EvalkitError(f"'{' '.join(command[:2])}' did not answer in {timeout:g}s: is slurmctld up?") from None


def array_id(task: str) -> str:
    return task.split("_", 1)[0]


def query(tasks: Iterable[str]) -> dict[str, TaskState]:
    """The state of each task in ``tasks``; tasks the controller forgot are :data:`GONE`."""
    wanted = sorted(set(tasks))
    if not wanted:
        return {}
    arrays = sorted({array_id(t) for t in wanted})
    states = _squeue(arrays)
    if states is None:  # one id unknown makes squeue refuse them all: ask one array at a time
        states = {}
        for one in arrays:
            states.update(_squeue([one]) or {})
    return {t: states.get(t, TaskState(t, GONE)) for t in wanted}


def _squeue(arrays: list[str]) -> dict[str, TaskState] | None:
    done = _run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r|%N", "--jobs", ",".join(arrays)])
    if done.returncode != 0:
        if "invalid job id" in done.stderr.lower():
            return None
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise EvalkitError(f"squeue failed ({first}): is the Slurm controller reachable from here?")
    out: dict[str, TaskState] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            out[parts[0]] = TaskState(parts[0], parts[1], parts[2], parts[3])
    return out


def cancel(job_ids: Iterable[str]) -> None:
    """``scancel`` whole arrays (their pending and running tasks); ids Slurm no longer knows are ignored."""
    arrays = sorted({array_id(j) for j in job_ids})
    if arrays:
        _run(["scancel", "--quiet", *arrays])


def active_tasks(job_ids: Iterable[str]) -> list[str]:
    """Tasks of these arrays still pending or running (e.g. to prove a cancel took)."""
    arrays = sorted({array_id(j) for j in job_ids})
    if not arrays:
        return []
    done = _run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs", ",".join(arrays)])
    if done.returncode != 0:
        return []
    return [line.split("|")[0] for line in done.stdout.splitlines() if line.strip()]


def partitions() -> list[str]:
    done = _run(["sinfo", "--noheader", "--format=%P"])
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise EvalkitError(f"sinfo failed ({first}): start the Slurm controller, or run on a login node")
    return [p.strip().rstrip("*") for p in done.stdout.split() if p.strip()]


# -- option values ------------------------------------------------------------------------------------------------
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def time_seconds(text: str) -> int:
    """Seconds of a Slurm time limit: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S`` (sbatch's forms)."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time: write minutes (30), M:S (0:20), H:M:S (2:00:00) or D-H:M:S")
    d, a, b, c = (int(match[g]) if match[g] is not None else None for g in ("d", "a", "b", "c"))
    if d is not None:  # D-H, D-H:M, D-H:M:S
        seconds = d * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        seconds = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:
        seconds = (a or 0) * 60 + b
    else:
        seconds = (a or 0) * 60
    if seconds <= 0:
        raise ValueError(f"{text!r} is no time at all: give a positive limit")
    return seconds


def check_time(value: object) -> str | None:
    if value is None or value == "":
        return None
    time_seconds(str(value))
    return str(value).strip()


def check_mem(value: object) -> str | None:
    """sbatch's ``--mem``: a whole number with an optional K/M/G/T unit (megabytes without one)."""
    if value is None or value == "":
        return None
    text = str(value).strip().upper().removesuffix("B")
    if not re.fullmatch(r"[1-9]\d*[KMGT]?", text):
        raise ValueError(f"{value!r} is not a Slurm memory size: write e.g. 16G or 16000M")
    return text


def check_sbatch(value: object) -> dict[str, object] | None:
    """Extra sbatch flags (``--constraint=a100 --exclusive``) as submitit's ``additional_parameters``."""
    import shlex

    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, object] = {}
    for token in shlex.split(str(value)):
        match = re.fullmatch(r"--([a-z][a-z0-9-]*)(?:=(.+))?", token)
        if not match:
            raise ValueError(f"{token!r} is not a long sbatch flag: write --name=value or --flag (e.g. --exclusive)")
        name = match[1]
        if name in ("array", "output", "error", "wrap", "parsable"):
            raise ValueError(f"--{name} is set by evalkit and cannot be passed through sbatch=...")
        out[name] = match[2] if match[2] is not None else True
    return out
