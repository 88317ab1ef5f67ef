"""The seams a contributor extends, proven with a real pip-installed plug-in (tests/conftest.py): a set-level metric
end to end (with a SIGKILL and a resume that recomputes nothing), a third-party executor with results identical to
``local``, and one run selection shared by every reading command."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from evalkit import imaging
from evalkit.assets import AssetSettings
from evalkit.cli import app
from evalkit.resolution import Resolution
from evalkit.runner import RunRequest, run_benchmark
from evalkit.store import ResultsStore
from tests.test_runner import _gradient, _save, write_protocol

PAIRS = 6


@pytest.fixture
def six_pairs(tmp_path):
    """Six pairs over two styles, 32 px, in a data mirror of their own."""
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    images = {
        "warm": _save(mirror / "t" / "warm.img", Image.new("RGB", (48, 32), (200, 90, 40)), format="PNG"),
        "cool": _save(mirror / "t" / "cool.img", _gradient(40, 40).rotate(90), format="PNG"),
    }
    for i in range(PAIRS):
        images[f"c{i}"] = _save(mirror / "t" / f"c{i}.img", _gradient().rotate(i * 50), format="PNG")
    pairs = [(f"p{i}", f"c{i}", "warm" if i % 2 else "cool") for i in range(PAIRS)]
    protocol = write_protocol(tmp_path, images, pairs, methods='["meanshift"]')
    return protocol, mirror


def _grey(path: Path) -> float:
    """Mean grey level (0-255) of an image at the protocol's evaluation size, computed with numpy."""
    img = imaging.resize(imaging.load_image(path), Resolution.parse("32"))
    return float(np.asarray(img, dtype=np.float64).mean())


def _cli(args: list[str], mirror: Path):
    return CliRunner().invoke(app, args, env={"EVALKIT_DATA_MIRROR": str(mirror), "COLUMNS": "250"})


def test_a_third_party_set_level_metric_survives_sigkill_and_resumes_without_recomputing(plugin, six_pairs, tmp_path):
    protocol, mirror = six_pairs
    protocol.write_text(
        protocol.read_text().replace('metrics = ["content_loss", "style_loss"]', 'metrics = ["grey_gap"]')
    )
    protocol.write_text(protocol.read_text() + "[params.meanshift]\nsleep = 0.8\n")
    out, log = tmp_path / "results", tmp_path / "states.log"
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(mirror), "GREY_GAP_LOG": str(log)}
    cmd = [sys.executable, "-m", "evalkit", "run", "--protocol", str(protocol), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, done, deadline = out / "evalkit.sqlite", 0, time.time() + 240
    while time.time() < deadline and done < 2:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                done = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        except sqlite3.OperationalError:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        before = {r[0] for r in conn.execute("SELECT job_key FROM jobs")}
    assert 2 <= len(before) < PAIRS, "the run was not interrupted mid-way"

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    calls = log.read_text().split()
    for key in before:  # states of jobs finished before the kill were stored, never recomputed
        assert calls.count(f"out:{key}") == 1
    with ResultsStore(out) as store:
        [row] = store.set_metrics_frame("t").to_dict("records")
        jobs = store.jobs_frame()
    assert row["status"] == "ok" and row["n"] == PAIRS and len(jobs) == PAIRS
    outputs = np.mean([_grey(out / p) for p in jobs["output_path"]])
    styles = np.mean([_grey(mirror / "t" / f"{s}.img") for s in ("warm", "cool")])
    assert row["value"] == pytest.approx(outputs - styles, abs=1e-3)

    stamp = sqlite3.connect(db).execute("SELECT computed FROM set_metrics").fetchone()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(log.read_text().split()) == sorted(calls)  # a third run scores nothing
    assert sqlite3.connect(db).execute("SELECT computed FROM set_metrics").fetchone() == stamp  # nor reduces

    board = _cli(["leaderboard", "--results", str(out), "--format", "md", "--out", "-"], mirror)
    assert board.exit_code == 0, board.output
    header = next(line for line in board.output.splitlines() if line.startswith("|"))
    assert "grey\\_gap ↓" in header
    assert f"{row['value']:.3g}"[:4] in board.output
    compared = _cli(["compare", "--results", str(out), "--metric", "grey_gap"], mirror)
    assert compared.exit_code == 0, compared.output
    assert "set-level" in compared.output and "meanshift" in compared.output
    exported = _cli(["export", "--results", str(out), "--out", str(tmp_path / "export")], mirror)
    assert exported.exit_code == 0, exported.output
    with open(tmp_path / "export" / "set_metrics.csv") as fh:
        [exported_row] = list(csv.DictReader(fh))
    assert exported_row["metric"] == "grey_gap" and float(exported_row["value"]) == pytest.approx(row["value"])


def test_a_changed_job_replaces_its_rows_set_value(plugin, six_pairs, tmp_path):
    protocol, mirror = six_pairs
    out = tmp_path / "results"
    assets = AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror))

    def run(strength: float) -> float:
        run_benchmark(
            RunRequest(
                protocol=str(protocol),
                out=out,
                metrics=["grey_gap"],
                progress=False,
                assets=assets,
                params={"meanshift": {"strength": strength}},
            )
        )
        with ResultsStore(out) as store:
            [row] = store.set_metrics_frame("t").to_dict("records")
        return row["value"]

    full, half = run(1.0), run(0.5)
    assert full != pytest.approx(half)
    assert run(1.0) == pytest.approx(full)  # back to the first jobs: the value follows the jobs


def _outputs(root: Path) -> dict[str, tuple[bytes, dict[str, float]]]:
    with ResultsStore(root) as store:
        jobs = store.jobs_frame()
        metrics = store.metrics_frame()
    return {
        key: (
            (root / path).read_bytes(),
            {m: v for m, v in metrics[metrics["job_key"] == key][["metric", "value"]].itertuples(index=False)},
        )
        for key, path in zip(jobs["job_key"], jobs["output_path"], strict=True)
    }


def test_a_third_party_executor_gives_the_results_of_local(plugin, six_pairs, tmp_path):
    protocol, mirror = six_pairs
    common = ["run", "--protocol", str(protocol), "--methods", "meanshift,identity", "--no-progress"]
    common += ["--metrics", "content_loss,style_loss,mean_abs_diff"]
    local = _cli([*common, "--out", str(tmp_path / "local")], mirror)
    assert local.exit_code == 0, local.output
    inline = _cli(
        [*common, "--out", str(tmp_path / "inline"), "--executor", "inline", "--executor-opt", "reverse=true"], mirror
    )
    assert inline.exit_code == 0, inline.output
    assert "inline executor (reverse=True)" in inline.output
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "inline")
    assert set(a) == set(b) and len(a) == 2 * PAIRS
    for key in a:
        assert a[key][0] == b[key][0]  # bit-identical PNGs
        assert a[key][1] == pytest.approx(b[key][1], rel=1e-12)
    with ResultsStore(tmp_path / "inline") as store:
        environments = store.job_environments()
    assert {e["executor"] for e in environments.values()} == {"inline"}
    assert {e.get("executor_plugin") for e in environments.values()} == {"inline"}

    bad = _cli([*common, "--out", str(tmp_path / "x"), "--executor", "inline", "--executor-opt", "cpus=3"], mirror)
    assert bad.exit_code != 0 and "executor 'inline' has no option 'cpus'" in str(bad.exception)
    listing = _cli(["executors"], mirror)
    assert listing.exit_code == 0 and "inline" in listing.output and "reverse" in listing.output


def test_every_reading_command_selects_the_same_runs(plugin, six_pairs, tmp_path):
    """Two protocols in one root: every reader shows the latest run's protocol by default, never both, and
    ``--protocol`` picks the other."""
    protocol, mirror = six_pairs
    other = tmp_path / "other.toml"
    other.write_text(protocol.read_text().replace('name = "t"', 'name = "t2"'))
    out = tmp_path / "results"
    first = _cli(["run", "-p", str(protocol), "-m", "identity,reinhard", "--out", str(out), "--no-progress"], mirror)
    assert first.exit_code == 0, first.output
    sweep = ["--sweep", "meanshift.strength=0.5,1"]
    second = _cli(["run", "-p", str(other), "-m", "meanshift", *sweep, "--out", str(out), "--no-progress"], mirror)
    assert second.exit_code == 0, second.output
    latest = {"meanshift strength=0.5", "meanshift strength=1"}
    older = {"identity", "reinhard"}

    def shown(flags: list[str], methods: set[str]) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        exported = _cli(["export", "--results", str(out), "--out", str(tmp_path / "e"), *flags], mirror)
        assert exported.exit_code == 0, exported.output
        with open(tmp_path / "e" / "jobs.csv") as fh:
            seen["export"] = {r["label"] for r in csv.DictReader(fh)}
        board = _cli(["leaderboard", "--results", str(out), "--format", "md", "--out", "-", *flags], mirror)
        seen["leaderboard"] = {
            label for label in latest | older if f"| {label.replace('_', chr(92) + '_')}" in board.output
        }
        compared = _cli(["compare", "--results", str(out), "--format", "md", *flags], mirror)
        seen["compare"] = {label for label in latest | older if label in compared.output}
        speed = _cli(["speed", "--results", str(out), "--format", "csv", *flags], mirror)
        seen["speed"] = {label for label in latest | older if label in speed.output}
        folder = tmp_path / f"study{len(flags)}"
        study = _cli(
            ["study", "build", "--results", str(out), "--out", str(folder), "--format", "ab", "--question", "style"]
            + ["--trials-per-participant", "2", "--methods", ",".join(sorted(methods)), *flags],
            mirror,
        )
        assert study.exit_code == 0, study.output
        config = json.loads((folder / "study.json").read_text())
        with ResultsStore(out) as store:
            of_protocol = {r["run_id"] for r in store.runs() if r["protocol"] == config["protocol"]}
        assert set(config["run_ids"]) == of_protocol  # every run of one protocol, like the other readers
        seen["study build"] = {
            label for label in latest | older if f"{config['protocol']}:{label}" in _study_rows(config)
        }
        return seen

    for command, labels in shown([], latest).items():
        assert labels == latest, command
    for command, labels in shown(["--protocol", "t"], older).items():
        assert labels == older, command


def _study_rows(config: dict) -> set[str]:
    """``protocol:label`` of every method a study shows."""
    return {f"{config['protocol']}:{label}" for label in config["methods"]}


def test_the_harness_time_per_output_is_recorded_and_shown(plugin, six_pairs, tmp_path):
    """Scoring is timed per job apart from the method (``time_score_s``), shown by ``speed --details`` and in the
    leaderboard's environment section."""
    protocol, mirror = six_pairs
    out = tmp_path / "results"
    ran = _cli(["run", "-p", str(protocol), "--metrics", "content_loss,mean_abs_diff", "--out", str(out)], mirror)
    assert ran.exit_code == 0, ran.output
    with ResultsStore(out) as store:
        jobs = store.jobs_frame()
    assert (jobs["time_score_s"] > 0).all() and (jobs["time_score_s"] < 60).all()
    details = _cli(["speed", "--results", str(out), "--details"], mirror)
    assert details.exit_code == 0 and "score_s" in details.output
    page = _cli(["leaderboard", "--results", str(out), "--out", str(tmp_path / "lb.html"), "--no-exports"], mirror)
    assert page.exit_code == 0, page.output
    assert "Harness time per output" in (tmp_path / "lb.html").read_text()
