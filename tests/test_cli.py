"""The commands a newcomer types, run as subprocesses exactly as the README shows them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def evalkit(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.mark.slow
def test_quick_protocol_end_to_end(tmp_path):
    out = tmp_path / "results"
    res = evalkit(
        "run", "--protocol", "quick", "--methods", "gatys", "--out", str(out), "--param", "gatys.iterations=4",
        "--res", "64",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"results: {out.resolve() / 'evalkit.sqlite'}" in res.stdout
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM jobs")]
        metric_status = dict(conn.execute("SELECT metric, GROUP_CONCAT(DISTINCT status) FROM metrics GROUP BY metric"))
        env = conn.execute("SELECT environment FROM runs").fetchone()[0]
    assert statuses == ["ok"] * 5
    for name in ("content_loss", "style_loss", "ssim", "fsim"):  # need no downloadable weights
        assert metric_status[name] == "ok", metric_status
    assert metric_status["nima"] == "unavailable"  # its weights cannot be had offline: never a made-up number
    assert '"torch"' in env and '"cpu_model"' in env
    assert len(list((out / "images").rglob("*.png"))) == 5


@pytest.mark.slow
def test_make_quick_runs_three_methods_and_prints_a_leaderboard(tmp_path):
    """What `make quick` runs (the quick protocol's own methods, then the leaderboard), at 64 px and 4 iterations."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "evalkit run --protocol quick --results results" in makefile and "evalkit leaderboard" in makefile
    out = tmp_path / "results"
    res = evalkit("run", "--protocol", "quick", "-r", str(out), "--param", "gatys.iterations=4", "--res", "64")
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        labels = dict(conn.execute("SELECT label, COUNT(*) FROM jobs WHERE status = 'ok' GROUP BY label"))
    assert labels == {"gatys[imagenet]": 5, "reinhard": 5, "identity": 5}
    board = evalkit("leaderboard", "--results", str(out))
    assert board.returncode == 0, board.stderr
    assert f"leaderboard: {out / 'leaderboard.html'}" in board.stdout + board.stderr


def test_unknown_method_and_protocol_are_one_line_errors(tmp_path):
    res = evalkit("run", "--protocol", "nosuchprotocol", "--out", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: unknown protocol 'nosuchprotocol'")
    assert len(res.stderr.strip().splitlines()) == 1
    res = evalkit("run", "--methods", "gatyz", "--out", str(tmp_path), "--no-progress")
    assert res.returncode == 2 and "unknown method 'gatyz'" in res.stderr


def test_weights_status_reports_availability():
    res = evalkit("weights", "status")
    assert res.returncode == 0, res.stderr
    lines = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.count("│") > 3}
    assert "available" in lines["vgg19[imagenet]"]
    assert "downloadable" in lines["vgg19[torchvision]"] or "missing" in lines["vgg19[torchvision]"]


def test_bad_param_is_a_clear_error(tmp_path):
    res = evalkit("run", "--param", "gatys.iterationz=3", "--out", str(tmp_path), "--no-progress")
    assert res.returncode != 0 and "has no parameter 'iterationz'" in res.stderr
