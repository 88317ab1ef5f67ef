#!/usr/bin/env python
"""Load test for ``evalkit study serve``: many concurrent participants, a server killed (SIGKILL) and restarted
midway, then an audit that every acknowledged vote is stored exactly once.

    python scripts/study_loadtest.py studies/NAME [--participants 100] [--kill-after 0.5]

It copies the study folder (the original is not touched), starts ``evalkit study serve`` on a free loopback port,
runs every participant concurrently (consent -> trials -> done) with httpx, retries a vote whose answer was lost
(the server must treat it idempotently), kills the server with SIGKILL once ``--kill-after`` of the expected votes
are acknowledged, restarts it, and finally compares the acknowledgements with the database.

It always stops by itself: a request that cannot reach the server for ``--max-down`` seconds ends that participant
with an error, and the whole run is cancelled after ``--deadline`` seconds (both reported as FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TRIAL = re.compile(r'name="trial" value="(\d+)"')
CHOICE = re.compile(r'name="choice" value="([^"]+)"')


@dataclass
class Stats:
    acked: dict[tuple[str, int], str] = field(default_factory=dict)  # (pid, trial) -> token
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    finished: int = 0


class Server:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.proc = folder, port, None

    def start(self) -> None:
        # every simulated participant comes from 127.0.0.1: lift the per-address limit for the test
        cmd = [
            sys.executable,
            "-c",
            "from evalkit.cli import main; main()",
            "study",
            "serve",
            str(self.folder),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--new-per-address",
            "0",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(f"server did not start: {self.proc.stderr.read().decode() if self.proc.poll() else ''}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


class ServerGone(Exception):
    """The server stayed unreachable for longer than --max-down."""


async def participant(i: int, base: str, stats: Stats, expected: int, max_down: float) -> None:
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=30) as client:

        async def call(method: str, url: str, **kw) -> httpx.Response:
            down_since = None
            while True:  # the server may be down (killed); retry until it is back, but not forever
                try:
                    return await client.request(method, url, **kw)
                except httpx.TransportError as exc:
                    stats.retries += 1
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since > max_down:
                        raise ServerGone(f"{method} {url}: server unreachable for {max_down:g}s ({exc})") from exc
                    await asyncio.sleep(0.2)

        await call("GET", f"/?PROLIFIC_PID=load{i}")
        r = await call("POST", "/start", data={"consent": "yes", "PROLIFIC_PID": f"load{i}"})
        pid = client.cookies.get("evalkit_study")
        if r.status_code != 303 or not pid:
            stats.errors.append(f"participant {i}: start failed ({r.status_code})")
            return
        while True:
            r = await call("GET", "/trial")
            if r.status_code == 303 and r.headers["location"] == "/done":
                stats.finished += 1
                return
            if r.status_code != 200:
                stats.errors.append(f"participant {i}: /trial answered {r.status_code}")
                return
            idx = int(TRIAL.search(r.text).group(1))
            tokens = CHOICE.findall(r.text)
            token = tokens[(i + idx) % len(tokens)]
            t0 = time.perf_counter()
            r = await call(
                "POST",
                "/vote",
                data={"trial": str(idx), "choice": token, "rt": "700"},
                headers={"accept": "application/json"},
            )
            stats.latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                stats.errors.append(f"participant {i}: vote {idx} answered {r.status_code} {r.text[:80]}")
                return
            body = r.json()
            if body["status"] == "duplicate":
                stats.duplicates += 1
            if (pid, idx) in stats.acked and stats.acked[(pid, idx)] != token:
                stats.errors.append(f"participant {i}: trial {idx} acknowledged twice with different choices")
            stats.acked[(pid, idx)] = token


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="study-loadtest-"))
    folder = work / args.study.name
    shutil.copytree(args.study, folder, ignore=shutil.ignore_patterns("study.sqlite*", "analysis"))
    config = json.loads((folder / "study.json").read_text())
    per = config["trials_per_participant"] + config["vigilance"] + config["repeats"]
    expected = per * args.participants
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(folder, port)
    server.start()
    stats = Stats()
    kill_at = int(expected * args.kill_after)
    started = time.perf_counter()

    async def killer() -> tuple[float, float]:
        while len(stats.acked) < kill_at:
            await asyncio.sleep(0.01)
        at = time.perf_counter() - started
        server.kill()
        acked_at_kill = len(stats.acked)
        t0 = time.perf_counter()
        await asyncio.to_thread(server.start)
        print(
            f"killed the server (SIGKILL) at {at:.1f}s with {acked_at_kill} votes acknowledged;"
            f" restarted in {time.perf_counter() - t0:.1f}s"
        )
        return at, time.perf_counter() - t0

    base = f"http://127.0.0.1:{port}"
    kill_task = asyncio.create_task(killer())

    async def guarded(i: int) -> None:
        try:
            await participant(i, base, stats, expected, args.max_down)
        except ServerGone as exc:
            stats.errors.append(f"participant {i}: {exc}")

    try:
        await asyncio.wait_for(asyncio.gather(*(guarded(i) for i in range(args.participants))), args.deadline)
    except TimeoutError:
        stats.errors.append(f"the run did not finish within --deadline {args.deadline:g}s")
    elapsed = time.perf_counter() - started
    lat = sorted(stats.latencies)
    if not kill_task.done():
        kill_task.cancel()
        stats.errors.append("the run finished before the kill point")
    server.stop()
    if not lat:
        lat.append(float("nan"))

    conn = sqlite3.connect(folder / "study.sqlite")
    rows = conn.execute("SELECT pid, idx, token FROM votes").fetchall()
    dup = conn.execute(
        "SELECT COUNT(*) FROM (SELECT pid, idx FROM votes GROUP BY pid, idx HAVING COUNT(*) > 1)"
    ).fetchone()[0]
    participants = conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    stored = {(p, i): t for p, i, t in rows}
    missing = [k for k in stats.acked if k not in stored]
    mismatched = [k for k, t in stats.acked.items() if k in stored and stored[k] != t]
    unacked = [k for k in stored if k not in stats.acked]

    def q(p: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]

    print(
        f"participants: {args.participants} concurrent ({participants} in the database), "
        f"{stats.finished} reached the completion page"
    )
    print(
        f"votes: {len(stats.acked)} acknowledged, {len(rows)} stored, expected {expected}; "
        f"{elapsed:.1f}s wall, {len(rows) / elapsed:.0f} votes/s"
    )
    print(
        f"vote latency ms: p50 {q(0.5):.1f}, p95 {q(0.95):.1f}, p99 {q(0.99):.1f}, max {1000 * lat[-1]:.0f},"
        f" mean {1000 * statistics.mean(lat):.1f}"
    )
    print(
        f"transport retries while the server was down: {stats.retries}; re-sent votes answered 'duplicate':"
        f" {stats.duplicates}"
    )
    print(
        f"audit: missing {len(missing)}, stored with a different choice {len(mismatched)}, duplicated rows {dup},"
        f" stored but never acknowledged {len(unacked)}, sqlite integrity: {integrity}"
    )
    for e in stats.errors[:10]:
        print(f"error: {e}")
    ok = (
        not missing
        and not mismatched
        and not dup
        and not unacked
        and not stats.errors
        and len(rows) == expected
        and integrity == "ok"
        and kill_task.done()
    )
    print("PASS" if ok else "FAIL")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept: {folder}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="study folder made by `evalkit study build`")
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--kill-after", type=float, default=0.5, help="fraction of expected votes before SIGKILL")
    parser.add_argument("--keep", action="store_true", help="keep the copied study folder and its database")
    parser.add_argument(
        "--max-down",
        type=float,
        default=60.0,
        help="seconds a request may keep failing to reach the server before its participant gives up",
    )
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds before the whole run is cancelled")
    args = parser.parse_args()
    if not (args.study / "study.json").is_file():
        parser.error(f"{args.study} is not a study folder (no study.json): build one with `evalkit study build`")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
