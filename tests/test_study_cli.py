"""`evalkit study build|analyze` as a user runs them, including the one-line errors.

One real subprocess proves the console entry point; the rest runs in-process through typer's runner (each
subprocess pays the torch import, which is slow on a shared 2-core machine).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import EvalkitError
from tests.study_support import make_results, simulate


def test_build_and_analyze_from_the_command_line(tmp_path):
    results = make_results(tmp_path / "results", ["fast[w1]", "slow"])
    folder = tmp_path / "studies" / "pilot"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit",
            "study",
            "build",
            "--results",
            str(results),
            "--question",
            "photoreal",
            "--methods",
            "fast,slow",
            "--format",
            "ab",
            "--trials-per-participant",
            "2",
            "--seed",
            "5",
            "--out",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr
    assert "2 comparisons, 2 vigilance items" in res.stdout

    runner = CliRunner()

    def fails_with(args: list[str], text: str) -> None:
        out = runner.invoke(app, args)
        assert isinstance(out.exception, EvalkitError), out.output
        assert text in str(out.exception) and "\n" not in str(out.exception)

    base = ["study", "build", "--results", str(results), "--methods", "fast,slow"]
    fails_with([*base, "--question", "style", "--out", str(folder)], "already exists")
    fails_with([*base, "--question", "prettiest", "--out", str(tmp_path / "x")], "unknown question 'prettiest'")
    fails_with(
        [
            "study",
            "build",
            "--results",
            str(results),
            "--methods",
            "fast,nope",
            "--question",
            "style",
            "--out",
            str(tmp_path / "y"),
        ],
        "choose from fast[w1], slow",
    )
    assert not (tmp_path / "y").exists() and not (tmp_path / "x").exists()  # a failed build leaves nothing behind
    fails_with(["study", "analyze", str(folder)], "no votes yet")
    fails_with(["study", "analyze", str(tmp_path)], "not a study folder")

    simulate(folder, participants=12, strengths={"fast[w1]": 1.5, "slow": -1.5}, seed=2)
    out = runner.invoke(app, ["study", "analyze", str(folder), "--bootstrap", "100"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "fast[w1]" in out.output  # labels are printed verbatim (no markup mangling)
    with sqlite3.connect(results / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT label FROM preferences WHERE study='pilot' AND rank=1").fetchall() == [
            ("fast[w1]",)
        ]
