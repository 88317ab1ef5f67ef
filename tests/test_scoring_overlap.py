"""Scoring beside the method (evalkit/executors/overlap.py, the local executor's ``scoring_cores``): the core split by
physical core, job N's scoring in flight while job N+1 runs, failures of the scoring process as job results, and a
real run whose metric values are those of inline scoring."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from evalkit.errors import EvalkitError
from evalkit.executors.local import LocalExecutor
from evalkit.executors.overlap import parse_scoring_cores, physical_cores, plan_cores
from evalkit.results import JobResult


def test_the_option_is_auto_or_a_core_count() -> None:
    assert parse_scoring_cores("auto") == "auto" and parse_scoring_cores(" AUTO ") == "auto"
    assert parse_scoring_cores("2") == 2 and parse_scoring_cores(0) == 0
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ValueError, match="auto or a whole number"):
            parse_scoring_cores(bad)


def _sysfs(root: Path, topology: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in topology.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_cpus_are_grouped_by_physical_core(tmp_path: Path) -> None:
    smt = _sysfs(tmp_path / "smt", {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0)})
    assert physical_cores([0, 1, 2, 3, 4], smt) == [[0, 2], [1, 3], [4]]
    assert physical_cores([3, 1], tmp_path / "none") == [[1], [3]]  # no topology: every CPU is a core


def test_the_split_keeps_siblings_together_and_refuses_what_cannot_fit() -> None:
    two = [[0], [1]]
    plan = plan_cores("auto", "cpu", ["ssim"], two, threads=1)
    assert plan is not None and (plan.method, plan.scoring, plan.method_threads) == ([0], [1], 1)
    assert plan_cores("auto", "cpu", ["ssim"], two, threads=2) is None  # torch uses every core: score inline
    assert plan_cores("auto", "cuda", ["ssim"], two, threads=1) is None  # metrics run on the GPU
    assert plan_cores(1, "cpu", [], two, threads=1) is None  # nothing to score
    assert plan_cores(0, "cpu", ["ssim"], two, threads=1) is None
    smt = [[0, 4], [1, 5], [2, 6], [3, 7]]
    plan = plan_cores(1, "cpu", ["ssim"], smt, threads=4)
    assert plan is not None and (plan.method, plan.scoring, plan.method_threads) == ([0, 4, 1, 5, 2, 6], [3, 7], 3)
    assert plan.scoring_threads == 1  # one thread per physical core, not per sibling
    with pytest.raises(EvalkitError) as err:
        plan_cores(4, "cpu", ["ssim"], smt, threads=4)
    assert "\n" not in str(err.value) and "use at most 3" in str(err.value)


class _Context:
    """Stands in for JobContext: logs each run and leaves a scoring request like ``defer_scoring`` does."""

    def __init__(self, log: list[str], futures: dict[int, Future]) -> None:
        self.log, self.futures, self.deferred = log, futures, {}

    def run(self, spec: int) -> JobResult:
        self.log.append(f"run {spec}")
        if spec - 1 in self.futures:  # the previous job's scoring finishes while this job runs
            self.futures[spec - 1].set_result(([], [], 0.5 + spec))
        self.deferred[str(spec)] = (spec, ["ssim"])
        return JobResult(key=str(spec), status="ok", png=b"png")


class _Scorer:
    def __init__(self, log: list[str], futures: dict[int, Future]) -> None:
        self.log, self.futures, self.restarts, self.generation = log, futures, 0, 0
        self.again: dict[int, Any] = {}

    def submit(self, spec: int, png: bytes, names: list[str]) -> Future:
        self.log.append(f"submit {spec}")
        future: Future = Future()
        if spec in self.futures:  # scored again after its process died: the outcome the test scripted
            outcome = self.again.get(spec, ([], [], 1.0))
            future.set_exception(outcome) if isinstance(outcome, BaseException) else future.set_result(outcome)
        self.futures[spec] = future
        return future

    def restart(self, generation: int) -> None:
        if generation == self.generation:
            self.restarts += 1
            self.generation += 1

    def close(self) -> None:
        pass


def _executor(log: list[str]) -> tuple[LocalExecutor, dict[int, Future], _Scorer]:
    futures: dict[int, Future] = {}
    executor = LocalExecutor(scoring_cores=1)
    scorer = _Scorer(log, futures)
    executor._context, executor._scorer = _Context(log, futures), scorer  # type: ignore[assignment]
    return executor, futures, scorer


def test_job_n_is_scored_while_job_n_plus_1_runs() -> None:
    log: list[str] = []
    executor, futures, _ = _executor(log)
    results = []
    for result in executor.map([1, 2, 3], config=None):  # type: ignore[arg-type,list-item]
        log.append(f"yield {result.key}")
        results.append(result)
        if result.key == "3":
            break
        if len(results) == 2:
            futures[3].set_result(([], [], 9.0))  # the last one completes after the loop
    assert log.index("submit 1") < log.index("run 2") < log.index("yield 1")  # overlap, and no result withheld
    assert log.index("submit 2") < log.index("run 3") < log.index("yield 2")
    assert [r.key for r in results] == ["1", "2", "3"]
    assert [r.time_score_s for r in results] == [2.5, 3.5, 9.0] and all(r.status == "ok" for r in results)


def test_a_scoring_failure_is_the_jobs_result_and_a_dead_process_is_replaced_once() -> None:
    """Job 1's scoring raises: its error. Jobs 2 and 3 die with their process: each is scored again by the
    successor (job 2 then succeeds; job 3's second process dies too: its error). One restart per dead process."""
    log: list[str] = []
    executor, futures, scorer = _executor(log)
    gone = BrokenProcessPool("gone")
    failures: list[BaseException] = [ValueError("bad image\nsecond line"), gone, gone]
    scorer.again = {2: ([], [], 7.0), 3: BrokenProcessPool("again")}

    def run(spec: int) -> JobResult:
        result = JobResult(key=str(spec), status="ok", png=b"png")
        context.deferred[str(spec)] = (spec, ["ssim"])
        if spec - 1 in futures:
            futures[spec - 1].set_exception(failures[spec - 2])
        return result

    context: Any = executor._context
    context.run = run
    out = []
    for result in executor.map([1, 2, 3, 4], config=None):  # type: ignore[arg-type,list-item]
        out.append(result)
        if len(out) == 3:
            break
    assert out[0].status == "error" and out[0].message == "scoring failed: ValueError: bad image"
    assert out[1].status == "ok" and out[1].time_score_s == 7.0  # scored again by the new process
    assert out[2].status == "error" and "died twice" in (out[2].message or "")
    assert scorer.restarts == 2  # jobs 2 and 3 died with the first process (one restart), job 3 again with the second


def _run(out: Path, option: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "evalkit", "run", "--protocol", "quick", "--methods", "reinhard,identity",
        "--metrics", "ssim,content_loss,style_loss", "--executor-opt", f"scoring_cores={option}",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(len(physical_cores(sorted(os.sched_getaffinity(0)))) < 2, reason="needs two physical cores")
def test_a_run_scored_beside_the_method_records_what_inline_scoring_records(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    beside, inline = tmp_path / "beside", tmp_path / "inline"
    first = _run(beside, "1", env)
    assert first.returncode == 0, first.stderr
    assert "scoring beside the method: the method on CPU(s)" in first.stdout + first.stderr
    assert _run(inline, "0", env).returncode == 0

    def recorded(root: Path) -> tuple[dict[tuple[str, str], float], list[tuple[Any, ...]], list[dict[str, Any]]]:
        with sqlite3.connect(root / "evalkit.sqlite") as conn:
            values = {(k, m): v for k, m, v in conn.execute("SELECT job_key, metric, value FROM metrics")}
            jobs = conn.execute("SELECT status, time_score_s FROM jobs").fetchall()
            envs = [json.loads(e) for (e,) in conn.execute("SELECT environment FROM job_environment")]
        return values, jobs, envs

    values, jobs, envs = recorded(beside)
    inline_values, inline_jobs, inline_envs = recorded(inline)
    assert len(values) == 30 and values == inline_values  # 10 jobs x 3 metrics, the same pixels scored
    assert len(jobs) == 10 and all(s == "ok" and t is not None and t > 0 for s, t in jobs)
    assert all(e["scoring_cpus"] and e["method_cpus"] and e["torch_threads"] == 1 for e in envs)
    assert all("scoring_cpus" not in e for e in inline_envs)


def test_a_split_that_cannot_fit_is_one_line_before_anything_is_recorded(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    for option, expected in (("64", "leaves no core for the method"), ("many", "auto or a whole number")):
        out = tmp_path / option
        result = _run(out, option, env)
        assert result.returncode != 0 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (out / "evalkit.sqlite").exists()


KILLER = """
import os
import signal
from pathlib import Path

CALLS = [0]


def stylize(content, style):
    \"\"\"The identity, that on its second call kills the scoring process (a child running spawn_main).\"\"\"
    CALLS[0] += 1
    if CALLS[0] == 2:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                command = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid() and b"spawn_main" in command:
                os.kill(int(stat.parent.name), signal.SIGKILL)
                Path(os.environ["KILLED_MARKER"]).write_text(stat.parent.name)
    return content
"""


@pytest.mark.skipif(len(physical_cores(sorted(os.sched_getaffinity(0)))) < 2, reason="needs two physical cores")
def test_a_killed_scoring_process_loses_no_score(tmp_path: Path) -> None:
    """The scoring process is SIGKILLed during the second job: no traceback, every output is scored by its
    successor, every job ok."""
    from tests.test_runner import generated_protocol

    protocol, mirror = generated_protocol(tmp_path, [f"p{i}" for i in range(5)])
    method = tmp_path / "killer.py"
    method.write_text(KILLER)
    marker = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVALKIT_DATA_MIRROR": str(mirror), "KILLED_MARKER": str(marker)}
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "evalkit", "run", "--protocol", str(protocol), "--methods", f"{method}:stylize",
        "--executor-opt", "scoring_cores=1", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert "Traceback" not in first.stderr and marker.exists(), first.stderr
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        jobs = conn.execute("SELECT pair_id, status, message FROM jobs ORDER BY pair_id").fetchall()
        scored = {k for (k,) in conn.execute("SELECT DISTINCT j.pair_id FROM metrics m JOIN jobs j USING (job_key)")}
    assert first.returncode == 0, first.stderr
    assert len(jobs) == 5 and all(status == "ok" for _, status, _ in jobs) and scored == {f"p{i}" for i in range(5)}
