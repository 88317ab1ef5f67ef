"""SIGTERM ends a run the way Ctrl-C does, whatever the executor.

Why: schedulers, container runtimes and ``timeout`` stop a process with SIGTERM. Python's default for it ends the
process at once, so the run row stayed ``running`` until a reader noticed the dead pid, an isolated or Ray worker
could outlive its driver, and Slurm tasks stayed queued. Raised as :class:`KeyboardInterrupt` inside the run, it
takes the path Ctrl-C takes: every executor's ``close()`` (workers stopped, Slurm arrays cancelled, the scoring
process ended, pinned cores restored) and the run marked ``interrupted``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGTERM_NOTE = "interrupted: stopped by SIGTERM"


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as a KeyboardInterrupt so every ``except KeyboardInterrupt`` treats it as Ctrl-C."""


def _raise(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block (main thread only: Python delivers signals there), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
