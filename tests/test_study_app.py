"""The study server through Starlette's ASGI test client: blinding, validation, idempotency, restarts, admin."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from starlette.testclient import TestClient

from evalkit.study.app import create_app
from evalkit.study.build import load_study
from evalkit.study.render import render
from tests.study_support import make_study

LABELS = ["alpha_method", "beta_method", "gamma_method"]


@pytest.fixture
def study(tmp_path):
    folder, _ = make_study(tmp_path, LABELS, question="style", trials_per_participant=4)
    return folder


def _client(folder, **params) -> TestClient:
    client = TestClient(create_app(folder), follow_redirects=False)
    r = client.post("/start", data={"consent": "yes", **params})
    assert r.status_code == 303 and r.headers["location"] == "/trial"
    return client


def _trial(client) -> tuple[int, list[str], str]:
    r = client.get("/trial")
    assert r.status_code == 200
    idx = int(re.search(r'name="trial" value="(\d+)"', r.text).group(1))
    return idx, re.findall(r'name="choice" value="([^"]+)"', r.text), r.text


def _votes(folder) -> list[tuple]:
    with sqlite3.connect(folder / "study.sqlite") as conn:
        return conn.execute("SELECT pid, idx, token, cand FROM votes ORDER BY pid, idx").fetchall()


def test_pages_and_manifest_hide_methods_and_catch_flags(study):
    config = load_study(study)
    secrets_ = [
        *LABELS,
        *config.candidates,
        "vigilance",
        "repeat",
        "catch",
        "correct",
        config.admin_token,
        *(c.job_key for c in config.candidates.values() if c.job_key),
    ]
    client = _client(study)
    pages = []
    for _ in range(load_study(study).trials_per_participant + config.vigilance + config.repeats):
        idx, tokens, html = _trial(client)
        pages.append(html)
        for name in re.findall(r'src="/img/([^"]+)"', html):
            assert re.fullmatch(r"[0-9a-f]{32}\.png", name)
        assert client.post("/vote", data={"trial": idx, "choice": tokens[1]}).status_code == 303
    assert client.get("/trial").headers["location"] == "/done"
    manifest = (study / "static" / "manifest.json").read_text()
    for text in [*pages, manifest, (study / "static" / "index.html").read_text()]:
        for secret in secrets_:
            assert secret not in text
    # option tokens are per trial: the same image never carries the same token twice
    tokens = [re.findall(r'name="choice" value="([^"]+)"', p) for p in pages]
    assert len({t for ts in tokens for t in ts}) == sum(len(ts) for ts in tokens)


def test_answer_key_database_and_outside_files_are_unreachable(study, tmp_path):
    client = _client(study)
    (tmp_path / "outside.png").write_bytes(b"secret")
    probes = [
        "/study.json",
        "/study.sqlite",
        "/static/manifest.json",
        "/img/../study.json",
        "/img/..%2fstudy.json",
        "/img/%2e%2e%2fstudy.json",
        "/img/..%2F..%2Foutside.png",
        "/img/study.json",
        "/img/" + "0" * 32 + ".png",
        "/admin",
        "/admin/votes.csv",
        "/admin?token=wrong",
        "/admin/votes.csv?token=" + "x" * 32,
    ]
    token = load_study(study).admin_token
    for path in probes:
        r = client.get(path)
        assert r.status_code in (401, 404, 405), path
        assert token not in r.text and "alpha_method" not in r.text, path
    # an image that is part of the study is served
    _, _, html = _trial(client)
    assert client.get(re.search(r'src="(/img/[^"]+)"', html).group(1)).headers["content-type"] == "image/png"
    # the admin page and CSV need the token, and then show methods (the admin may see them); the token is
    # exchanged for a cookie and leaves the URL (issue 11: it used to stay there through the page's refresh)
    r = client.get(f"/admin?token={token}")
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    r = client.get("/admin")
    assert r.status_code == 200 and 'id="started">1<' in r.text
    assert token not in r.text
    assert client.get("/admin/votes.csv", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_participants_cannot_touch_each_others_trials(study):
    alice, bob = _client(study), _client(study)
    a_idx, a_tokens, _ = _trial(alice)
    b_idx, _, _ = _trial(bob)
    r = bob.post("/vote", data={"trial": a_idx, "choice": a_tokens[0]})  # Alice's option token, Bob's session
    assert r.status_code == 400 and _votes(study) == []
    stranger = TestClient(create_app(study), follow_redirects=False)
    assert stranger.post("/vote", data={"trial": 0, "choice": a_tokens[0]}).status_code == 403
    stranger.cookies.set("evalkit_study", "not-a-participant")
    assert stranger.post("/vote", data={"trial": 0, "choice": a_tokens[0]}).status_code == 403
    assert _votes(study) == []


def test_malformed_votes_are_rejected_and_change_nothing(study):
    client = _client(study)
    idx, tokens, _ = _trial(client)
    bad = [
        ({"trial": idx}, 400),
        ({"choice": tokens[0]}, 400),
        ({"trial": "x", "choice": tokens[0]}, 400),
        ({"trial": "-1", "choice": tokens[0]}, 400),
        ({"trial": "1e3", "choice": tokens[0]}, 400),
        ({"trial": idx, "choice": "<script>"}, 400),
        ({"trial": idx, "choice": "nottheoption"}, 400),
        ({"trial": idx, "choice": tokens[0], "rt": "-5"}, 400),
        ({"trial": 999, "choice": tokens[0]}, 404),
        ({"trial": idx + 1, "choice": tokens[0]}, 400),
    ]
    for data, status in bad:
        assert client.post("/vote", data=data).status_code == status, data
    assert client.post("/vote", content=b"trial=0", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/vote", content=b"[1, 2]", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/vote", content=b"{bad json", headers={"content-type": "application/json"}).status_code == 400
    big = "a" * 10_000
    assert client.post("/vote", data={"trial": idx, "choice": tokens[0], "pad": big}).status_code == 413
    assert client.post("/start", data={"consent": "no"}).status_code == 400
    assert client.get("/?PROLIFIC_PID=<script>alert(1)</script>").status_code == 400
    assert _votes(study) == []
    assert _trial(client)[0] == idx  # still on the same trial


def test_votes_are_idempotent_and_survive_a_restart(study):
    client = _client(study, PROLIFIC_PID="P123", STUDY_ID="S9", SESSION_ID="X1")
    idx, tokens, _ = _trial(client)
    r = client.post("/vote", data={"trial": idx, "choice": tokens[0]}, headers={"accept": "application/json"})
    assert r.json()["status"] == "stored"
    r = client.post("/vote", data={"trial": idx, "choice": tokens[0]}, headers={"accept": "application/json"})
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert client.post("/vote", data={"trial": idx, "choice": tokens[1]}).status_code == 409
    assert len(_votes(study)) == 1
    nxt, _, _ = _trial(client)
    # "restart": a fresh app on the same folder; the cookie resumes at the same trial, nothing is lost
    restarted = TestClient(create_app(study), follow_redirects=False)
    restarted.cookies.update(client.cookies)
    assert _trial(restarted)[0] == nxt == idx + 1
    assert restarted.get("/").headers["location"] == "/trial"  # reload of the entry page resumes too
    # a returning Prolific ID without the cookie never gets that session (issue 11: knowing someone's Prolific ID
    # used to be enough to answer as them): it gets a fresh session, flagged as a repeat ID
    again = TestClient(create_app(study), follow_redirects=False)
    again.post("/start", data={"consent": "yes", "PROLIFIC_PID": "P123"})
    assert _trial(again)[0] == 0
    assert again.cookies["evalkit_study"] != client.cookies["evalkit_study"]
    with sqlite3.connect(study / "study.sqlite") as conn:
        assert conn.execute(
            "SELECT prolific_pid, study_id, session_id, repeat_id FROM participants ORDER BY n"
        ).fetchall() == [("P123", "S9", "X1", 0), ("P123", None, None, 1)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_templates_escape():
    html = render("done.html", study="s", nonce="n", code='<script>alert("x")</script>', prolific_url=None)
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    html = render(
        "consent.html",
        study="s",
        nonce="n",
        prompt="<b>",
        total=3,
        params={"prolific_pid": '"><img src=x>', "study_id": None, "session_id": None},
    )
    assert '"><img' not in html and "&#34;&gt;&lt;img" in html


def test_study_json_is_never_inside_the_public_folder(study):
    public = {p.name for p in (study / "static").rglob("*")}
    assert "study.json" not in public and "study.sqlite" not in public
    manifest = json.loads((study / "static" / "manifest.json").read_text())
    assert {"sequences", "prompt", "format"} <= set(manifest)
    assert all(set(o) == {"token", "image"} for seq in manifest["sequences"] for t in seq for o in t["options"])


def test_admin_reports_catch_pass_rates_and_exports_every_vote(study):
    from tests.study_support import simulate

    config = load_study(study)
    simulate(study, participants=3, strengths=dict.fromkeys(LABELS, 0.0), seed=1, careless=1)
    client = TestClient(create_app(study))
    html = client.get(f"/admin?token={config.admin_token}").text
    # two honest participants pass both vigilance trials, the careless one fails both: 4 of 6
    assert re.search(r'id="vigilance">66\.7%</b> \(n=6\)', html)
    assert 'id="completed">3<' in html
    csv_text = client.get(f"/admin/votes.csv?token={config.admin_token}").text
    per = config.trials_per_participant + config.vigilance + config.repeats
    assert len(csv_text.strip().splitlines()) == 1 + 3 * per
    assert csv_text.count(",vigilance,") == 6
