"""The console view of a run: a progress bar, warnings and failures as they happen (rich), and nothing else.

:class:`ConsoleDisplay` implements :class:`~evalkit.recorder.RunEvents`; the runner hands it every event, so a
notebook or another front end can pass its own listener instead.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evalkit.results import JobResult
from evalkit.specs import Work


def describe(job: Work) -> str:
    return escape(f"{job.label} · {job.pair_id} · {job.resolution} · seed {job.seed}")  # keep [weights]


class ConsoleDisplay:
    """Progress over ``total`` work items; warnings and non-ok jobs printed above the bar."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def note(self, line: str) -> None:
        (self._progress.console if self._progress else self.console).print(escape(line))

    def start(self, total: int, first: Work | None) -> ConsoleDisplay:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._progress = Progress(*columns, console=self.console, disable=not self.enabled, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(describe(first) if first else "nothing to do", total=total)
        return self

    def job_done(self, job: Work, result: JobResult) -> None:
        console = self._progress.console if self._progress else self.console
        where = f"{escape(job.label)} {escape(job.pair_id)} @{job.resolution}"
        for warning in result.warnings:
            console.print(f"[yellow]warning[/yellow] {where}: {escape(warning)}")
        if result.status != "ok":
            console.print(f"[yellow]{result.status}[/yellow] {where}: {escape(result.message or '')}")
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=describe(job))

    def __enter__(self) -> ConsoleDisplay:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            if self._task is not None and kind is None:
                self._progress.update(self._task, description="done")
            self._progress.stop()
            self._progress = None
