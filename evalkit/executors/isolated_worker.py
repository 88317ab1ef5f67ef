"""The worker process of the isolated executor: ``python -m evalkit.executors.isolated_worker --request F --fd N``.

It reads a pickled request (worker config, the jobs of one method/weight set/resolution, memory limits), applies
the limits, runs the jobs with :class:`~evalkit.worker.JobContext` and writes messages to file descriptor ``N``
(8-byte big-endian length + pickle): ``("ready", info)``, then per job ``("start", key, monotonic time)`` and
``("result", JobResult)``, and ``("info", label, {"parameters", "layers"})`` once per loaded model. The driver
enforces timeouts and turns a dead worker into a result; this process never touches the results store.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
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


def job_environment(device: str, limits: dict[str, Any], config) -> dict[str, Any]:
    """What every timing is measured on, from inside the worker (its thread count may differ from the driver's)."""
    import torch

    from evalkit import environment

    env = environment.device_description(device)
    env.update(torch_version=torch.__version__, python=platform.python_version(), platform=platform.platform(),
               cpu_memory_limit_bytes=limits.get("cpu_memory"), cpu_memory_limit_kind="RLIMIT_DATA",
               device_memory_limit_bytes=limits.get("device_memory"), warmup=config.warmup,
               repeats=config.repeats, isolated=True)
    return env


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
    baseline = {"data_bytes": _status_bytes("VmData"), "rss_bytes": _status_bytes("VmRSS"), "pid": os.getpid()}
    if limits.get("cpu_memory"):
        apply_cpu_limit(int(limits["cpu_memory"]))
    if limits.get("device_memory") and str(config.device).startswith("cuda"):
        baseline["device_memory_fraction"] = apply_device_limit(config.device, int(limits["device_memory"]))
    send(("ready", baseline))

    from evalkit.weights import weight_label
    from evalkit.worker import JobContext

    context = JobContext(config)
    env = {**job_environment(config.device, limits, config), "worker_baseline": baseline}
    announced: set[str] = set()

    def announce() -> None:
        for (method, weight_set, _device), (adapter, _load_s) in list(context._adapters.items()):
            label = weight_label(method, weight_set)
            if label not in announced:
                details = adapter.info()
                send(("info", label, {"parameters": details.parameters, "layers": details.layers}))
                announced.add(label)

    # Load the model before the first job's clock starts (loading is never timed, nor part of --timeout), and report
    # its size at once, so a job that then times out or runs out of memory still has params/layers in the table.
    # A failure here is ignored: the job meets it again inside JobContext.run, which records it properly.
    try:
        context.adapter(specs[0])
        announce()
    except Exception:  # noqa: BLE001
        pass
    for spec in specs:
        send(("start", spec.key, time.monotonic()))
        result = context.run(spec)
        result.extra["environment"] = env
        send(("result", result))
        announce()
    out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (freeing a large heap, joining pools): the results are sent


if __name__ == "__main__":
    sys.exit(main())
