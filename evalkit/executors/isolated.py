"""Run each (method, weight set, resolution) group in a fresh worker process: the executor for speed measurements.

Why a process per group: an out-of-memory, a segfault or a leak in one method must neither take down the run nor
pollute the next measurement (allocator caches, fragmentation, a peak-RSS high-water mark, cuDNN autotuner state).
A fresh process also makes the CPU peak memory honest: ``ru_maxrss`` of a worker that only ever held one method at
one resolution. The worker (``python -m evalkit.executors.isolated_worker``) sends results back over a pipe; the
driver alone writes the results store.

Outcomes are results, never crashes of the run:

- ``oom``: an allocation failed inside the worker (caught), or the worker died of memory exhaustion (its output
  names ``MemoryError``/``bad_alloc``, or it was SIGKILLed with a peak RSS at the budget or the machine's memory);
- ``timeout``: a job ran longer than ``timeout`` seconds; the worker is killed (its whole process group);
- ``error``: anything else, including a worker killed by a signal below its memory limit;
Skipping larger resolutions after an OOM is the scheduler's policy (:mod:`evalkit.scheduler`), as for every
executor; this module only runs groups of jobs in workers and reports what happened to each.

Memory budgets reproduce smaller hardware: ``cpu_memory`` caps the worker's data segment with ``RLIMIT_DATA``
(not ``RLIMIT_AS``: a CPU-only torch process maps ~3 GiB of address space at import, mostly shared libraries that
use no memory, while its private writable data - heap and anonymous mappings, where tensors live - is ~0.8 GiB);
``device_memory`` calls ``torch.cuda.set_per_process_memory_fraction``. See docs/speed.md.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.executors.base import ExecutorBase, group_specs
from evalkit.params import Param
from evalkit.results import JobResult, ModelInfo, Reason, failure, looks_like_oom, rusage_peak_bytes, utcnow
from evalkit.specs import Work
from evalkit.worker import WorkerConfig

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
FRAME = struct.Struct(">Q")


def parse_bytes(text: str | int | None) -> int | None:
    """``12GiB`` -> 12884901888; ``8GB`` -> 8e9; a plain number is bytes. ``None``/empty -> no limit."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise EvalkitError(f"cannot parse memory size '{text}': write e.g. 8GiB, 512MiB or 12GB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def classify_death(
    returncode: int | None, output_tail: str, peak_rss: int | None, cpu_limit: int | None
) -> tuple[str, str]:
    """Status (``oom`` or ``error``: reason ``oom`` or ``crash``) and message for a worker that died without reporting
    its job.

    ``oom`` when memory ran out: the worker's last output names an allocation failure, or it was SIGKILLed (what
    the kernel's OOM killer and cgroup limits send) with a peak RSS of at least 90 % of the budget - the memory
    limit, or the machine's physical memory when there is none. Any other death is an ``error``.
    """
    if returncode is not None and returncode < 0:
        try:
            how = f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    limit = cpu_limit or _physical_memory()
    lines = [ln for ln in output_tail.strip().splitlines() if ln.strip()]
    last = lines[-1].strip()[:300] if lines else "no output"
    peak = f"peak RSS {format_bytes(peak_rss)}" if peak_rss else "peak RSS unknown"
    if looks_like_oom(output_tail):
        return "oom", f"out of memory: worker died ({how}, {peak}, limit {format_bytes(cpu_limit)}): {last}"
    if returncode == -signal.SIGKILL and peak_rss and limit and peak_rss >= 0.9 * limit:
        return "oom", f"out of memory: worker SIGKILLed at {peak} of {format_bytes(limit)}"
    return "error", f"worker died ({how}, {peak}) during the job: {last}"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class _Worker:
    """One worker process and the pipe it reports on (frames: 8-byte length + pickle)."""

    def __init__(self, specs: list[Work], config: WorkerConfig, limits: dict[str, Any], tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        request = tmpdir / f"request-{time.monotonic_ns()}.pkl"
        request.write_bytes(pickle.dumps({"config": config, "specs": specs, "limits": limits}))
        self.log_path = request.with_suffix(".log")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        # The worker sees the driver's import path (as multiprocessing's spawn does): plugins found by the driver
        # are found by the worker.
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "evalkit.executors.isolated_worker",
                    "--request",
                    str(request),
                    "--fd",
                    str(write_fd),
                    "--parent",
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=env,
            )
        os.close(write_fd)
        self.fd = read_fd
        self.buffer = bytearray()
        self.eof = False
        self.peak_rss: int | None = None

    def recv(self, deadline: float | None) -> Any:
        """The next message; ``None`` at end of stream; :class:`TimeoutError` when ``deadline`` passes."""
        while True:
            if len(self.buffer) >= FRAME.size:
                (size,) = FRAME.unpack_from(self.buffer)
                if len(self.buffer) >= FRAME.size + size:
                    blob = bytes(self.buffer[FRAME.size : FRAME.size + size])
                    del self.buffer[: FRAME.size + size]
                    return pickle.loads(blob)
            if self.eof:
                return None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                self.eof = True
            self.buffer += chunk

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self, grace: float = 10.0) -> int | None:
        """Wait for the worker (killing it after ``grace`` s) and keep its peak RSS from ``wait4``'s rusage."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        end = time.monotonic() + grace
        while True:
            try:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                return self.proc.returncode
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.peak_rss = rusage_peak_bytes(usage.ru_maxrss)
                return self.proc.returncode
            if time.monotonic() > end:
                self.kill()
                end = time.monotonic() + 60
            time.sleep(0.02)

    def output_tail(self, chars: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-chars:].decode(errors="replace")

    def close(self) -> None:
        self.kill()
        self.reap()
        os.close(self.fd)


def _positive_seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    seconds = float(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"--timeout must be a positive number of seconds, not {value}")
    return seconds


class IsolatedExecutor(ExecutorBase):
    """Each (method, weight set, resolution) group in a fresh ``python -m evalkit.executors.isolated_worker``."""

    name = "isolated"
    summary = "a fresh worker process per (method, weight set, resolution), with timeouts and memory budgets"
    options = {
        "timeout": Param(None, "seconds per job before its worker is killed (--timeout)", check=_positive_seconds),
        "cpu_memory": Param(None, "worker memory budget, e.g. 8GiB (--cpu-memory)", check=parse_bytes),
        "device_memory": Param(None, "CUDA memory budget, e.g. 12GiB (--device-memory)", check=parse_bytes),
    }

    @classmethod
    def check(cls, options: dict[str, Any], device: str) -> None:
        if options.get("device_memory") is not None and not device.startswith("cuda"):
            raise EvalkitError(f"--device-memory limits CUDA memory but --device is {device}: use --cpu-memory on CPU")

    def __init__(
        self,
        timeout: float | None = None,
        cpu_memory: int | None = None,
        device_memory: int | None = None,
        startup_timeout: float = 600.0,
    ) -> None:
        self.timeout = float(timeout) if timeout else None
        self.cpu_memory = cpu_memory
        self.device_memory = device_memory
        self.startup_timeout = startup_timeout
        self._models: dict[tuple[str, str | None], ModelInfo] = {}  # reported by workers, for failures they left

    def describe(self) -> str | None:
        """The budgets, printed before the run."""
        return (
            f"isolated executor: one worker process per (method, weight set, resolution); "
            f"timeout {f'{self.timeout:g}s' if self.timeout else 'none'} per job; "
            f"CPU memory {format_bytes(self.cpu_memory)}"
            f"{' (RLIMIT_DATA)' if self.cpu_memory else ''}; device memory {format_bytes(self.device_memory)}"
        )

    def close(self) -> None:
        self._models.clear()

    def map(self, specs: list[Work], config: WorkerConfig) -> Iterator[JobResult]:
        limits = {"cpu_memory": self.cpu_memory, "device_memory": self.device_memory}
        with tempfile.TemporaryDirectory(prefix="evalkit-isolated-") as tmp:
            for group in group_specs(specs):
                yield from self._run_group(group, config, limits, Path(tmp))

    def _failure(
        self, spec: Work, config: WorkerConfig, status: str, message: str, reason: str, started: str | None = None
    ) -> JobResult:
        return failure(
            spec.key, status, message, reason, config.device, started, self._models.get((spec.method, spec.weight_set))
        )

    def _run_group(
        self, group: list[Work], config: WorkerConfig, limits: dict[str, Any], tmpdir: Path
    ) -> Iterator[JobResult]:
        """Run a group's jobs; after a timeout or a crash the rest of the group gets a fresh worker."""
        remaining = {spec.key: spec for spec in group}
        while remaining:
            worker = _Worker(list(remaining.values()), config, limits, tmpdir)
            current: Work | None = None
            finished_one = False  # this worker reported at least one result
            started = utcnow()
            try:
                deadline: float | None = time.monotonic() + self.startup_timeout
                while True:
                    try:
                        message = worker.recv(deadline)
                    except TimeoutError:
                        worker.kill()
                        worker.reap()
                        if current is None:
                            for spec in remaining.values():
                                yield self._failure(
                                    spec,
                                    config,
                                    "error",
                                    f"worker did not start within {self.startup_timeout:g}s",
                                    Reason.START_FAILED,
                                )
                            remaining.clear()
                            return
                        yield self._failure(
                            current,
                            config,
                            "timeout",
                            f"exceeded the per-job timeout of {self.timeout:g}s; worker killed",
                            Reason.TIMEOUT,
                            started,
                        )
                        remaining.pop(current.key)
                        break
                    if message is None:  # the worker is gone
                        code = worker.reap()
                        if not remaining:
                            break
                        status, text = classify_death(code, worker.output_tail(), worker.peak_rss, self.cpu_memory)
                        reason = Reason.OOM if status == "oom" else Reason.CRASH
                        if current is not None:
                            yield self._failure(current, config, status, text, reason, started)
                            remaining.pop(current.key)
                            break
                        if finished_one:  # died between two jobs: the rest get a fresh worker
                            break
                        # died before its first job: a fresh worker would too, so they all get this result
                        for spec in remaining.values():
                            yield self._failure(
                                spec,
                                config,
                                status,
                                f"worker failed to start: {text}",
                                reason if status == "oom" else Reason.START_FAILED,
                            )
                        remaining.clear()
                        return
                    kind = message[0]
                    if kind == "ready":
                        deadline = None
                    elif kind == "start":
                        current = remaining[message[1]]
                        started = utcnow()
                        # CLOCK_MONOTONIC is system-wide: the clock starts when the worker started the job, not
                        # when the driver (busy writing the previous result) read the message
                        began = message[2] if len(message) > 2 else time.monotonic()
                        deadline = began + self.timeout if self.timeout else None
                    elif kind == "info":
                        info: ModelInfo = message[1]
                        spec0 = next(iter(remaining.values()))
                        self._models[(spec0.method, spec0.weight_set)] = info
                    elif kind == "result":
                        result: JobResult = message[1]
                        remaining.pop(result.key)
                        current = None
                        deadline = None
                        finished_one = True
                        yield result
            finally:
                worker.close()
