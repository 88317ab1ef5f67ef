"""Start and stop a single-machine Ray head as a child process group (tests, benchmarks, a laptop demo).

Why not ``ray start`` + ``ray stop``: ``ray stop`` kills every Ray process of the user on the machine by name,
including clusters that belong to someone else's session. Here ``ray start --head --block`` runs in its own
process group, every port is chosen free (so several clusters can coexist), and stopping terminates exactly that
group. Real multi-node clusters are started with Ray's own tools (docs/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit.errors import EvalkitError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_command() -> str:
    """The ``ray`` CLI of this interpreter's environment (workers must run the same evalkit)."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise EvalkitError("the 'ray' command is not installed: pip install 'evalkit[ray]'")
    return found


class LocalRayCluster:
    """A Ray head on 127.0.0.1 with ``num_cpus`` CPUs; use as a context manager, ``address`` is HOST:PORT."""

    def __init__(self, num_cpus: int = 2, num_gpus: int = 0, startup_timeout: float = 120.0) -> None:
        self.num_cpus, self.num_gpus, self.startup_timeout = num_cpus, num_gpus, startup_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="evr-")  # short: Ray's unix sockets live below it
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> LocalRayCluster:
        command = [
            ray_command(),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            f"--num-gpus={self.num_gpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise EvalkitError(f"ray start failed (see {self.log_path}): {self._log_tail()}")
            if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.25)
        self.stop()
        raise EvalkitError(f"ray start did not finish within {self.startup_timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "no log"

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM ``ray start --block`` (it shuts its cluster down), then SIGKILL whatever is left in its group."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        try:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=grace)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.process = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
