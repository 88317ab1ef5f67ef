"""Benchmark (not a test): the same small run with the local executor and with the Ray executor, side by side.

Starts a single-machine Ray cluster (``LocalRayCluster``, 2 CPUs by default, its startup timed separately), then
runs ``evalkit run`` as a subprocess on a small protocol (quick-protocol images; Gatys with few iterations plus the
baselines that are installed), alternating executors so both see the same machine load:

- local, 1 thread  (``OMP_NUM_THREADS=1``: the same per-job threads as a 1-CPU Ray worker, identical numbers);
- local, default threads (what a user gets by default);
- ray, ``--ray-address`` of the started cluster, one worker per CPU, 1 CPU each.

Reports each run's wall time (driver start to exit: imports, Ray connection, worker start, model loads, jobs,
store writes), the summed stylization time of its jobs, and the ratios ray / local. Results of ray and local
(1 thread) are checked to be identical. Usage:

    python scripts/bench_ray.py [--pairs 5] [--iterations 20] [--res 96] [--repeats 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit.executors.ray_cluster import LocalRayCluster
from evalkit.protocol import REPO_ROOT, load_protocol
from evalkit.registry import available_methods

EVALKIT = str(Path(sys.executable).with_name("evalkit"))


def write_protocol(folder: Path, pairs: int, iterations: int, res: str) -> Path:
    quick = load_protocol(str(REPO_ROOT / "protocols" / "quick.toml"))
    methods = ["gatys"] + [m for m in ("identity", "reinhard") if m in available_methods()]
    lines = [
        'name = "benchray"',
        'description = "bench_ray.py"',
        f'resolutions = ["{res}"]',
        f"style_size = {res}",
        f"eval_size = {res}",
        "seeds = 1",
        "methods = [" + ", ".join(f'"{m}"' for m in methods) + "]",
        'metrics = ["content_loss", "style_loss"]',
        "",
        "[params.gatys]",
        f"iterations = {iterations}",
        "",
    ]
    for image_id, asset in quick.images.items():
        lines += [
            f"[images.{image_id}]",
            f'package = "{asset.package}"',
            f'resource = "{asset.resource}"',
            f'sha256 = "{asset.sha256}"',
            "",
        ]
    for pair in quick.pairs[:pairs]:
        lines += ["[[pairs]]", f'id = "{pair.id}"', f'content = "{pair.content}"', f'style = "{pair.style}"', ""]
    path = folder / "benchray.toml"
    path.write_text("\n".join(lines))
    return path


def run(protocol: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [EVALKIT, "run", "-p", str(protocol), "--out", str(out), "--no-progress", *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"evalkit run failed:\n{done.stderr}")
    return wall


def summary(out: Path) -> tuple[int, float, dict]:
    conn = sqlite3.connect(out / "evalkit.sqlite")
    rows = conn.execute("SELECT job_key, status, time_network_s, output_path FROM jobs").fetchall()
    metrics = conn.execute("SELECT job_key, metric, value FROM metrics").fetchall()
    conn.close()
    ok = sum(r[1] == "ok" for r in rows)
    fingerprint = {r[0]: hashlib.sha256((out / r[3]).read_bytes()).hexdigest() for r in rows if r[3]}
    fingerprint.update({(m[0], m[1]): m[2] for m in metrics})
    return ok, sum(r[2] or 0.0 for r in rows), fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--res", default="96")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    protocol = write_protocol(work, args.pairs, args.iterations, args.res)
    base = {**os.environ, "EVALKIT_HOME": str(work / "home")}
    one_thread = {**base, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with LocalRayCluster(num_cpus=args.cpus) as cluster:
        startup = time.perf_counter() - start
        walls: dict[str, list[float]] = {"local-1t": [], "local": [], "ray": []}
        jobs: dict[str, list[float]] = {k: [] for k in walls}
        prints: dict[str, dict] = {}
        for i in range(args.repeats):
            for name, env, extra in (
                ("local-1t", one_thread, ()),
                ("ray", base, ("--executor", "ray", "--ray-address", cluster.address)),
                ("local", base, ()),
            ):
                out = work / f"{name}-{i}"
                walls[name].append(run(protocol, out, env, *extra))
                ok, network, prints[name] = summary(out)
                jobs[name].append(network)
                print(
                    f"  {name:9s} run {i + 1}: {walls[name][-1]:6.1f} s wall, {ok} ok jobs, "
                    f"{network:6.2f} s summed stylization",
                    flush=True,
                )
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\nray cluster startup (ray start --head, {args.cpus} CPUs): {startup:.1f} s (once per cluster)")
    print(f"{'executor':10s} {'wall median s':>14s} {'stylize s':>10s}")
    for name in walls:
        print(f"{name:10s} {med[name]:14.1f} {statistics.median(jobs[name]):10.2f}")
    print(f"ratio ray / local (1 thread per job): {med['ray'] / med['local-1t']:.2f}")
    print(f"ratio ray / local (default threads):  {med['ray'] / med['local']:.2f}")
    same = prints["ray"] == prints["local-1t"]
    print(f"ray results identical to local (1 thread): {same}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
