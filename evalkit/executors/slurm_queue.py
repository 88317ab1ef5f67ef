"""The folder the Slurm executor's driver and its array tasks share: job specs go in, results come out.

Why a folder: Slurm moves no data, and a cluster's nodes share a filesystem, not a network port the driver could
listen on. Every step is one atomic ``rename`` on that filesystem, so a task killed at any instant leaves either a
claimed spec (which the driver turns into a lost/timeout/oom result from the task's Slurm state) or a complete
result, never half of one. The driver alone reads results and writes the results store (one writer per root).

Layout of one driver session (``<folder>/<session>/``)::

    driver.json                       host, pid and start of the driver (a later driver cancels an orphan's jobs)
    config.pkl                        the run's WorkerConfig
    jobs.txt                          Slurm job ids submitted by this session, one per line
    groups/<group>/queue/<seq>-<key>.spec          a job waiting for a task of its (method, weight set) array
    groups/<group>/claimed/<task>/<seq>-<key>.spec a job a task is running (task = Slurm ARRAYJOB_INDEX)
    groups/<group>/closed             no more work will come: idle tasks end
    groups/<group>/release            idle tasks end: another method's tasks wait for the CPUs/GPUs they hold
    ready/<task>                      the task started Python, evalkit and torch
    results/<key>.pkl                 (task, JobResult) of a finished job
    submitit/                         submitit's batch files and each task's log

Pickle is safe here because only this user's driver and tasks write the folder (it is created 0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.results import JobResult
from evalkit.rootlock import pid_alive
from evalkit.specs import Work
from evalkit.worker import WorkerConfig

SPEC = ".spec"
RESULT = ".pkl"


def group_name(method: str, weight_set: str | None) -> str:
    """A folder name for a (method, weight set) group: readable, and distinct for distinct groups."""
    raw = f"{method}\0{weight_set or ''}"
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{method}-{weight_set or 'default'}")[:60]
    return f"{readable}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary name in the same folder (never globbed)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Claim:
    """A job a task took from its group's queue: the claimed file, its group and the job key."""

    path: Path
    group: str
    task: str
    key: str


def _key_of(name: str) -> str:
    return name.removesuffix(SPEC).split("-", 1)[1]


class Session:
    """One driver's folder; the same class serves the driver (``create``) and the tasks (``Session(root)``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- driver -----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path) -> Session:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        root = folder / f"{stamp}-{socket.gethostname()}-{os.getpid()}"
        root.mkdir(mode=0o700)
        for sub in ("groups", "ready", "results", "submitit"):
            (root / sub).mkdir()
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": stamp}
        _write_atomic(root / "driver.json", json.dumps(info).encode())
        return cls(root)

    def write_config(self, config: WorkerConfig) -> None:
        _write_atomic(self.root / "config.pkl", pickle.dumps(config))

    def put(self, group: str, seq: int, spec: Work) -> None:
        queue = self.root / "groups" / group / "queue"
        queue.mkdir(parents=True, exist_ok=True)
        _write_atomic(queue / f"{seq:08d}-{spec.key}{SPEC}", pickle.dumps(spec))
        (self.root / "groups" / group / "release").unlink(missing_ok=True)

    def groups(self) -> list[str]:
        return sorted(p.name for p in (self.root / "groups").iterdir() if p.is_dir())

    def release(self, group: str) -> None:
        """Idle tasks of ``group`` end (their CPUs and GPUs go to another method's waiting tasks)."""
        (self.root / "groups" / group / "release").touch()

    def queued(self, group: str) -> list[Path]:
        return sorted((self.root / "groups" / group / "queue").glob(f"*{SPEC}"))

    def unqueue(self, keys: set[str]) -> None:
        """Take jobs nobody claimed yet out of every queue (a wave the scheduler stopped)."""
        for path in (self.root / "groups").glob(f"*/queue/*{SPEC}"):
            if _key_of(path.name) in keys:
                path.unlink(missing_ok=True)

    def take_queued(self, group: str) -> Work | None:
        """Remove and return the first queued job of ``group`` (for a start failure's result)."""
        for path in self.queued(group):
            try:
                spec = pickle.loads(path.read_bytes())
                path.unlink()
            except FileNotFoundError:
                continue  # a task claimed it meanwhile
            return spec
        return None

    def claims(self) -> list[Claim]:
        out = []
        for path in (self.root / "groups").glob(f"*/claimed/*/*{SPEC}"):
            out.append(Claim(path, path.parents[2].name, path.parent.name, _key_of(path.name)))
        return out

    def results(self) -> list[Path]:
        return sorted((self.root / "results").glob(f"*{RESULT}"))

    @staticmethod
    def read_result(path: Path) -> tuple[str, JobResult]:
        task, result = pickle.loads(path.read_bytes())
        return task, result

    def has_result(self, key: str) -> bool:
        return (self.root / "results" / f"{key}{RESULT}").exists()

    def close_groups(self) -> None:
        for group in (self.root / "groups").iterdir():
            (group / "closed").touch()

    def record_jobs(self, job_ids: list[str]) -> None:
        with open(self.root / "jobs.txt", "a") as fh:
            fh.writelines(f"{job_id}\n" for job_id in job_ids)

    def job_ids(self) -> list[str]:
        path = self.root / "jobs.txt"
        return path.read_text().split() if path.exists() else []

    def driver(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.root / "driver.json").read_text()))
        except (OSError, ValueError):
            return {}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- task -------------------------------------------------------------------------------------------------
    def read_config(self) -> WorkerConfig:
        config: WorkerConfig = pickle.loads((self.root / "config.pkl").read_bytes())
        return config

    def mark_ready(self, task: str) -> None:
        (self.root / "ready" / task).touch()

    def is_ready(self, task: str) -> bool:
        return (self.root / "ready" / task).exists()

    def claim(self, group: str, task: str) -> tuple[Claim, Work] | None:
        """Take the first queued job of ``group`` for ``task`` (a rename: two tasks never get the same job)."""
        mine = self.root / "groups" / group / "claimed" / task
        mine.mkdir(parents=True, exist_ok=True)
        for path in self.queued(group):
            target = mine / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another task was faster
            return Claim(target, group, task, _key_of(path.name)), pickle.loads(target.read_bytes())
        return None

    def finish(self, claim: Claim, result: JobResult) -> None:
        """The result first, then the claim goes: a task killed in between leaves a result the driver takes."""
        _write_atomic(self.root / "results" / f"{claim.key}{RESULT}", pickle.dumps((claim.task, result)))
        claim.path.unlink(missing_ok=True)

    def closed(self, group: str) -> bool:
        """No more work for ``group``: the run ended, or the driver released its idle tasks."""
        folder = self.root / "groups" / group
        return (folder / "closed").exists() or (folder / "release").exists()


def orphans(folder: Path, current: Path | None = None) -> Iterator[Session]:
    """Sessions in ``folder`` whose driver ran on this host and is gone (SIGKILL, lost terminal): their tasks are
    cancelled and their finished results taken by the next driver. Drivers on other hosts cannot be checked from
    here; their idle tasks end after ``idle_timeout``."""
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for root in sorted(folder.iterdir()):
        if not root.is_dir() or root == current:
            continue
        session = Session(root)
        info = session.driver()
        if info.get("host") != host or not isinstance(info.get("pid"), int):
            continue
        if not pid_alive(info["pid"]):
            yield session


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
