"""Scoring beside the method: job N's metrics on cores the method does not use while job N+1's network runs (the
local executor's ``scoring_cores`` option).

Why a process on disjoint cores, and not a thread: torch's thread pools belong to a process, and the method's timed
repetitions must not share cores with metric work (docs/speed.md, "Isolation"). So the run's CPU set is split by
*physical* core (SMT siblings stay together, so the method never loses half a core to a metric): the method's
process keeps the first cores, pinned, with one torch thread per core; a scoring process, pinned to the rest, scores
each output from its PNG bytes - the exact pixels the inline path scores - through its own
:class:`~evalkit.worker.JobContext` (the same metric suite, the same on-disk feature cache), and returns values,
states and its time. The method's numbers are then those of its cores alone, and the job's environment records the
split (``method_cpus``, ``scoring_cpus``).

``auto`` splits only when torch was already given fewer threads than the machine has physical cores (e.g.
``OMP_NUM_THREADS``): the spare cores score, and the method's timings are unchanged. An explicit count takes that
many cores from the method. On a GPU the metrics already run on the GPU after the timers; nothing is split.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.results import MetricState, MetricValue
from evalkit.specs import JobSpec
from evalkit.worker import JobContext, WorkerConfig

Scored = tuple[list[MetricValue], list[MetricState], float]


def parse_scoring_cores(value: Any) -> str | int:
    """``auto`` or a whole number of physical cores (0: score inline, after each job)."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        cores = int(str(value))
    except ValueError:
        raise ValueError(f"scoring_cores {value!r}: write auto or a whole number of cores (0 = off)") from None
    if cores < 0:
        raise ValueError(f"scoring_cores {value!r}: write auto or a whole number of cores (0 = off)")
    return cores


def physical_cores(cpus: list[int], sys_cpu: Path = Path("/sys/devices/system/cpu")) -> list[list[int]]:
    """The logical CPUs ``cpus`` grouped by physical core (package and core id from sysfs), in CPU order; a CPU whose
    topology cannot be read is a core of its own."""
    groups: dict[tuple[str, str] | int, list[int]] = {}
    for cpu in sorted(cpus):
        topology = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            key: tuple[str, str] | int = (
                (topology / "physical_package_id").read_text().strip(),
                (topology / "core_id").read_text().strip(),
            )
        except OSError:
            key = cpu
        groups.setdefault(key, []).append(cpu)
    return list(groups.values())


@dataclass(frozen=True)
class CorePlan:
    """Which logical CPUs the method's process and the scoring process each get, and their torch threads."""

    method: list[int]
    scoring: list[int]
    method_threads: int
    scoring_threads: int  # one per physical core


def plan_cores(
    requested: str | int, device: str, metrics: list[str], cores: list[list[int]], threads: int
) -> CorePlan | None:
    """The split for ``requested`` (``auto`` or a core count) over physical ``cores``, or ``None`` (score inline):
    on a GPU, without metrics, with ``0``, or with ``auto`` when torch's ``threads`` already use every core."""
    if not device.startswith("cpu") or not metrics or requested == 0:
        return None
    if requested == "auto":
        spare = len(cores) - threads
        if spare < 1:
            return None
        method_cores, scoring_cores = cores[:threads], cores[threads:]
    else:
        count = int(requested)
        if count >= len(cores):
            raise EvalkitError(
                f"scoring_cores={count} leaves no core for the method: evalkit may use {len(cores)} physical "
                f"core(s) here; use at most {len(cores) - 1}, or 0 to score after each job"
            )
        method_cores, scoring_cores = cores[: len(cores) - count], cores[len(cores) - count :]
    return CorePlan(
        method=[c for core in method_cores for c in core],
        scoring=[c for core in scoring_cores for c in core],
        method_threads=min(threads, len(method_cores)) if requested == "auto" else len(method_cores),
        scoring_threads=len(scoring_cores),
    )


# -- the scoring process ------------------------------------------------------------------------------------------
_CONTEXT: JobContext | None = None


def _start(config: WorkerConfig, cpus: list[int], threads: int) -> None:
    global _CONTEXT
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    _CONTEXT = JobContext(config)


def _ready() -> None:
    """Nothing: submitted first so the process starts (and imports torch) before the first output arrives."""


def _score(spec: JobSpec, png: bytes, names: list[str]) -> Scored:
    from PIL import Image

    assert _CONTEXT is not None
    start = time.perf_counter()
    with Image.open(io.BytesIO(png)) as img:
        values, states = _CONTEXT.score(spec, img.convert("RGB"), names)
    return values, states, time.perf_counter() - start


class ScoringProcess:
    """One spawned process, pinned to ``cpus`` with ``threads`` torch threads, that scores outputs in submission
    order. ``generation`` counts restarts, so futures of a pool that already broke do not restart its successor."""

    def __init__(self, config: WorkerConfig, cpus: list[int], threads: int) -> None:
        self.config, self.cpus, self.threads = config, cpus, threads
        self.generation = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(self.config, self.cpus, self.threads),
        )
        pool.submit(_ready)  # start it now: its imports overlap the method's model loading
        return pool

    def submit(self, spec: JobSpec, png: bytes, names: list[str]) -> Future[Scored]:
        try:
            return self._pool.submit(_score, spec, png, names)
        except BrokenProcessPool:  # it died since the last job (killed, out of memory): this job goes to a new one
            self.restart(self.generation)
            return self._pool.submit(_score, spec, png, names)

    def restart(self, generation: int) -> None:
        """After the process of ``generation`` died (killed, out of memory): a fresh one for the jobs still to come
        (once: the other futures of the dead process report the same death)."""
        if generation != self.generation:
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self.generation += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
