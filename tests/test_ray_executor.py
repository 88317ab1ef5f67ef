"""The Ray executor against a real local Ray cluster (separate processes) and against the local executor.

One cluster (``ray start --head --block`` on 127.0.0.1, 2 CPUs) serves the whole module. Drivers are real
``evalkit run`` subprocesses that connect to its address. Both executors run with one thread per job
(``OMP_NUM_THREADS=1`` locally; the Ray executor pins torch to the 1 CPU each worker reserves), because CPU float
reductions depend on the thread count - with equal threads the outputs and metric values must be identical.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.protocol import REPO_ROOT, load_protocol
from evalkit.registry import available_methods, get_method
from evalkit.results import JobResult
from evalkit.specs import JobSpec
from evalkit.worker import WorkerConfig

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'evalkit[ray]')")
EVALKIT = str(Path(sys.executable).with_name("evalkit"))
PAIRS = [("astronaut-hubble", "astronaut", "hubble_deep_field"), ("coffee-gravel", "coffee", "gravel")]


# -- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    from evalkit.executors.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(num_cpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()  # always: terminates exactly the process group this fixture started


@pytest.fixture(scope="module")
def methods() -> list[str]:
    """Gatys (optimisation) plus the deterministic baselines when installed."""
    return ["gatys"] + [m for m in ("identity", "reinhard") if m in available_methods()]


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory, methods) -> Path:
    """A tiny protocol on the quick protocol's bundled images: 2 pairs x 2 resolutions, Gatys with 4 steps."""
    quick = load_protocol(str(REPO_ROOT / "protocols" / "quick.toml"))
    lines = [
        'name = "raytiny"',
        'description = "Ray executor test"',
        'resolutions = ["48", "64"]',
        "style_size = 64",
        "eval_size = 64",
        "seeds = 1",
        f"methods = {methods!r}".replace("'", '"'),
        'metrics = ["content_loss", "style_loss"]',
        "",
        "[params.gatys]",
        "iterations = 4",
        "",
    ]
    for image_id in sorted({i for _, c, s in PAIRS for i in (c, s)}):
        asset = quick.images[image_id]
        lines += [
            f"[images.{image_id}]",
            f'package = "{asset.package}"',
            f'resource = "{asset.resource}"',
            f'sha256 = "{asset.sha256}"',
            "",
        ]
    for pair_id, content, style in PAIRS:
        lines += ["[[pairs]]", f'id = "{pair_id}"', f'content = "{content}"', f'style = "{style}"', ""]
    path = tmp_path_factory.mktemp("protocol") / "raytiny.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def evalkit_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "EVALKIT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}


def run_cli(protocol: Path, out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [EVALKIT, "run", "-p", str(protocol), "--out", str(out), "--no-progress", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(home), timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def ray_args(cluster) -> list[str]:
    return ["--executor", "ray", "--ray-address", cluster.address]


def snapshot(out: Path) -> dict[str, dict]:
    """Everything a result consumer reads: job identity and outcome, the output PNG's hash, metrics, methods."""
    conn = sqlite3.connect(out / "evalkit.sqlite")
    conn.row_factory = sqlite3.Row
    jobs = {}
    for row in conn.execute("SELECT * FROM jobs"):
        png = (out / row["output_path"]).read_bytes() if row["output_path"] else b""
        jobs[row["job_key"]] = (
            row["label"],
            row["pair_id"],
            row["resolution"],
            row["seed"],
            row["status"],
            row["width"],
            row["height"],
            hashlib.sha256(png).hexdigest(),
        )
    metrics = {
        (r["job_key"], r["metric"], r["eval_size"]): (r["value"], r["status"])
        for r in conn.execute("SELECT * FROM metrics")
    }
    methods = {r["label"]: (r["parameters"], r["layers"]) for r in conn.execute("SELECT * FROM methods")}
    conn.close()
    return {"jobs": jobs, "metrics": metrics, "methods": methods}


def query(out: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(out / "evalkit.sqlite")
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, protocol_file, evalkit_home) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("local")
    run_cli(protocol_file, out, evalkit_home)
    return snapshot(out)


# -- tests --------------------------------------------------------------------------------------------------------
@needs_ray
@pytest.mark.slow
def test_ray_cluster_gives_exactly_the_local_rows(
    ray_cluster, protocol_file, evalkit_home, local_reference, methods, tmp_path
):
    done = run_cli(protocol_file, tmp_path, evalkit_home, *ray_args(ray_cluster))
    # The driver really ran on the started cluster: 2 one-CPU workers on the cluster listening on our port.
    assert "ray: 2 workers x 1 CPU on cluster" in done.stderr
    assert f":{ray_cluster.port} (2 CPU, 0 GPU)" in done.stderr
    got = snapshot(tmp_path)
    expected_jobs = len(methods) * len(PAIRS) * 2
    assert len(local_reference["jobs"]) == expected_jobs
    assert {v[4] for v in local_reference["jobs"].values()} == {"ok"}
    assert got["jobs"] == local_reference["jobs"]  # keys, statuses, sizes and bit-identical PNGs
    assert got["metrics"] == local_reference["metrics"]  # exact float equality, every metric of every job
    assert got["methods"] == local_reference["methods"] and len(got["methods"]) == len(methods)
    assert query(tmp_path, "SELECT executor FROM runs") == [("ray",)]
    # Each job records the worker it was timed on: a Ray worker running torch on the 1 CPU it reserved.
    envs = [json.loads(row[0]) for row in query(tmp_path, "SELECT environment FROM job_environment")]
    assert len(envs) == expected_jobs
    assert all(e["executor"] == "ray" and e["torch_threads"] == 1 and e["node_ip"] for e in envs)


@needs_ray
@pytest.mark.slow
def test_resume_local_then_ray_finishes_only_the_rest(
    ray_cluster, protocol_file, evalkit_home, local_reference, tmp_path
):
    run_cli(protocol_file, tmp_path, evalkit_home, "--res", "48")  # half of the jobs, locally
    before = {r[0]: r[1:] for r in query(tmp_path, "SELECT job_key, run_id, finished, attempts FROM jobs")}
    assert len(before) == len(local_reference["jobs"]) // 2
    done = run_cli(protocol_file, tmp_path, evalkit_home, *ray_args(ray_cluster))
    assert f"resuming: {len(before)} of {len(local_reference['jobs'])} jobs already finished" in done.stderr
    runs = [r[0] for r in query(tmp_path, "SELECT executor FROM runs ORDER BY started, rowid")]
    assert runs == ["local", "ray"]
    after = {r[0]: r[1:] for r in query(tmp_path, "SELECT job_key, run_id, finished, attempts FROM jobs")}
    assert {k: after[k] for k in before} == before  # the local jobs were not redone
    ray_run = query(tmp_path, "SELECT run_id FROM runs WHERE executor='ray'")[0][0]
    redone = [k for k, v in after.items() if v[0] == ray_run]
    assert len(redone) == len(local_reference["jobs"]) - len(before)
    assert snapshot(tmp_path) == local_reference


@needs_ray
@pytest.mark.slow
def test_killed_ray_driver_resumes_locally_without_loss_or_duplicates(
    ray_cluster, protocol_file, evalkit_home, local_reference, methods, tmp_path
):
    # Slower Gatys jobs (other keys than the reference) so that the kill lands mid-run.
    extra = ["--param", "gatys.iterations=15"]
    command = [
        EVALKIT,
        "run",
        "-p",
        str(protocol_file),
        "--out",
        str(tmp_path),
        "--no-progress",
        *extra,
        *ray_args(ray_cluster),
    ]
    driver = subprocess.Popen(command, env=_env(evalkit_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    database = tmp_path / "evalkit.sqlite"
    deadline = time.monotonic() + 180
    finished = 0
    while time.monotonic() < deadline and driver.poll() is None:
        if database.exists():
            try:
                finished = query(tmp_path, "SELECT COUNT(*) FROM jobs")[0][0]
            except sqlite3.OperationalError:  # schema not created yet
                finished = 0
            if finished:
                break
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    total = len(local_reference["jobs"])
    kept = {r[0]: r[1:] for r in query(tmp_path, "SELECT job_key, run_id, finished, output_path FROM jobs")}
    assert 1 <= len(kept) < total
    kept_snapshot = snapshot(tmp_path)

    done = run_cli(protocol_file, tmp_path, evalkit_home, *extra)  # resume with the local executor
    assert f"resuming: {len(kept)} of {total} jobs already finished" in done.stderr
    final = snapshot(tmp_path)
    assert len(final["jobs"]) == total and {v[4] for v in final["jobs"].values()} == {"ok"}
    assert {k: final["jobs"][k] for k in kept} == kept_snapshot["jobs"]  # nothing committed was lost or changed
    now = {r[0]: r[1:] for r in query(tmp_path, "SELECT job_key, run_id, finished, output_path FROM jobs")}
    assert {k: now[k] for k in kept} == kept
    assert query(tmp_path, "SELECT MAX(attempts) FROM jobs") == [(1,)]  # no job was recorded twice
    assert len(list((tmp_path / "images").rglob("*.png"))) == total  # one image per job, no strays
    resumed = query(tmp_path, "SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1")[0][0]
    assert query(tmp_path, "SELECT COUNT(*) FROM run_jobs WHERE run_id=?", resumed) == [(total,)]
    # Jobs whose parameters did not change (the baselines) equal the reference, whichever executor ran them.
    same = set(final["jobs"]) & set(local_reference["jobs"])
    assert len(same) == (len(methods) - 1) * len(PAIRS) * 2
    assert all(final["jobs"][k] == local_reference["jobs"][k] for k in same)


# -- failure handling with a scripted stand-in for JobContext -------------------------------------------------------
class ScriptedContext:
    """Stands in for JobContext inside Ray workers, scripted by the job's pair id: ``crash-once`` kills its worker
    process on the first attempt (like a lost node), ``crash-always`` on every attempt, ``oom`` reports running
    out of memory. Every attempt leaves a file named after the job and the process, so the test counts them."""

    def __init__(self, config: WorkerConfig, folder: str, environment_extra: dict | None = None) -> None:
        self.config, self.folder = config, Path(folder)

    def run(self, spec: JobSpec) -> JobResult:
        previous = len(list(self.folder.glob(f"{spec.key}-*")))
        (self.folder / f"{spec.key}-{previous}-{os.getpid()}").touch()
        if spec.pair_id == "crash-always" or (spec.pair_id == "crash-once" and previous == 0):
            os._exit(1)
        status = "oom" if spec.pair_id == "oom" else "ok"
        return JobResult(key=spec.key, status=status, message="out of memory: scripted" if status == "oom" else None)


class BrokenContext:
    """A worker that cannot start (as when evalkit is missing on a node): its constructor raises."""

    def __init__(self, config: WorkerConfig, folder: str, environment_extra: dict | None = None) -> None:
        (Path(folder) / f"start-{os.getpid()}").touch()
        raise RuntimeError("evalkit cannot start on this node")


def _spec(pair_id: str) -> JobSpec:
    return JobSpec(
        method="gatys",
        weight_set="imagenet",
        params={},
        pair_id=pair_id,
        resolution="64",
        seed=0,
        content="astronaut",
        style="grass",
        content_mask=None,
        style_mask=None,
        style_size=64,
        eval_size=64,
        method_version=get_method("gatys").version,
        weight_digests={},
        image_digests={},
    ).with_key()


@needs_ray
@pytest.mark.slow
def test_lost_workers_are_retried_boundedly_and_oom_is_not(ray_cluster, protocol_file, tmp_path):
    import ray
    from ray import cloudpickle

    from evalkit.executors.ray_executor import RayExecutor
    from evalkit.scheduler import Policy, Scheduler

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    config = WorkerConfig(protocol=load_protocol(str(protocol_file)))
    specs = {name: _spec(name) for name in ("crash-once", "crash-always", "oom", "fine")}
    executor = RayExecutor(
        workers=2, log=lambda line: None, context_factory=functools.partial(ScriptedContext, folder=str(tmp_path))
    )
    ray.init(address=ray_cluster.address, logging_level="WARNING", log_to_driver=False)
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    broken = RayExecutor(
        workers=1, log=lambda line: None, context_factory=functools.partial(BrokenContext, folder=str(broken_dir))
    )
    many = [_spec(f"job{i}") for i in range(6)]
    try:
        # retries and giving up are the scheduler's (the executor only reports lost workers): the assertions
        # below read its counters where they used to read the executor's
        scheduler = Scheduler(executor, Policy(max_retries=2))
        results = {spec.pair_id: result for spec, result in scheduler.run(list(specs.values()), config)}
        broken_results = list(Scheduler(broken, Policy(max_retries=2)).run(many, config))
    finally:
        ray.shutdown()

    def attempts(name: str) -> list[str]:
        return sorted(p.name for p in tmp_path.glob(f"{specs[name].key}-*"))

    assert set(results) == set(specs)  # every job yields exactly one result
    # A worker lost once: retried on a fresh worker process, then the job succeeds.
    assert results["crash-once"].status == "ok" and scheduler.retried[specs["crash-once"].key] == 1
    first, second = attempts("crash-once")
    assert first.rsplit("-", 1)[1] != second.rsplit("-", 1)[1]  # the retry ran in another process
    # A job whose worker always dies: max_retries=2 -> 3 attempts, then an error result (never a crash).
    assert results["crash-always"].status == "error" and "lost 3 times" in results["crash-always"].message
    assert len(attempts("crash-always")) == 3
    # Out of memory is an outcome of the job: recorded once, never retried.
    assert results["oom"].status == "oom" and len(attempts("oom")) == 1
    assert results["fine"].status == "ok" and len(attempts("fine")) == 1
    assert specs["oom"].key not in scheduler.retried and specs["fine"].key not in scheduler.retried
    # Workers that cannot start: every job gets an error naming the cause, after a bounded number of starts.
    assert sorted(spec.key for spec, _ in broken_results) == sorted(spec.key for spec in many)
    assert all(r.status == "error" and "evalkit cannot start on this node" in r.message for _, r in broken_results)
    assert len(list(broken_dir.glob("start-*"))) == 3  # max_retries + 1 starts, not one per job


@needs_ray
def test_failure_classification():
    from ray import exceptions as rx

    from evalkit.executors.ray_executor import classify_failure

    assert classify_failure(rx.WorkerCrashedError()) == "retry"
    assert classify_failure(rx.NodeDiedError("node 10.0.0.3 died")) == "retry"
    assert classify_failure(rx.ActorDiedError()) == "retry"
    assert classify_failure(rx.RayTaskError("run", "tb", rx.WorkerCrashedError())) == "retry"
    assert classify_failure(rx.OutOfMemoryError("Task was killed due to the node running low on memory.")) == "oom"
    assert classify_failure(rx.RayTaskError("run", "tb", ValueError("bad"))) == "error"


def test_ray_executor_without_ray_says_how_to_install(monkeypatch, protocol_file, tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(
        app, ["run", "-p", str(protocol_file), "--out", str(tmp_path / "r"), "--executor", "ray", "--no-progress"]
    )
    assert isinstance(result.exception, EvalkitError)
    assert str(result.exception).endswith("pip install 'evalkit[ray]'") and "\n" not in str(result.exception)
    assert not (tmp_path / "r" / "evalkit.sqlite").exists()  # nothing recorded before the check

    result = CliRunner().invoke(
        app, ["run", "-p", str(protocol_file), "--out", str(tmp_path / "r"), "--ray-address", "auto", "--no-progress"]
    )
    assert isinstance(result.exception, EvalkitError) and "--executor ray" in str(result.exception)
