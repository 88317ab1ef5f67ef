"""`evalkit study participant`: the researcher excludes a session, undoes it, or decides whose session counts for a
Prolific ID, through the command line as a user runs it, and every place that reads the decision follows it.

The command runs in-process through the console entry point (``evalkit.cli.main``: the same one-line error handling
and exit status as the installed script); one real subprocess proves ``python -m evalkit`` (each pays the torch
import, which is slow on a shared 2-core machine).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from evalkit.cli import main
from evalkit.study import db as studydb
from evalkit.study.analyze import Exclusion, analyze
from evalkit.study.app import create_app
from evalkit.study.build import load_study
from tests.study_support import make_study, simulate
from tests.test_study_integrity import answer_all, start

LABELS = ["m_a", "m_b", "m_c"]
LEGACY = Path(__file__).parent / "data" / "legacy_v1"
XSS = "<script>bad</script>"


@pytest.fixture
def evalkit(capsys, monkeypatch):
    """Run the ``evalkit`` console entry point with these arguments: ``(exit status, stdout, stderr)``."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["evalkit", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return run


def _ok(evalkit, *args: object) -> str:
    code, out, err = evalkit(*args)
    assert code == 0, err
    return out


def _export(evalkit, folder: Path) -> dict[int, tuple[str, str]]:
    """``study export-prolific`` as a user runs it: participant -> (status, reason)."""
    target = folder / "prolific-test.csv"
    _ok(evalkit, "study", "export-prolific", folder, "--out", target)
    return {int(r["participant"]): (r["status"], r["reason"]) for r in csv.DictReader(io.StringIO(target.read_text()))}


def _table(folder: Path, query: str) -> list[tuple]:
    with sqlite3.connect(folder / "study.sqlite") as conn:
        return conn.execute(query).fetchall()


def _admin(app, path: str, folder: Path) -> str:
    r = TestClient(app).get(path, headers={"Authorization": f"Bearer {load_study(folder).admin_token}"})
    assert r.status_code == 200
    return r.text


def test_the_researcher_gives_the_counted_session_to_the_real_participant(tmp_path, evalkit):
    folder, _ = make_study(tmp_path, LABELS, trials_per_participant=3)
    app = create_app(folder)  # the server keeps running while the researcher decides
    answer_all(start(app, PROLIFIC_PID="REAL01"))  # 0: someone who knew the ID started first
    answer_all(start(app, PROLIFIC_PID="REAL01"))  # 1: the real participant, flagged as the repeat
    answer_all(start(app, PROLIFIC_PID="OTHER1"))  # 2: nobody disputes this one
    lenient = Exclusion(max_vigilance_failures=99, min_consistency=0.0)  # these answer the first option each time
    assert _export(evalkit, folder) == {
        0: ("complete", ""),
        1: ("repeat ID", "another session of this Prolific ID is the counted one"),
        2: ("complete", ""),
    }
    assert analyze(folder, lenient, rounds=20, write_db=False).excluded == [1]

    out = _ok(evalkit, "study", "participant", folder, "--count", 1)
    assert out == "participant 1 is now the counted session of Prolific ID REAL01 (marked repeat ID: 0)\n"
    assert _export(evalkit, folder) == {
        0: ("repeat ID", "another session of this Prolific ID is the counted one"),
        1: ("complete", ""),
        2: ("complete", ""),
    }
    assert analyze(folder, lenient, rounds=20, write_db=False).excluded == [0]
    people = csv.DictReader(io.StringIO(_admin(app, "/admin/participants.csv", folder)))
    assert {r["participant"]: r["repeat_id"] for r in people} == {"0": "1", "1": "0", "2": "0"}
    actions = studydb.admin_actions(folder)
    assert [(a["action"], a["participant"], json.loads(a["detail"])) for a in actions] == [
        ("count", 1, {"prolific_pid": "REAL01", "marked_repeat": [0]})
    ]

    # asking again changes and records nothing; a later session with the ID is still a repeat, never the counted one
    assert "already is the counted session of Prolific ID REAL01: nothing changed" in _ok(
        evalkit, "study", "participant", folder, "--count", 1
    )
    assert len(studydb.admin_actions(folder)) == 1
    answer_all(start(app, PROLIFIC_PID="REAL01"))
    assert _table(folder, "SELECT n, repeat_id FROM participants WHERE prolific_pid='REAL01' ORDER BY n") == [
        (0, 1),
        (1, 0),
        (3, 1),
    ]

    # an exclusion comes first in the export's status order, before "repeat ID"
    _ok(evalkit, "study", "participant", folder, "--exclude", 0, "--reason", "used REAL01's ID")
    assert _export(evalkit, folder)[0] == ("excluded", "used REAL01's ID")


def test_an_exclusion_leaves_analysis_shows_its_reason_escaped_and_can_be_undone(tmp_path, evalkit):
    folder, _ = make_study(tmp_path, LABELS, trials_per_participant=3)
    simulate(folder, participants=4, strengths=dict.fromkeys(LABELS, 0.0), seed=1)  # honest: nobody excluded
    app = create_app(folder)
    before = analyze(folder, rounds=20, write_db=False)
    assert before.excluded == [] and before.notes == []

    out = _ok(evalkit, "study", "participant", folder, "--exclude", 2, "--reason", XSS)
    assert out == f"participant 2 excluded: {XSS}\n"
    after = analyze(folder, rounds=20, write_db=False)
    assert after.excluded == [2] and after.votes_used < before.votes_used
    assert f"participant 2 excluded by the researcher: {XSS}" in after.notes
    listed = {int(r["participant"]): r for r in csv.DictReader((folder / "analysis" / "participants.csv").open())}
    assert listed[2]["excluded_by_researcher"] == XSS and listed[2]["excluded"] == "True"
    assert listed[1]["excluded_by_researcher"] == "" and listed[1]["excluded"] == "False"
    assert _export(evalkit, folder) == {
        0: ("complete", ""),
        1: ("complete", ""),
        2: ("excluded", XSS),
        3: ("complete", ""),
    }
    served = {
        r["participant"]: r["status"] for r in csv.DictReader(io.StringIO(_admin(app, "/admin/prolific.csv", folder)))
    }
    assert served == {"0": "complete", "1": "complete", "2": "excluded", "3": "complete"}
    people = csv.DictReader(io.StringIO(_admin(app, "/admin/participants.csv", folder)))
    assert {r["participant"]: r["excluded"] for r in people} == {"0": "", "1": "", "2": XSS, "3": ""}
    html = _admin(app, "/admin", folder)
    assert '<b id="excluded">1</b>' in html
    assert "excluded</b>: &lt;script&gt;bad&lt;/script&gt;" in html and XSS not in html

    out = _ok(evalkit, "study", "participant", folder, "--include", 2)
    assert out == f"participant 2 included again (was excluded: {XSS})\n"
    again = analyze(folder, rounds=20, write_db=False)
    assert again.excluded == [] and again.votes_used == before.votes_used and again.notes == []
    assert _export(evalkit, folder)[2] == ("complete", "")
    assert '<b id="excluded">0</b>' in _admin(app, "/admin", folder)
    assert _ok(evalkit, "study", "participant", folder, "--include", 2) == (
        "participant 2 was not excluded: nothing changed\n"
    )
    assert [(a["action"], a["participant"]) for a in studydb.admin_actions(folder)] == [("exclude", 2), ("include", 2)]
    assert json.loads(studydb.admin_actions(folder)[0]["detail"]) == {"reason": XSS, "previous": None}


def test_every_refusal_is_one_line_and_changes_nothing(tmp_path, evalkit):
    folder, _ = make_study(tmp_path, LABELS, trials_per_participant=3)
    app = create_app(folder)
    answer_all(start(app))  # 0: no Prolific ID (a link opened without the parameters)
    answer_all(start(app, PROLIFIC_PID="P1"))  # 1
    fresh, _ = make_study(tmp_path / "fresh", LABELS, trials_per_participant=3)  # built, never served
    state = "SELECT n, prolific_pid, repeat_id, excluded FROM participants ORDER BY n"
    before = _table(folder, state)
    cases = [
        ([folder, "--exclude", 9, "--reason", "x"], "no participant 9 in this study (participants are numbered 0 to 1"),
        ([folder, "--count", 0], "participant 0 has no Prolific ID"),
        ([folder, "--exclude", 1], '--exclude needs --reason "why"'),
        ([folder, "--exclude", 1, "--reason", "   "], "--reason must say why"),
        ([folder, "--exclude", 1, "--reason", "two\nlines"], "--reason must be one line"),
        ([folder, "--exclude", 1, "--reason", "x" * 501], "keep it under 500"),
        ([folder, "--exclude", 1, "--reason", "x", "--count", 1], "exactly one of"),
        ([folder, "--include", 0, "--count", 1], "(got --include and --count)"),
        ([folder], "give exactly one of --exclude N --reason TEXT, --include N, --count N"),
        ([folder, "--include", 1, "--reason", "x"], "--reason goes with --exclude only"),
        ([tmp_path / "missing", "--include", 0], "is not a study folder"),
        ([fresh, "--include", 0], "has no sessions yet"),
    ]
    for args, text in cases:
        code, out, err = evalkit("study", "participant", *args)
        assert code == 2 and out == "", (args, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and text in err, (args, err)
        assert "Traceback" not in err
    assert _table(folder, state) == before and studydb.admin_actions(folder) == []
    assert not (fresh / "study.sqlite").exists()  # a refusal does not create a database either

    # the installed entry point says the same in one line
    res = subprocess.run(
        [sys.executable, "-m", "evalkit", "study", "participant", str(folder), "--exclude", "9", "--reason", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and res.stdout == "", res.stderr
    assert res.stderr.startswith("error: no participant 9") and res.stderr.count("\n") == 1
    assert _table(folder, state) == before


def test_an_old_database_gains_the_column_and_the_audit_table(tmp_path, evalkit):
    folder = tmp_path / "study"
    (folder / "static" / "images").mkdir(parents=True)
    for name in ("study.sqlite", "study.json"):
        shutil.copy(LEGACY / name, folder / name)
    columns = "SELECT name FROM pragma_table_info('participants')"
    tables = "SELECT name FROM sqlite_master WHERE type='table'"
    assert ("excluded",) not in _table(folder, columns) and ("admin_actions",) not in _table(folder, tables)
    votes = _table(folder, "SELECT * FROM votes ORDER BY pid, idx")

    out = _ok(evalkit, "study", "participant", folder, "--exclude", 1, "--reason", "duplicate account")
    assert out == "participant 1 excluded: duplicate account\n"
    assert ("excluded",) in _table(folder, columns) and ("admin_actions",) in _table(folder, tables)
    assert _table(folder, "SELECT n, excluded FROM participants ORDER BY n") == [
        (0, None),
        (1, "duplicate account"),
        (2, None),
    ]
    assert _table(folder, "SELECT * FROM votes ORDER BY pid, idx") == votes
    assert _export(evalkit, folder)[1] == ("excluded", "duplicate account")

    # `init` (what `study serve` runs first) migrates an old database the same way
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(LEGACY / "study.sqlite", plain / "study.sqlite")
    studydb.init(plain)
    assert ("excluded",) in _table(plain, columns) and ("admin_actions",) in _table(plain, tables)
