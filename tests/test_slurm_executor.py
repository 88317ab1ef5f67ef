"""The Slurm executor against a real one-node Slurm cluster (scripts/slurm_cluster.sh), never a mock.

The cluster (munged, slurmctld, slurmd as root, the machine's CPUs) is started once for the module and stopped
after it when this module started it. Where it cannot start (not root, no apt-get) the cluster tests are skipped,
except under ``EVALKIT_REQUIRE_SLURM=1`` (set by .ci/run), where that is a failure: CI must run them.

Drivers are real ``evalkit run`` subprocesses; faults are real Slurm events (``scancel`` of a running array task, a
time limit, Ctrl-C/SIGTERM of the driver, SIGKILL of the driver and a rerun).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalkit.executors import slurm_jobs
from evalkit.executors.slurm_queue import Session, group_name
from tests.test_runner import generated_protocol

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
EVALKIT = [sys.executable, "-m", "evalkit"]


# -- option values (no cluster needed) ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("0:20", 20), ("1:00:00", 3600), ("2-0", 172800), ("1-2:03", 93780), ("1-0:0:5", 86405)],
)
def test_slurm_time_forms_are_sbatchs(text, seconds):
    assert slurm_jobs.time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0", "0:00", "1:2:3:4", "-5", "1h"])
def test_bad_slurm_times_are_refused(text):
    with pytest.raises(ValueError, match="Slurm time|no time"):
        slurm_jobs.time_seconds(text)


def test_memory_and_sbatch_flags():
    assert slurm_jobs.check_mem("16g") == "16G" and slurm_jobs.check_mem("16000") == "16000"
    for bad in ("lots", "0G", "16 GB x"):
        with pytest.raises(ValueError, match="memory size"):
            slurm_jobs.check_mem(bad)
    assert slurm_jobs.check_sbatch("--constraint=a100 --exclusive") == {"constraint": "a100", "exclusive": True}
    with pytest.raises(ValueError, match="long sbatch flag"):
        slurm_jobs.check_sbatch("-p gpu")
    with pytest.raises(ValueError, match="set by evalkit"):
        slurm_jobs.check_sbatch("--array=0-3")


@dataclass
class KeyOnly:
    """The queue pickles whatever job it is given; a key is all it reads."""

    key: str


def test_claims_are_exclusive_and_results_atomic(tmp_path):
    """Two tasks claiming from one queue never get the same job; a finished job leaves a result, not a claim."""
    from evalkit.results import JobResult

    session = Session.create(tmp_path / "slurm")
    group = group_name("meanshift", None)

    for i in range(5):
        session.put(group, i, KeyOnly(f"k{i}"))  # type: ignore[arg-type]
    taken = [session.claim(group, task) for task in ("1_0", "1_1", "1_0", "1_1", "1_0", "1_1")]
    keys = [t[0].key for t in taken if t is not None]
    assert sorted(keys) == [f"k{i}" for i in range(5)] and taken[-1] is None
    claim = taken[0][0]  # type: ignore[index]
    session.finish(claim, JobResult(key=claim.key, status="ok", device="cpu"))
    assert session.has_result("k0") and not claim.path.exists()
    assert {c.key for c in session.claims()} == {"k1", "k2", "k3", "k4"}


# -- the cluster ----------------------------------------------------------------------------------------------------
def _cluster(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER), command], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def slurm():
    """A running one-node cluster; stopped afterwards when this module started it."""
    started_here = False
    if _cluster("status").returncode != 0:
        started = time.monotonic()
        done = _cluster("start")
        if done.returncode != 0:
            message = f"no Slurm cluster: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
            if os.environ.get("EVALKIT_REQUIRE_SLURM") == "1":
                pytest.fail(message)
            pytest.skip(message)
        started_here = True
        print(f"slurm cluster started in {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield
    if started_here:
        _cluster("stop")


def _squeue_all() -> list[str]:
    done = subprocess.run(["squeue", "--noheader", "--format=%i|%T"], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def tiny(plugin, tmp_path, monkeypatch):
    """A protocol of N pairs on generated images for the plug-in's ``meanshift`` (its ``sleep`` sets the job length)."""
    monkeypatch.setenv("EVALKIT_DATA_MIRROR", str(tmp_path / "data"))

    def make(pairs: int, sleep: float) -> Path:
        path, _ = generated_protocol(
            tmp_path, [f"p{i}" for i in range(pairs)], methods='["meanshift"]',
            extra=f"\n[params.meanshift]\nsleep = {sleep}\n",
        )  # fmt: skip
        path.write_text(
            path.read_text().replace('metrics = ["content_loss", "style_loss"]', 'metrics = ["mean_abs_diff"]')
        )
        return path

    return make


def _run(protocol: Path, out: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [*EVALKIT, "run", "--protocol", str(protocol), "--out", str(out), "--no-progress", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


def _start(protocol: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [*EVALKIT, "run", "--protocol", str(protocol), "--out", str(out), "--no-progress", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def _claims(out: Path) -> list[Path]:
    return sorted(out.glob("slurm/*/groups/*/claimed/*/*.spec"))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def _rows(out: Path, sql: str = "SELECT job_key, status, reason, message FROM jobs") -> list[tuple]:
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        return conn.execute(sql).fetchall()


def _snapshot(out: Path) -> dict[str, object]:
    """Job identity and outcome, each output PNG's sha256 and every metric value."""
    conn = sqlite3.connect(out / "evalkit.sqlite")
    jobs = {}
    for key, label, pair, res, seed, status, path in conn.execute(
        "SELECT job_key, label, pair_id, resolution, seed, status, output_path FROM jobs"
    ):
        png = hashlib.sha256((out / path).read_bytes()).hexdigest() if path else None
        jobs[key] = (label, pair, res, seed, status, png)
    metrics = {
        (k, m, e): (v, s)
        for k, m, e, v, s in conn.execute("SELECT job_key, metric, eval_size, value, status FROM metrics")
    }
    conn.close()
    return {"jobs": jobs, "metrics": metrics}


def test_quick_protocol_on_slurm_is_identical_to_local(slurm, tmp_path):
    """Same job keys, statuses, PNG bytes and metric values as the local executor (one thread each side: CPU float
    reductions depend on the thread count); every job records its node and Slurm ids, the leaderboard shows them."""
    local, remote = tmp_path / "local", tmp_path / "slurm"
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    base = [*EVALKIT, "run", "--protocol", "quick", "--no-progress"]
    done = subprocess.run([*base, "--out", str(local)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    done = subprocess.run(
        [*base, "--out", str(remote), "--executor", "slurm", "--executor-opt", "cpus_per_task=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    print(f"quick protocol on slurm: {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert "slurm: array" in done.stderr
    a, b = _snapshot(local), _snapshot(remote)
    assert len(a["jobs"]) == 15 and a == b  # type: ignore[arg-type]
    with sqlite3.connect(remote / "evalkit.sqlite") as conn:
        envs = [json.loads(e) for (e,) in conn.execute("SELECT environment FROM job_environment")]
    assert len(envs) == 15
    assert all(e["executor"] == "slurm" and e["node"] and "_" in e["slurm_job_id"] for e in envs)
    assert all(e["slurm_partition"] == "debug" and e["torch_threads"] == 1 for e in envs)
    page = tmp_path / "board.html"
    shown = subprocess.run(
        [*EVALKIT, "leaderboard", "--results", str(remote), "--out", str(page)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    html = page.read_text()
    assert 'id="cluster-nodes"' in html and f"Slurm jobs {sorted(e['slurm_job_id'] for e in envs)[0]}" in html
    assert not list(remote.glob("slurm/*")), "a clean run leaves no session folder behind"
    assert not _squeue_all()


def test_scancel_of_a_running_task_is_retried_and_nothing_is_lost(slurm, tiny, tmp_path):
    protocol = tiny(6, 2.0)
    out = tmp_path / "results"
    proc = _start(protocol, out, "--executor", "slurm", "--executor-opt", "array_parallelism=2")
    claim = _wait(lambda: _claims(out), 120, "a task to start a job")[0]
    victim = claim.parent.name
    subprocess.run(["scancel", victim], check=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"Slurm job {victim} CANCELLED" in stderr and "retry 1 of 2" in stderr
    rows = _rows(out)
    assert len(rows) == 6 and {r[0] for r in rows} == set(r[0] for r in rows)
    assert all(r[1] == "ok" for r in rows)
    assert len(_rows(out, "SELECT job_key, metric FROM metrics")) == 6
    assert len(list((out / "images").rglob("*.png"))) == 6
    assert not _squeue_all()


def test_a_time_limit_too_short_for_a_job_is_a_timeout_with_the_slurm_state(slurm, tiny, tmp_path):
    protocol = tiny(1, 120.0)
    out = tmp_path / "results"
    done = _run(protocol, out, "--executor", "slurm", "--executor-opt", "time=0:05", timeout=300)
    assert done.returncode == 1, done.stderr
    (row,) = _rows(out)
    assert row[1] == "timeout" and row[2] == "timeout"
    assert "TIMEOUT" in row[3] and "Slurm job" in row[3] and "time=" in row[3], row[3]
    assert "Traceback" not in done.stderr
    assert not _squeue_all()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_leaves_no_job_in_squeue(slurm, tiny, tmp_path, sig):
    protocol = tiny(4, 60.0)
    out = tmp_path / "results"
    proc = _start(protocol, out, "--executor", "slurm", "--executor-opt", "array_parallelism=2")
    _wait(lambda: _claims(out), 120, "a task to start a job")
    assert _squeue_all()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    assert not _squeue_all(), "the run's Slurm jobs outlived the driver"
    (status,) = _rows(out, "SELECT status FROM runs")
    assert status == ("interrupted",)


def test_a_killed_driver_is_followed_by_a_complete_rerun_without_duplicates(slurm, tiny, tmp_path):
    protocol = tiny(8, 1.5)
    out = tmp_path / "results"
    args = ("--executor", "slurm", "--executor-opt", "array_parallelism=2")
    proc = _start(protocol, out, *args)
    db = out / "evalkit.sqlite"

    def recorded() -> int:
        if not db.exists():
            return 0
        try:
            return len(_rows(out, "SELECT job_key FROM jobs"))
        except sqlite3.OperationalError:
            return 0

    _wait(lambda: recorded() >= 2, 180, "two recorded jobs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = dict(_rows(out, "SELECT job_key, finished FROM jobs"))
    assert 2 <= len(before) < 8
    assert _squeue_all(), "the killed driver's tasks are still queued or running (nobody cancelled them)"
    done = _run(protocol, out, *args)
    assert done.returncode == 0, done.stderr
    assert "a run killed earlier left" in done.stderr and "cancelled its tasks" in done.stderr
    rows = _rows(out, "SELECT job_key, finished, status FROM jobs")
    assert len(rows) == 8 and len({r[0] for r in rows}) == 8 and all(r[2] == "ok" for r in rows)
    for key, finished in before.items():  # recorded before the kill: kept, not redone
        assert dict((r[0], r[1]) for r in rows)[key] == finished
    assert not _squeue_all()


def test_bad_slurm_options_are_one_line_errors_before_anything_runs(slurm, tiny, tmp_path):
    protocol = tiny(1, 0.0)
    cases = {
        "partition=nosuch": "Slurm has no partition 'nosuch' (partitions: debug)",
        "time=soon": "is not a Slurm time",
        "mem=lots": "is not a Slurm memory size",
        "gpus_per_task=1": "reserves GPUs but --device is cpu",
        "sbatch=-p x": "is not a long sbatch flag",
        "array_parallelism=0": "at least 1",
        "timeout=5": "it is an option of --executor isolated",
    }
    for option, message in cases.items():
        out = tmp_path / option.split("=")[0]
        done = _run(protocol, out, "--executor", "slurm", "--executor-opt", option)
        assert done.returncode != 0
        assert message in done.stderr, (option, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (out / "evalkit.sqlite").exists()


def test_tasks_waiting_in_the_queue_are_reported_with_slurms_reason(monkeypatch):
    """A run whose tasks wait for resources must not look hung: after a minute, one line with Slurm's reasons, then
    at most one every ten minutes."""
    from evalkit.executors import slurm_executor
    from evalkit.executors.slurm_jobs import TaskState

    lines: list[str] = []
    executor = slurm_executor.SlurmExecutor(log=lines.append)
    clock = [1000.0]
    executor._tasks = {"7_0": ("g", clock[0]), "7_1": ("g", clock[0])}
    waiting = [TaskState("7_0", "PENDING", "Resources"), TaskState("7_1", "PENDING", "Priority")]
    executor._report_waiting(waiting, clock[0] + 30)
    assert lines == []
    executor._report_waiting(waiting, clock[0] + 61)
    assert len(lines) == 1 and "2 task(s) waiting in the queue for 61s" in lines[0]
    assert "1 Resources" in lines[0] and "1 Priority" in lines[0]
    executor._report_waiting(waiting, clock[0] + 300)
    assert len(lines) == 1
    executor._report_waiting(waiting, clock[0] + 700)
    assert len(lines) == 2


def test_one_task_serves_every_resolution_of_its_method(slurm, tiny, tmp_path):
    """The scheduler sends a method's resolutions in separate waves (small first); the method's task outlives a wave,
    so one task (one model load) runs them all: every job records the same Slurm job id."""
    protocol = tiny(2, 0.0)
    protocol.write_text(protocol.read_text().replace('resolutions = ["32"]', 'resolutions = ["32", "40", "48"]'))
    out = tmp_path / "results"
    done = _run(protocol, out, "--executor", "slurm", "--executor-opt", "array_parallelism=1")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("slurm: array") == 1, done.stderr
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        resolutions = {r for (r,) in conn.execute("SELECT resolution FROM jobs")}
        ids = {json.loads(e)["slurm_job_id"] for (e,) in conn.execute("SELECT environment FROM job_environment")}
    assert resolutions == {"32", "40", "48"} and len(ids) == 1, (resolutions, ids)
    assert not _squeue_all()
