"""The result channel: what travels from wherever a job ran (this process, a worker process, a Ray node) back to
the driver, which alone writes the results store.

Everything here is plain, picklable data. :class:`JobResult` carries, besides the outcome, the fields every
executor fills the same way through :class:`~evalkit.worker.JobContext`: the ``environment`` the job was timed on,
the ``model_info`` of the loaded model and the timed ``timings``; and a structured ``reason`` for failures, so that
policies (skip-after-OOM, retries, the speed table's OOM cells) never parse message text.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

# -- statuses and reasons ----------------------------------------------------------------------------------------
# outcomes a rerun keeps (missing: an imported folder had no file for the pair); error/timeout/unavailable/skipped
# are retried
FINAL_STATUSES: Final = ("ok", "oom", "missing")
FAILED_STATUSES: Final = ("error", "timeout", "unavailable")  # outcomes that make `evalkit run` exit non-zero
LOST: Final = "lost"  # transport status only: the worker vanished; the scheduler retries, never stores it


class Reason:
    """Why a job did not end ``ok`` (the ``reason`` column); messages are for people, reasons for code."""

    OOM: Final = "oom"  # an allocation failed, or the worker died of memory exhaustion
    AFTER_OOM: Final = "after-oom"  # skipped: a smaller resolution of the same method ran out of memory
    TIMEOUT: Final = "timeout"
    CRASH: Final = "crash"  # the worker process died during the job (signal, abort), below its memory limit
    START_FAILED: Final = "worker-start-failed"  # the worker could not start (evalkit missing on a node, ...)
    LOST: Final = "worker-lost"  # node or worker lost (retryable)
    UNAVAILABLE: Final = "weights-unavailable"
    BAD_INPUT: Final = "bad-input"  # an evalkit error: missing/corrupt image, wrong sha256, bad parameter...
    EXCEPTION: Final = "exception"  # any other exception inside the method
    BACKEND: Final = "backend"  # the executor itself failed; the scheduler failed the remaining jobs


_OOM_TEXT = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "memoryerror",
    "bad_alloc",
    "outofmemoryerror",
    "low on memory",
)


def looks_like_oom(text: str) -> bool:
    """Whether an error text reports an allocation failure (torch CPU/CUDA, numpy, C++ bad_alloc, Ray's monitor)."""
    lowered = text.lower()
    return any(word in lowered for word in _OOM_TEXT)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def rusage_peak_bytes(ru_maxrss: int) -> int:
    """``getrusage().ru_maxrss`` in bytes: Linux reports KiB, macOS bytes."""
    return int(ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024)


# -- wire types ---------------------------------------------------------------------------------------------------
@dataclass
class MetricValue:
    """One metric outcome: a value with status ``ok``, or ``None`` with ``unavailable``/``error`` and a reason."""

    name: str
    value: float | None
    status: str = "ok"
    message: str | None = None


@dataclass
class MetricState:
    """A set-level metric's per-output state (e.g. a feature vector), serialised with ``numpy.save``, and the state of
    the reference image it is compared with (``reference_key`` names that image: sha256 and size), or ``None``.

    The driver stores both and reduces a row's states into one value once the row's jobs are done
    (:mod:`evalkit.metrics.sets`); the reduction never reruns a network."""

    name: str
    state: bytes | None
    status: str = "ok"
    message: str | None = None
    reference_key: str | None = None
    reference_state: bytes | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Parameter and layer counts of a loaded model, as a paper's speed table counts them (``weight_label``: the
    method and weight set, e.g. ``adain[cd16x]``; a job's ``label`` adds its sweep variant)."""

    weight_label: str
    parameters: int
    layers: int


@dataclass(frozen=True)
class Timing:
    """One timed repeat: network seconds and post-processing seconds (``None`` without post-processing)."""

    network_s: float
    post_s: float | None = None


@dataclass
class JobResult:
    """What an executor hands back to the driver for one job."""

    key: str
    status: str
    message: str | None = None
    reason: str | None = None  # a :class:`Reason` when status is not ok
    png: bytes | None = None
    width: int | None = None
    height: int | None = None
    time_load_s: float | None = None
    time_network_s: float | None = None
    time_post_s: float | None = None
    time_score_s: float | None = None  # the harness's metrics for this output (not the method's time)
    time_fit_s: float | None = None  # a per-style learning phase, on the job that ran it (None: reused or none)
    peak_memory_bytes: int | None = None
    device: str | None = None
    started: str | None = None
    finished: str | None = None
    metrics: list[MetricValue] = field(default_factory=list)
    states: list[MetricState] = field(default_factory=list)  # per-output states of set-level metrics
    warnings: list[str] = field(default_factory=list)  # recorded on the job, e.g. an image upscaled more than 4x
    timings: list[Timing] = field(default_factory=list)
    environment: dict[str, Any] | None = None  # what the job ran on (device, CPU/GPU, threads, limits, node)
    model_info: ModelInfo | None = None

    @property
    def retryable(self) -> bool:
        return self.status == LOST


def failure(
    key: str,
    status: str,
    message: str,
    reason: str,
    device: str | None = None,
    started: str | None = None,
    model_info: ModelInfo | None = None,
) -> JobResult:
    """A result for a job that produced no output (every executor and the scheduler build them here)."""
    now = utcnow()
    return JobResult(
        key=key,
        status=status,
        message=message,
        reason=reason,
        device=device,
        started=started or now,
        finished=now,
        model_info=model_info,
    )
