"""The worker process of the isolated executor: ``python -m evalkit.executors.isolated_worker --request F --fd N``.

It reads a pickled request (worker config, the jobs of one method/weight set/resolution, memory limits), applies
the limits, runs the jobs with :class:`~evalkit.worker.JobContext` and writes messages to file descriptor ``N``
(8-byte big-endian length + pickle): ``("ready", info)``, then per job ``("start", key, monotonic time)`` and
``("result", JobResult)``, and ``("info", ModelInfo)`` once the model is loaded. The driver
enforces timeouts and turns a dead worker into a result; this process never touches the results store.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

FRAME = struct.Struct(">Q")


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` field (``VmData``, ``VmRSS``...) in bytes, where Linux provides it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def apply_cpu_limit(limit: int) -> None:
    """Cap the data segment (heap + private anonymous mappings: where tensors live) at ``limit`` bytes.

    Allocations beyond it fail inside the worker (torch raises "can't allocate memory", numpy ``MemoryError``),
    which the job records as ``oom``. The cap is on the total, including what importing torch already used.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    new_hard = limit if hard == resource.RLIM_INFINITY or hard > limit else hard
    resource.setrlimit(resource.RLIMIT_DATA, (min(limit, new_hard), new_hard))


def apply_device_limit(device: str, limit: int) -> float:
    """Cap this process's CUDA caching allocator at ``limit`` bytes; returns the fraction of the device used."""
    import torch

    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, limit / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def limits_environment(limits: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """What this worker adds to every job's environment: its memory budgets and its footprint before the jobs."""
    return {
        "cpu_memory_limit_bytes": limits.get("cpu_memory"),
        "cpu_memory_limit_kind": "RLIMIT_DATA",
        "device_memory_limit_bytes": limits.get("device_memory"),
        "isolated": True,
        "worker_baseline": baseline,
    }


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver dies (even by SIGKILL), so no orphan keeps computing.

    The worker runs in its own session (so a timeout can kill its whole process group), hence it would not receive
    a terminal's signals; elsewhere the broken result pipe ends it at its next message.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--request", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, default=None, help="the driver's pid (exit if it is already gone)")
    args = parser.parse_args(argv)
    die_with_parent()
    if args.parent is not None and os.getppid() != args.parent:
        return 1  # the driver died before the death signal was armed
    out = os.fdopen(args.fd, "wb", buffering=0)

    def send(message: tuple) -> None:
        blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(FRAME.pack(len(blob)) + blob)

    request = pickle.loads(Path(args.request).read_bytes())  # imports evalkit.worker, hence torch
    config, specs, limits = request["config"], request["specs"], request["limits"]
    baseline: dict[str, Any] = {
        "data_bytes": _status_bytes("VmData"),
        "rss_bytes": _status_bytes("VmRSS"),
        "pid": os.getpid(),
    }
    if limits.get("cpu_memory"):
        apply_cpu_limit(int(limits["cpu_memory"]))
    if limits.get("device_memory") and str(config.device).startswith("cuda"):
        baseline["device_memory_fraction"] = apply_device_limit(config.device, int(limits["device_memory"]))
    send(("ready", baseline))

    from evalkit.specs import JobSpec
    from evalkit.worker import JobContext

    context = JobContext(config, environment_extra=limits_environment(limits, baseline))
    # Load the model before the first job's clock starts (loading is never timed, nor part of --timeout), and report
    # its size at once, so a job that then times out or runs out of memory still has params/layers in the table.
    # A failure here is ignored: the job meets it again inside JobContext.run, which records it properly.
    first = next((spec for spec in specs if isinstance(spec, JobSpec)), None)  # score jobs load no model
    try:
        if first is None:
            raise LookupError("a group of score jobs loads no model")
        context.adapter(first)
        info = context.model_info(first)
        if info is not None:
            send(("info", info))
    except Exception:  # noqa: BLE001
        pass
    for spec in specs:
        send(("start", spec.key, time.monotonic()))
        send(("result", context.run(spec)))
    out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (freeing a large heap, joining pools): the results are sent


if __name__ == "__main__":
    sys.exit(main())
