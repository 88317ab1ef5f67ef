"""`analyze` on simulated studies with a known ground truth."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from evalkit.study import db as studydb
from evalkit.study.analyze import analyze
from evalkit.study.build import load_study
from evalkit.study.stats import to_elo
from tests.study_support import make_study, simulate

TRUTH = {"m_best": 1.2, "m_good": 0.4, "m_fair": -0.4, "m_poor": -1.2}  # mean-zero log-strengths


def test_analyze_recovers_known_ordering_with_covering_intervals(tmp_path):
    labels = list(TRUTH)
    # content_loss (lower is better) agrees with the truth, style_loss is its mirror image
    metrics = {"content_loss": {k: -v for k, v in TRUTH.items()}, "style_loss": dict(TRUTH)}
    folder, built = make_study(tmp_path, labels, question="style", metrics=metrics, trials_per_participant=12)
    simulate(folder, participants=45, strengths=TRUTH, seed=11, careless=5)
    a = analyze(folder, rounds=300)

    prefs = a.preferences.set_index("label")
    assert list(a.preferences["label"]) == labels  # best first
    assert list(a.preferences["rank"]) == sorted(a.preferences["rank"])
    truth_elo = dict(zip(labels, to_elo(np.array(list(TRUTH.values()))), strict=True))
    for label in labels:
        assert prefs.loc[label, "lower"] <= truth_elo[label] <= prefs.loc[label, "upper"], label
    assert prefs.loc["m_best", "rank"] == 1 and prefs.loc["m_poor", "rank"] > prefs.loc["m_good", "rank"]

    # the five careless participants fail every vigilance trial; nobody else is excluded
    assert a.participants == 45 and a.excluded == [0, 1, 2, 3, 4]
    report = (folder / "analysis" / "participants.csv").read_text().splitlines()
    assert sum(line.endswith("True") for line in report[1:]) == 5

    # pairwise: the best method beats the worst, significantly after Holm correction
    row = a.pairwise[(a.pairwise.a == "m_best") & (a.pairwise.b == "m_poor")].iloc[0]
    assert row.win_rate > 0.8 and row.p_holm < 0.001 and row.lower <= row.win_rate <= row.upper

    # metric agreement, recomputed independently from the raw votes of the kept participants
    config = load_study(folder)
    cands = config.candidates
    kept = {r["pid"] for r in studydb.vote_rows(folder) if r["n"] >= 5}
    agree = []
    for r in studydb.vote_rows(folder):
        if r["kind"] == "regular" and r["pid"] in kept:
            other = next(c for _, c in json.loads(r["options"]) if c != r["cand"])
            agree.append(TRUTH[cands[r["cand"]].label] > TRUTH[cands[other].label])
    expected = float(np.mean(agree))
    ma = a.metric_agreement.set_index("metric")
    assert ma.loc["content_loss", "agreement"] == pytest.approx(expected)
    assert ma.loc["style_loss", "agreement"] == pytest.approx(1 - expected)
    assert ma.loc["content_loss", "n"] == len(agree) == a.votes_used

    # written into the run database in the tables the leaderboard reads
    with sqlite3.connect(tmp_path / "results" / "evalkit.sqlite") as conn:
        rows = conn.execute(
            "SELECT label, rank, votes FROM preferences WHERE study=? ORDER BY rank, score DESC", (folder.name,)
        ).fetchall()
        assert [r[0] for r in rows] == labels and all(r[2] > 0 for r in rows)
        agreement = dict(
            conn.execute("SELECT metric, agreement FROM metric_agreement WHERE study=?", (folder.name,)).fetchall()
        )
        assert agreement["content_loss"] == pytest.approx(expected)
    # re-analysing replaces this study's rows instead of duplicating them
    analyze(folder, rounds=50)
    with sqlite3.connect(tmp_path / "results" / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM preferences WHERE study=?", (folder.name,)).fetchone()[0] == 4


def test_analyze_nway_study_ranks_the_best_first(tmp_path):
    truth = {"a": 1.0, "b": 0.0, "c": -1.0}
    folder, _ = make_study(tmp_path, list(truth), question="favorite", fmt="nway")
    simulate(folder, participants=40, strengths=truth, seed=4)
    a = analyze(folder, rounds=200)
    assert list(a.preferences["label"]) == ["a", "b", "c"]
    assert a.excluded == []
    assert not np.isnan(a.alpha) and -1 <= a.alpha <= 1
