"""Issue 17: a study a researcher can run on Prolific without editing code - their own texts (safe Markdown),
instructions that match the format, a preview with the answer key, the Prolific export, "no preference" answers,
and the speed check."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest
from starlette.testclient import TestClient

from evalkit.errors import EvalkitError
from evalkit.study import db as studydb
from evalkit.study.analyze import Exclusion, analyze
from evalkit.study.app import create_app
from evalkit.study.build import load_study
from evalkit.study.prolific import prolific_rows
from evalkit.study.texts import load_texts, render_markdown
from tests.study_support import make_study

LABELS = ["alpha_method", "beta_method", "gamma_method"]
TEXTS = '''
title = "The Painting Study of Lab X"
information = """We are **Lab X**. See [our page](https://example.org/lab) and <script>alert(1)</script>."""
consent = "I agree that my answers are stored for 10 years (ethics approval EC-2026-17)."
question = "Which image is the better painting of this photo?"
thank_you = "Thanks! Questions: [mail us](mailto:lab@example.org)."
contact = "Lab X, University of Y - [javascript](javascript:alert(1))"
'''


def texts_file(tmp_path):
    path = tmp_path / "texts.toml"
    path.write_text(TEXTS)
    return path


# -- texts -------------------------------------------------------------------------------------------------------
def test_markdown_is_rendered_safely_and_bad_files_are_one_line_errors(tmp_path):
    html = render_markdown("**b** <img src=x onerror=alert(1)> [x](javascript:alert(1)) [ok](https://a.b/c)")
    assert "<strong>b</strong>" in html and "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html and 'href="https://a.b/c"' in html and 'rel="noopener noreferrer"' in html
    bad = tmp_path / "bad.toml"
    bad.write_text('titel = "x"\n')
    with pytest.raises(EvalkitError, match="unknown field 'titel'"):
        load_texts(bad)
    bad.write_text("consent = 3\n")
    with pytest.raises(EvalkitError, match="field 'consent' must be a non-empty string"):
        load_texts(bad)
    with pytest.raises(EvalkitError, match="file not found"):
        load_texts(tmp_path / "missing.toml")


def test_custom_texts_reach_every_page(tmp_path):
    folder, _ = make_study(tmp_path, LABELS, trials_per_participant=2, texts=texts_file(tmp_path))
    client = TestClient(create_app(folder), follow_redirects=False)
    consent = client.get("/").text
    assert "The Painting Study of Lab X" in consent and "<strong>Lab X</strong>" in consent
    assert "ethics approval EC-2026-17" in consent and "Which image is the better painting of this photo?" in consent
    assert "<script>alert(1)" not in consent and "&lt;script&gt;" in consent
    assert 'href="javascript' not in consent and "Lab X, University of Y" in consent
    assert client.post("/start", data={"consent": "yes"}).status_code == 303
    total = studydb.progress(studydb.connect(folder), _pid(folder)).total
    for _ in range(total):
        page = client.get("/trial").text
        assert "Which image is the better painting of this photo?" in page
        idx = re.search(r'name="trial" value="(\d+)"', page).group(1)
        token = re.findall(r'name="choice" value="([^"]+)"', page)[0]
        client.post("/vote", data={"trial": idx, "choice": token, "rt": "900"})
    done = client.get("/done").text
    assert 'href="mailto:lab@example.org"' in done and "completion-code" in done
    assert load_study(folder).texts["consent"].startswith("I agree")  # stored with the study


def _pid(folder) -> str:
    with sqlite3.connect(folder / "study.sqlite") as conn:
        return conn.execute("SELECT pid FROM participants ORDER BY n DESC").fetchone()[0]


@pytest.mark.parametrize(
    "fmt,expected", [("ab", "for the left one"), ("nway", "1</b>&ndash;<b>3</b> or <b>A</b>&ndash;<b>C")]
)
def test_instructions_match_the_format_and_state_screens_and_duration(tmp_path, fmt, expected):
    folder, _ = make_study(tmp_path, LABELS, fmt=fmt, trials_per_participant=3, allow_tie=fmt == "ab")
    config = load_study(folder)
    page = TestClient(create_app(folder)).get("/").text
    total = config.trials_per_participant + config.vigilance + config.repeats
    assert expected in page
    assert f"You will see <b>{total}</b> screens" in page and "minute" in page
    assert ("No preference" in page) == (fmt == "ab")
    if fmt == "ab":
        assert "1–5" not in page and "A</b>&ndash;<b>E" not in page


# -- preview -----------------------------------------------------------------------------------------------------
def test_preview_shows_every_item_with_its_answer_key_and_records_nothing(tmp_path):
    folder, _ = make_study(tmp_path, LABELS, trials_per_participant=3)
    config = load_study(folder)
    client = TestClient(create_app(folder), follow_redirects=False)
    assert client.get("/admin/preview").status_code == 401
    page = client.get("/admin/preview", headers={"Authorization": f"Bearer {config.admin_token}"}).text
    assert page.count('class="preview-item"') == len(config.items)
    assert all(label in page for label in LABELS) and "(catch answer)" in page
    with sqlite3.connect(folder / "study.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 0


# -- Prolific export, speed check, repeat IDs --------------------------------------------------------------------
def _answer(conn, pid: str, config, how: str, stop: int | None = None, rt: int = 1200) -> None:
    items = {it.id: it for it in config.items}
    total = studydb.progress(conn, pid).total
    for idx in range(total if stop is None else stop):
        row = studydb.trial(conn, pid, idx)
        options = json.loads(row["options"])
        correct = items[row["item"]].correct
        if row["kind"] == "vigilance":
            pick = [t for t, c in options if (c in correct) == (how != "careless")]
            token = pick[0]
        elif row["kind"] == "repeat":
            first = conn.execute("SELECT cand FROM votes WHERE pid=? AND idx=?", (pid, row["repeat_of"])).fetchone()
            token = next(t for t, c in options if c == first["cand"])
        else:
            token = options[0][0]
        studydb.record_vote(conn, pid, idx, token, rt, studydb.CodeIssuer.from_config(config))


def test_prolific_export_matches_the_database_row_for_row(tmp_path):
    folder, _ = make_study(
        tmp_path, LABELS, trials_per_participant=3, vigilance=2, screened_code="SCREENED1", screen_out_after=0
    )
    config = load_study(folder)
    items = list(config.items)
    studydb.init(folder)
    conn = studydb.connect(folder)
    plan = {"good": ("complete", 1200), "careless": ("screened out", 1200), "fast": ("screened out", 150)}
    for who, (_, rt) in plan.items():
        pid = studydb.create_participant(conn, config, items, {"prolific_pid": f"P_{who}", "session_id": f"S_{who}"})
        _answer(conn, pid, config, who, rt=rt)
    pid = studydb.create_participant(conn, config, items, {"prolific_pid": "P_half"})
    _answer(conn, pid, config, "good", stop=2)
    studydb.create_participant(conn, config, items, {"prolific_pid": "P_good"})  # came back without the cookie
    conn.close()
    rows = prolific_rows(folder, config)
    by = {(r["prolific_pid"], r["participant"]): r for r in rows}
    people = studydb.participant_rows(folder)
    assert len(rows) == len(people) == 5
    votes = studydb.vote_rows(folder)
    for person in people:
        row = by[(person["prolific_pid"], person["n"])]
        mine = [v["rt_ms"] for v in votes if v["pid"] == person["pid"]]
        assert row["completion_code"] == (person["completion_code"] or "")
        assert row["votes"] == person["answered"] == len(mine)
        assert row["total_time_s"] == (round(sum(mine) / 1000, 3) if mine else "")
        assert row["median_time_s"] == (round(float(np.median(mine)) / 1000, 3) if mine else "")
    statuses = {(r["prolific_pid"], r["status"]) for r in rows}
    assert statuses == {
        ("P_good", "complete"),
        ("P_careless", "screened out"),
        ("P_fast", "screened out"),
        ("P_half", "incomplete"),
        ("P_good", "repeat ID"),
    }
    reasons = {r["prolific_pid"] + r["status"]: r["reason"] for r in rows}
    assert reasons["P_fastscreened out"].startswith("too fast: median response 0.15 s < 0.50 s")
    assert reasons["P_carelessscreened out"].startswith("failed 2 of 2 attention checks")
    # the admin page flags the fast one; analysis excludes it unless asked to keep it
    admin = TestClient(create_app(folder)).get("/admin", headers={"Authorization": f"Bearer {config.admin_token}"})
    assert '<b id="too-fast">1</b>' in admin.text
    kept = analyze(folder, Exclusion(max_vigilance_failures=5, keep_repeat_ids=True, keep_fast=True), rounds=20)
    dropped = analyze(folder, Exclusion(max_vigilance_failures=5, keep_repeat_ids=True), rounds=20)
    assert kept.votes_used > dropped.votes_used and len(dropped.excluded) == len(kept.excluded) + 1


# -- no preference -----------------------------------------------------------------------------------------------
def test_ties_are_half_a_win_and_only_offered_on_regular_trials(tmp_path):
    folder, _ = make_study(
        tmp_path,
        LABELS,
        trials_per_participant=3,
        allow_tie=True,
        metrics={"ssim": {"alpha_method": 0.9, "beta_method": 0.5, "gamma_method": 0.1}},
    )
    config = load_study(folder)
    items = list(config.items)
    studydb.init(folder)
    conn = studydb.connect(folder)
    for p in range(6):
        pid = studydb.create_participant(conn, config, items, {"prolific_pid": f"T{p}"})
        for idx in range(studydb.progress(conn, pid).total):
            row = studydb.trial(conn, pid, idx)
            if row["kind"] == "regular":
                assert studydb.record_vote(conn, pid, idx, studydb.TIE_TOKEN, 900, allow_tie=True) == "stored"
            else:  # catch trials and repeats have no "no preference" answer
                with pytest.raises(studydb.VoteError):
                    studydb.record_vote(conn, pid, idx, studydb.TIE_TOKEN, 900, allow_tie=True)
                options = json.loads(row["options"])
                correct = next(it for it in items if it.id == row["item"]).correct
                token = next((t for t, c in options if c in correct), options[0][0])
                studydb.record_vote(conn, pid, idx, token, 900, allow_tie=True)
    conn.close()
    result = analyze(folder, Exclusion(min_consistency=0.0), rounds=50)
    assert set(np.round(result.pairwise["win_rate"], 9)) == {0.5}  # every comparison tied: half a win each way
    assert np.allclose(result.preferences["score"], result.preferences["score"].iloc[0])
    agreement = result.metric_agreement.set_index("metric")["agreement"]
    assert agreement["ssim"] == 0.5  # a metric agrees half-way with a person who had no preference
