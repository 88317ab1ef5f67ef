"""One writer per results root: an advisory lock file that every ``evalkit run`` (local, isolated or Ray driver)
holds while it writes.

Two runs on one root would both compute every job (each sees the other's jobs as not yet finished) and race on the
same PNG paths. The lock is ``fcntl.flock`` on ``<root>/.evalkit.lock``: the kernel releases it when the holder dies,
however it dies, so a SIGKILLed run never leaves a stale lock. The file also records who holds it (pid, host,
command, since), so a refused second run can say which process to wait for. Readers (leaderboard, export, study
build) never take it and never write: they probe it (:meth:`RootLock.is_free`) to show runs whose process is gone as
``interrupted``; the next run, which holds the lock, records that (:meth:`evalkit.store.ResultsStore.mark_interrupted`).

``flock`` is advisory and local: on a network filesystem it works where the filesystem supports it (NFSv4 does), and
two drivers on different machines writing one shared root are not protected elsewhere.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from evalkit.errors import EvalkitError

LOCK_NAME = ".evalkit.lock"


class RootBusy(EvalkitError):
    """Another process writes this results root."""


class RootLock:
    """Exclusive advisory lock on a results root; use as a context manager or call :meth:`acquire`/:meth:`release`."""

    def __init__(self, root: str | Path, command: str = "") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.command = command or " ".join(sys.argv)
        self._fh: TextIO | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def holder(self) -> dict[str, Any]:
        """Who holds (or last held) the lock, as written in the lock file; ``{}`` when unknown."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def describe_holder(self) -> str:
        info = self.holder()
        if not info:
            return "another process"
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} ({info.get('command', '?')})"

    def what_to_do(self) -> str:
        """The advice for a busy root, by where its holder runs: a process on this machine can be checked, one on
        another machine (a shared root on NFS) cannot, and a dead client's lock lasts until its lease expires."""
        info = self.holder()
        host, pid = info.get("host"), info.get("pid")
        usual = "pass --wait to queue behind it, or write to another --out folder"
        if host and host != platform.node():
            return (
                f"evalkit cannot see processes on {host}: if that run is alive, wait for it or {usual}; if {host} "
                f"or its run died, the filesystem releases the lock when the dead client's lease expires "
                f"(NFSv4: about 90 s), or remove {self.path} once you are sure nothing on {host} writes this root"
            )
        if isinstance(pid, int) and not pid_alive(pid):
            return (
                f"pid {pid} is gone but a process it started still holds {self.path}: stop it "
                f"(fuser -v {self.path} names it), or {usual}"
            )
        return f"wait for it to finish, {usual}"

    def is_free(self) -> bool:
        """Whether no process holds the lock, probed without writing anything (a shared lock on a read-only
        handle, released at once): readers use it to tell a live run from one whose process is gone."""
        try:
            fh = open(self.path, encoding="utf-8")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell: assume a writer, so that nothing is reported dead by mistake
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            fh.close()  # closing releases the probe's shared lock
        return True

    def try_acquire(self) -> bool:
        """Take the lock if it is free; ``False`` (nothing changed) when another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": platform.node(),
                    "command": self.command,
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        fh.flush()
        return True

    def acquire(self, wait: bool = False, poll_s: float = 1.0, notify=None) -> RootLock:
        """Take the lock; without ``wait`` a busy root is a one-line :class:`RootBusy` naming the holder."""
        announced = False
        while not self.try_acquire():
            if not wait:
                raise RootBusy(
                    f"results root {self.root} is being written by {self.describe_holder()}: {self.what_to_do()}"
                )
            if notify is not None and not announced:
                notify(f"waiting for {self.describe_holder()} to release {self.root}")
                announced = True
            time.sleep(poll_s)
        return self

    def release(self) -> None:
        if self._fh is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> RootLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
