"""Study results keyed by study id and by the runs a study was built from, ``analyze`` under the root's lock, and
old ``study.json`` files read without being rewritten: through the command line, as a user runs them.

One real subprocess proves the one-line refusal of the console entry point; the rest runs in-process through typer's
runner (each subprocess pays the torch import, which is slow on a shared 2-core machine).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.rootlock import RootLock
from evalkit.study.build import load_study
from tests.study_support import make_results, make_study, simulate

ENV = {"COLUMNS": "200"}


def _ok(args: list[str]) -> str:
    out = CliRunner().invoke(app, args, env=ENV)
    assert out.exit_code == 0, f"{out.output}\n{out.exception!r}"
    return out.output


def _build(results: Path, folder: Path, methods: str, *extra: str) -> None:
    _ok(
        [
            "study",
            "build",
            "--results",
            str(results),
            "--question",
            "favorite",
            "--methods",
            methods,
            "--trials-per-participant",
            "2",
            "--seed",
            "4",
            "--out",
            str(folder),
            *extra,
        ]
    )


def _rows(results: Path, query: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(results / "evalkit.sqlite") as conn:
        return conn.execute(query, args).fetchall()


def _leaderboard(results: Path, out: Path, *runs: str) -> str:
    args = ["leaderboard", "--results", str(results), "--no-exports", "--out", str(out)]
    for run in runs:
        args += ["--run", run]
    _ok(args)
    return out.read_text()


def _human_columns(html: str) -> list[str]:
    return re.findall(r">human: ([^<]+)<", html)


def test_two_studies_named_pilot_keep_their_own_results_and_columns(tmp_path):
    results = make_results(tmp_path / "results", ["fast", "slow", "mid"])
    first, second = tmp_path / "studies" / "A" / "pilot", tmp_path / "studies" / "B" / "pilot"
    dump = "\n".join(sqlite3.connect(results / "evalkit.sqlite").iterdump())
    _build(results, first, "fast,slow")
    _build(results, second, "mid,slow")
    assert "\n".join(sqlite3.connect(results / "evalkit.sqlite").iterdump()) == dump  # building only reads

    simulate(first, participants=8, strengths={"fast": 2.0, "slow": -2.0}, seed=1)
    simulate(second, participants=8, strengths={"mid": -2.0, "slow": 2.0}, seed=2)
    for folder in (first, second):
        _ok(["study", "analyze", str(folder), "--bootstrap", "50"])

    ids = [load_study(first).study_id, load_study(second).study_id]
    assert ids[0] != ids[1]
    (run_id,) = [r[0] for r in _rows(results, "SELECT run_id FROM runs")]
    stored = _rows(results, "SELECT study_id, study, protocol, run_ids, label FROM preferences WHERE rank=1")
    assert sorted(stored) == sorted(
        [
            (ids[0], "pilot", "quick", json.dumps([run_id]), "fast"),
            (ids[1], "pilot", "quick", json.dumps([run_id]), "slow"),
        ]
    )
    assert {r[0] for r in _rows(results, "SELECT study_id FROM metric_agreement")} <= set(ids)

    html = _leaderboard(results, tmp_path / "lb.html")
    columns = _human_columns(html)
    assert sorted(columns) == sorted(f"pilot · {i[:6]}" for i in ids)  # one column per study, told apart by id
    ranking = html[html.index('id="preference-table"') :]
    for study_id in ids:
        assert ranking.count(f"pilot · {study_id[:6]}") == 2  # each study's two methods, each labelled by study


def test_a_study_of_protocol_a_is_not_in_a_leaderboard_of_protocol_b(tmp_path):
    results = make_results(tmp_path / "results", ["fast", "slow"])
    make_results(results, ["fast", "slow"], protocol_name="quick-b")
    run_a, run_b = [r[0] for r in _rows(results, "SELECT run_id FROM runs ORDER BY started, rowid")]
    on_a, on_b = tmp_path / "studies" / "on-a", tmp_path / "studies" / "on-b"
    _build(results, on_a, "fast,slow", "--protocol", "quick")  # the latest run is of quick-b
    _build(results, on_b, "fast,slow")  # default: every run of the latest run's protocol
    assert (load_study(on_a).protocol, load_study(on_a).run_ids) == ("quick", [run_a])
    assert (load_study(on_b).protocol, load_study(on_b).run_ids) == ("quick-b", [run_b])

    for folder in (on_a, on_b):
        simulate(folder, participants=6, strengths={"fast": 1.0, "slow": -1.0}, seed=3)
        _ok(["study", "analyze", str(folder), "--bootstrap", "50"])

    assert _human_columns(_leaderboard(results, tmp_path / "b.html", run_b)) == ["on-b"]
    assert _human_columns(_leaderboard(results, tmp_path / "a.html", run_a)) == ["on-a"]
    html = _leaderboard(results, tmp_path / "default.html")  # every run of the latest run's protocol: quick-b
    assert _human_columns(html) == ["on-b"] and "on-a" not in html


def test_build_selects_runs_like_every_reading_command(tmp_path):
    results = make_results(tmp_path / "results", ["fast", "slow"])
    make_results(results, ["mid"])  # a second run of the same protocol, with another method
    make_results(results, ["fast", "slow"], protocol_name="quick-b")
    r1, r2, r3 = [r[0] for r in _rows(results, "SELECT run_id FROM runs ORDER BY started, rowid")]
    studies = tmp_path / "studies"
    built = {
        "default": ("fast,slow", []),
        "protocol": ("fast,mid", ["--protocol", "quick"]),  # methods of two runs of one protocol
        "all": ("slow,mid", ["--run", "all", "--protocol", "quick"]),
        "latest": ("fast,slow", ["--run", "latest"]),
        "one": ("fast,slow", ["--run", r1]),
    }
    for name, (methods, extra) in built.items():
        _build(results, studies / name, methods, *extra)
    assert {name: load_study(studies / name).run_ids for name in built} == {
        "default": [r3],
        "protocol": [r1, r2],
        "all": [r1, r2],
        "latest": [r3],
        "one": [r1],
    }
    out = CliRunner().invoke(
        app, ["study", "build", "--results", str(results), "-q", "style", "-m", "fast,slow", "--run", r1, "--run", r3,
              "--out", str(studies / "mixed")],
    )  # fmt: skip
    assert "different protocols" in str(out.exception) and "\n" not in str(out.exception)
    assert not (studies / "mixed").exists()


def test_analyze_is_refused_while_a_run_writes_the_root_and_can_wait(tmp_path):
    results = make_results(tmp_path / "results", ["fast", "slow"])
    folder = tmp_path / "studies" / "pilot"
    _build(results, folder, "fast,slow")
    simulate(folder, participants=6, strengths={"fast": 1.0, "slow": -1.0}, seed=4)

    lock = RootLock(results, f"evalkit run --results {results} -m fast").acquire()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "evalkit", "study", "analyze", str(folder), "--bootstrap", "50"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **ENV},
        )
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert f"pid {os.getpid()}" in lines[0] and f"evalkit run --results {results} -m fast" in lines[0]
        assert "--wait" in lines[0]
        assert not (folder / "analysis").exists()  # nothing written beside the run
        assert _rows(results, "SELECT COUNT(*) FROM preferences") == [(0,)]
        assert _rows(results, "SELECT COUNT(*) FROM metric_agreement") == [(0,)]
    finally:
        threading.Timer(1.5, lock.release).start()  # --wait queues behind the run until it releases the root
    output = _ok(["study", "analyze", str(folder), "--bootstrap", "50", "--wait"])
    assert "waiting for pid" in output
    assert _rows(results, "SELECT COUNT(*) FROM preferences") == [(2,)]


def _old_shape(config: dict) -> dict:
    """The ``study.json`` object of a study built before study ids, key for key in the order that code wrote."""
    keys = [
        "name", "created", "question", "prompt", "texts", "allow_tie", "min_response_ms", "seconds_per_screen",
        "format", "trials_per_participant", "vigilance", "repeats", "show_style", "show_content", "seed",
        "admin_token", "code_secret", "completion_code", "screened_code", "screen_out_after", "max_participants",
        "results", "run_id", "protocol", "resolution", "methods", "pairs", "candidates", "references", "items",
        "static_tokens",
    ]  # fmt: skip
    config = {**config, "run_id": config["run_ids"][0]}
    return {key: config[key] for key in keys}


def test_an_old_study_json_loads_unchanged_and_its_legacy_results_are_replaced(tmp_path):
    folder, _ = make_study(tmp_path, ["fast", "slow"], question="favorite", trials_per_participant=2)
    results = tmp_path / "results"
    path = folder / "study.json"
    old = _old_shape(json.loads(path.read_text()))
    path.write_text(json.dumps(old, indent=1))
    path.chmod(0o600)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    config = load_study(folder)
    assert config.study_id.startswith("legacy-") and config.study_id == load_study(folder).study_id  # stable
    assert config.run_ids == [old["run_id"]] and config.code_secret == old["code_secret"]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # reading never rewrites the file

    # results this study wrote before study ids, as the schema-3 migration keeps them: keyed by its name
    with sqlite3.connect(results / "evalkit.sqlite") as conn:
        conn.execute("INSERT INTO preferences VALUES ('favorite-ab', 'favorite-ab', NULL, NULL, 'fast', 1, 0, 2, 1, 9)")
    html = _leaderboard(results, tmp_path / "legacy.html")
    assert _human_columns(html) == ["favorite-ab (legacy)"]

    simulate(folder, participants=6, strengths={"fast": 1.0, "slow": -1.0}, seed=5)
    _ok(["study", "analyze", str(folder), "--bootstrap", "50"])
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # nor does analysing it
    assert _rows(results, "SELECT DISTINCT study_id, study, protocol, run_ids FROM preferences") == [
        (config.study_id, "favorite-ab", "quick", json.dumps([old["run_id"]]))
    ]  # its legacy rows are replaced, now with the runs it was built from
    assert _human_columns(_leaderboard(results, tmp_path / "lb.html")) == ["favorite-ab"]


def test_the_oldest_study_json_gains_a_stable_code_key_in_memory_only(tmp_path):
    legacy = Path(__file__).parent / "data" / "legacy_v1" / "study.json"
    folder = tmp_path / "study"
    folder.mkdir()
    path = folder / "study.json"
    path.write_bytes(legacy.read_bytes())
    path.chmod(0o600)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    first, second = load_study(folder), load_study(folder)
    assert "code_secret" not in json.loads(before[0])
    assert first.code_secret and first.code_secret == second.code_secret  # the same codes on every start
    assert first.code_secret != first.admin_token and first.min_response_ms == 0 and first.texts == {}
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
