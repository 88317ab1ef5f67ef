"""Issue 11, runs and store: exit status, resolution and protocol validation, crash hygiene, one writer per root,
protocol provenance, tiny images. Each test failed on commit 59c706b."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from evalkit.assets import AssetSettings
from evalkit.cli import app
from evalkit.errors import ProtocolError
from evalkit.protocol import load_protocol
from evalkit.rootlock import RootBusy, RootLock
from evalkit.runner import RunRequest, run_benchmark
from evalkit.store import ResultsStore
from tests.test_runner import _gradient, _save, write_protocol


@pytest.fixture
def small(tmp_path):
    """A two-pair protocol on a private data mirror: (protocol path, mirror, asset settings)."""
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    shas = {
        "style": _save(mirror / "t" / "style.img", _gradient(), format="PNG"),
        "c1": _save(mirror / "t" / "c1.img", _gradient().rotate(180), format="PNG"),
        "c2": _save(mirror / "t" / "c2.img", _gradient(64, 40), format="PNG"),
    }
    protocol = write_protocol(tmp_path, shas, [("p1", "c1", "style"), ("p2", "c2", "style")])
    return protocol, mirror, AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror))


def _cli(args: list[str], mirror: Path):
    return CliRunner().invoke(app, args, env={"EVALKIT_DATA_MIRROR": str(mirror), "COLUMNS": "200"})


def _runs(root: Path) -> list[tuple]:
    """Runs as readers see them (the read model shows a run whose process is gone as interrupted; readers never
    write, so the database row changes only when the next run records it)."""
    with ResultsStore.open_reader(root) as store:
        return [(r["run_id"], r["status"], r["note"]) for r in store.runs()]


# -- 6. exit status ------------------------------------------------------------------------------------------------
def test_a_run_whose_jobs_fail_exits_non_zero_and_says_why(plugin, small, tmp_path):
    protocol, mirror, _ = small
    failing = _cli(
        [
            "run",
            "--protocol",
            str(protocol),
            "--methods",
            "meanshift,boom",
            "--out",
            str(tmp_path / "r1"),
            "--no-progress",
        ],
        mirror,
    )
    assert failing.exit_code == 1, failing.output
    assert "2 job(s) did not succeed (2 error)" in failing.output
    fine = _cli(
        ["run", "--protocol", str(protocol), "--methods", "meanshift", "--out", str(tmp_path / "r2"), "--no-progress"],
        mirror,
    )
    assert fine.exit_code == 0, fine.output


# -- 7. --res ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("res", ["0", "-64", "8k", "12.5", ","])
def test_bad_resolutions_are_one_line_errors(res, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "--res", res, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: --res")


# -- 8. protocol validation ----------------------------------------------------------------------------------------
def _with(text: str, line: str) -> str:
    """The protocol text with ``line`` replacing the top-level field it sets (or added; tables before images)."""
    if line.startswith("["):
        head, sep, rest = text.partition("[images.")
        return head + line + "\n" + sep + rest
    key = line.split("=")[0].strip()
    pattern = re.compile(rf"^{key} = .*$", re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: line, text, count=1)
    return text.replace('name = "t"\n', f'name = "t"\n{line}\n', 1)


@pytest.mark.parametrize(
    "line,field",
    [
        ("style_size = -64", "style_size"),
        ("eval_size = 0", "eval_size"),
        ("seeds = 0", "seeds"),
        ('eval_size = "big"', "eval_size"),
        ("style_sise = 256", "style_sise"),
        ('metrics = ["ssim", "ssmi"]', "metrics"),
        ('resolutions = "512"', "resolutions"),
        ('[timing]\nexecutor = "gpu"', "timing.executor"),
        ("[timing]\nrepeats = 0", "timing.repeats"),
        ("min_image_side = 0", "min_image_side"),
    ],
)
def test_every_protocol_field_is_validated_when_loaded(small, line, field):
    protocol, _, _ = small
    protocol.write_text(_with(protocol.read_text(), line))
    with pytest.raises(ProtocolError) as caught:
        load_protocol(str(protocol))
    message = str(caught.value)
    assert str(protocol) in message and f"'{field}'" in message and "fix it" in message and "\n" not in message


def test_a_run_that_fails_before_its_first_job_never_stays_running(plugin, small, tmp_path, monkeypatch):
    protocol, _, assets = small
    from evalkit.executors import ExecutorChoice

    def broken(*args, **kwargs):
        raise RuntimeError("executor exploded")

    monkeypatch.setattr(ExecutorChoice, "build", broken)
    out = tmp_path / "results"
    with pytest.raises(RuntimeError):
        run_benchmark(RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False))
    [(run_id, status, note)] = _runs(out)
    assert status == "failed" and "executor exploded" in note


# -- 9, 10. crash hygiene --------------------------------------------------------------------------------------------
def test_the_next_run_removes_orphan_parts_and_marks_dead_runs_interrupted(plugin, small, tmp_path):
    protocol, _, assets = small
    out = tmp_path / "results"
    with ResultsStore(out) as store:  # what a SIGKILLed run leaves: a run row 'running' and a .part file
        dead = store.start_run("t", "", "evalkit run (killed)", ["meanshift"], ["32"], "cpu", "local", {})
    orphan = out / "images" / "t" / "meanshift" / "p1__32__s0__abc.part12345"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a png")
    run_benchmark(RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False))
    assert not orphan.exists()
    runs = _runs(out)
    assert runs[0][0] == dead and runs[0][1] == "interrupted" and "ended without finishing" in runs[0][2]
    assert runs[1][1] == "finished"


def test_readers_mark_dead_runs_interrupted_but_never_a_live_one(tmp_path):
    out = tmp_path / "results"
    with ResultsStore(out) as store:
        store.start_run("t", "", "cmd", [], ["32"], "cpu", "local", {})
    holder = RootLock(out, "a live evalkit run")
    assert holder.try_acquire()
    try:
        ResultsStore.open_reader(out).close()
        assert _runs(out)[0][1] == "running"  # the root is being written: the reader leaves it alone
    finally:
        holder.release()
    listing = CliRunner().invoke(app, ["runs", "--results", str(out)], env={"COLUMNS": "220"})
    assert listing.exit_code == 0, listing.output
    assert _runs(out)[0][1] == "interrupted" and "interrupted" in listing.output


def test_evalkit_runs_lists_status_and_job_counts(plugin, small, tmp_path):
    protocol, mirror, assets = small
    out = tmp_path / "results"
    run_benchmark(
        RunRequest(protocol=str(protocol), methods=["meanshift", "boom"], out=out, assets=assets, progress=False)
    )
    run_benchmark(RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False))
    listing = _cli(["runs", "--results", str(out)], mirror)
    assert listing.exit_code == 0, listing.output
    assert "2 error, 2 ok" in listing.output and "2 ok (2 reused)" in listing.output


# -- 11. one writer per root -----------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first_or_waits(plugin, small, tmp_path):
    protocol, _, assets = small
    out = tmp_path / "results"
    script = textwrap.dedent(f"""
        import sys, time
        from evalkit.rootlock import RootLock
        lock = RootLock({str(out)!r}, "evalkit run --protocol other")
        lock.acquire()
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RootBusy) as busy:
            run_benchmark(
                RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False)
            )
        message = str(busy.value)
        assert f"pid {holder.pid}" in message and "evalkit run --protocol other" in message and "--wait" in message
        assert "\n" not in message
        assert not (out / "evalkit.sqlite").exists() or _runs(out) == []  # nothing was recorded
    finally:
        holder.kill()
        holder.wait()
    # --wait: queue behind the holder and run when it is done
    lock = RootLock(out, "short holder")
    lock.acquire()
    threading.Timer(1.5, lock.release).start()
    started = time.monotonic()
    summary = run_benchmark(
        RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False, wait=True)
    )
    assert time.monotonic() - started >= 1.4 and summary.counts == {"ok": 2}


# -- 12. protocol provenance -----------------------------------------------------------------------------------------
def test_study_build_and_reports_use_the_protocol_stored_with_the_run(plugin, small, tmp_path, monkeypatch):
    protocol, mirror, assets = small
    out = tmp_path / "results"
    run_benchmark(
        RunRequest(protocol=str(protocol), methods=["meanshift", "identity"], out=out, assets=assets, progress=False)
    )
    with ResultsStore(out) as store:
        run = store.runs()[-1]
        assert run["protocol_text"] == protocol.read_text() and run["protocol_source"] == str(protocol)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    protocol.write_text(protocol.read_text().replace('name = "t"', 'name = "t"\ndescription = "edited later"'))
    built = _cli(
        [
            "study",
            "build",
            "--results",
            str(out),
            "--question",
            "style",
            "--methods",
            "meanshift,identity",
            "--out",
            str(tmp_path / "study"),
        ],
        mirror,
    )
    assert built.exit_code == 0, built.output
    assert "changed since run" in built.output
    board = _cli(["leaderboard", "--results", str(out), "--format", "md", "--out", str(tmp_path / "lb.md")], mirror)
    assert board.exit_code == 0 and "changed since run" in board.output
    protocol.unlink()
    rebuilt = _cli(
        [
            "study",
            "build",
            "--results",
            str(out),
            "--question",
            "style",
            "--methods",
            "meanshift,identity",
            "--out",
            str(tmp_path / "study2"),
        ],
        mirror,
    )
    assert rebuilt.exit_code == 0 and "not found now" in rebuilt.output


# -- 13. tiny images -------------------------------------------------------------------------------------------------
def test_tiny_images_are_errors_and_big_upscales_are_warnings(plugin, tmp_path):
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    shas = {
        "style": _save(mirror / "t" / "style.img", _gradient(), format="PNG"),
        "dot": _save(mirror / "t" / "dot.img", Image.new("RGB", (1, 1), (200, 10, 10)), format="PNG"),
        "small": _save(mirror / "t" / "small.img", _gradient(40, 36), format="PNG"),
    }
    protocol = write_protocol(
        tmp_path, shas, [("dot", "dot", "style"), ("small", "small", "style")], resolutions='["192"]'
    )
    protocol.write_text(protocol.read_text().replace('resolutions = ["32"]\n', ""))
    out = tmp_path / "results"
    run_benchmark(
        RunRequest(
            protocol=str(protocol),
            methods=["meanshift"],
            out=out,
            progress=False,
            assets=AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror)),
        )
    )
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        rows = {r[0]: r[1:] for r in conn.execute("SELECT pair_id, status, message, warnings FROM jobs")}
    status, message, _ = rows["dot"]
    assert status == "error" and "dot.img is 1x1" in message and "32 px" in message
    status, _, warnings = rows["small"]
    assert status == "ok" and "small.img (40x36) was upscaled 5.3x" in warnings
