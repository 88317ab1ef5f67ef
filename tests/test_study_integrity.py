"""Issue 11, study server: identity, completion codes, strict input (with a fuzz test), abuse limits, secrets.

Each test here failed on the server of commit 59c706b (see the issue): a Prolific ID without its cookie took over the
earlier session, the completion code was one constant printed in the public manifest, ``trial=²`` answered 500 and
``trial=١`` was read as 1, cookie-less ``/start`` was unlimited, and study.json was world-readable.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import stat
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from evalkit.study.analyze import Exclusion, analyze
from evalkit.study.app import ServeOptions, create_app
from evalkit.study.build import load_study
from evalkit.study.codes import completion_code
from tests.study_support import make_study, simulate

LABELS = ["m_a", "m_b", "m_c"]


@pytest.fixture
def study(tmp_path):
    folder, _ = make_study(
        tmp_path,
        LABELS,
        question="style",
        trials_per_participant=3,
        completion_code="PROLIF1",
        submit_url="https://study.example.org/static-submit",  # its static export posts answers back
    )
    return folder


def start(app_or_folder, options: ServeOptions | None = None, **params) -> TestClient:
    app = app_or_folder if not hasattr(app_or_folder, "is_dir") else create_app(app_or_folder, options)
    client = TestClient(app, follow_redirects=False)
    r = client.post("/start", data={"consent": "yes", **params})
    assert r.status_code == 303 and r.headers["location"] == "/trial", r.text
    return client


def current(client: TestClient) -> tuple[int, list[str]]:
    r = client.get("/trial")
    if r.status_code == 303:
        return -1, []
    return int(re.search(r'name="trial" value="(\d+)"', r.text).group(1)), re.findall(
        r'name="choice" value="([^"]+)"', r.text
    )


def answer_all(client: TestClient, upto: int | None = None) -> int:
    answered = 0
    while True:
        idx, tokens = current(client)
        if idx < 0 or (upto is not None and answered >= upto):
            return answered
        assert client.post("/vote", data={"trial": idx, "choice": tokens[0], "rt": "800"}).status_code == 303
        answered += 1


def votes(folder) -> list[tuple]:
    with sqlite3.connect(folder / "study.sqlite") as conn:
        return conn.execute("SELECT pid, idx, token, cand, rt_ms FROM votes ORDER BY pid, idx").fetchall()


# -- 1. identity ---------------------------------------------------------------------------------------------------
def test_a_prolific_id_without_its_cookie_gets_a_fresh_flagged_session(study, tmp_path):
    app = create_app(study)
    alice = start(app, PROLIFIC_PID="ALICE1")
    answer_all(alice, upto=2)
    before = votes(study)
    thief = start(app, PROLIFIC_PID="ALICE1")  # no cookie, Alice's Prolific ID
    idx, tokens = current(thief)
    assert idx == 0  # not Alice's trial 2
    assert thief.post("/vote", data={"trial": 0, "choice": tokens[1]}).status_code == 303
    after = votes(study)
    assert set(before) <= set(after) and len(after) == len(before) + 1
    alice_pid, thief_pid = alice.cookies["evalkit_study"], thief.cookies["evalkit_study"]
    assert alice_pid != thief_pid
    assert [v for v in after if v[0] == alice_pid] == [v for v in before if v[0] == alice_pid]
    with sqlite3.connect(study / "study.sqlite") as conn:
        flags = dict(conn.execute("SELECT pid, repeat_id FROM participants").fetchall())
    assert flags == {alice_pid: 0, thief_pid: 1}
    # shown in the admin page
    admin = TestClient(app)
    html = admin.get(f"/admin?token={load_study(study).admin_token}").text
    assert 'id="repeat-ids">1<' in html and "repeat ID" in html


def test_analyze_leaves_repeat_ids_out_unless_kept(tmp_path):
    folder, _ = make_study(tmp_path, LABELS, question="style", trials_per_participant=3)
    simulate(folder, participants=4, strengths=dict.fromkeys(LABELS, 0.0), seed=3)
    with sqlite3.connect(folder / "study.sqlite") as conn:  # participant 3 came back under participant 0's ID
        conn.execute("UPDATE participants SET prolific_pid='sim0', repeat_id=1 WHERE n=3")
    default = analyze(folder, rounds=20, write_db=False)
    kept = analyze(folder, Exclusion(keep_repeat_ids=True), rounds=20, write_db=False)
    assert default.excluded == [3] and kept.excluded == []
    assert kept.votes_used > default.votes_used


# -- 2. completion codes -------------------------------------------------------------------------------------------
def test_codes_are_per_participant_issued_only_at_the_end_and_listed_for_the_admin(study):
    config = load_study(study)
    manifest = (study / "static" / "manifest.json").read_text()
    app = create_app(study)
    clients = [start(app, PROLIFIC_PID=f"P{i}") for i in range(3)]
    first = clients[0]
    answer_all(first, upto=1)
    assert first.get("/done").headers["location"] == "/trial"  # not before the last answer
    with sqlite3.connect(study / "study.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM participants WHERE completion_code IS NOT NULL").fetchone() == (0,)
    codes = {}
    for client in clients:
        answer_all(client)
        page = client.get("/done").text
        code = re.search(r'id="completion-code">([^<]+)<', page).group(1)
        pid = client.cookies["evalkit_study"]
        assert code == completion_code(config.code_secret, pid)
        assert "cc=PROLIF1" in page  # Prolific's own study code, in the return link
        codes[pid] = code
    assert len(set(codes.values())) == 3
    for code in codes.values():
        assert code not in manifest and code not in (study / "static" / "index.html").read_text()
    assert config.code_secret not in manifest
    rows = list(
        csv.DictReader(io.StringIO(TestClient(app).get(f"/admin/participants.csv?token={config.admin_token}").text))
    )
    assert {r["session"]: r["completion_code"] for r in rows} == codes
    assert {r["prolific_pid"] for r in rows} == {"P0", "P1", "P2"} and {r["code_kind"] for r in rows} == {"complete"}


def test_participants_failing_catch_trials_get_the_screened_out_code(tmp_path):
    folder, _ = make_study(
        tmp_path,
        LABELS,
        question="style",
        trials_per_participant=3,
        screen_out_after=0,
        completion_code="OKCODE",
        screened_code="SCREENED",
    )
    config = load_study(folder)
    items = {it.id: it.to_dict() for it in config.items}
    app = create_app(folder)
    client = start(app, PROLIFIC_PID="careless")
    with sqlite3.connect(folder / "study.sqlite") as conn:
        trials = {
            r[0]: (r[1], r[2], json.loads(r[3]))
            for r in conn.execute(
                "SELECT idx, item, kind, options FROM trials WHERE pid=?", (client.cookies["evalkit_study"],)
            )
        }
    while True:
        idx, _ = current(client)
        if idx < 0:
            break
        item, _kind, options = trials[idx]
        wrong = [t for t, c in options if c not in items[item].get("correct", [])]
        assert client.post("/vote", data={"trial": idx, "choice": wrong[0]}).status_code == 303
    page = client.get("/done").text
    code = re.search(r'id="completion-code">([^<]+)<', page).group(1)
    assert code == completion_code(config.code_secret, client.cookies["evalkit_study"], "screened")
    assert "cc=SCREENED" in page and "screened out" in page


# -- 3. strict input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["²", "١", "１", "٣"])
def test_unicode_digits_are_refused_not_crashed_on_or_misread(study, value):
    client = start(study)
    idx, tokens = current(client)
    r = client.post("/vote", data={"trial": value, "choice": tokens[0]})
    assert r.status_code == 400 and "ASCII digits" in r.text
    r = client.post("/vote", data={"trial": str(idx), "choice": tokens[0], "rt": value})
    assert r.status_code == 400
    assert votes(study) == []


def _asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """Call the ASGI app directly, so headers can carry bytes no HTTP client library would send."""
    sent = {"status": 0}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("testserver", 80),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    return sent["status"]


BAD_TEXT = [
    "²",
    "١",
    "１",
    "9" * 40,
    "-1",
    "1e3",
    " 1",
    "1 ",
    "0x1",
    "+1",
    "1.0",
    "\x00",
    "<script>",
    "a" * 3000,
    "NaN",
    "true",
    "☃",
    "../../study.json",
    "' OR 1=1 --",
]
BAD_JSON = [[], {}, 1.5, True, None, -1, 10**30, [1, 2], {"a": 1}]


def test_fuzz_every_field_of_every_route(study):
    """Malformed values in every field of every route: never a 5xx, never a change to stored votes."""
    config = load_study(study)
    app = create_app(study, ServeOptions(new_per_address=0))
    client = start(app)
    idx, tokens = current(client)
    assert client.post("/vote", data={"trial": idx, "choice": tokens[0]}).status_code == 303  # one real vote
    idx, tokens = current(client)
    snapshot = votes(study)
    statuses = []

    def check(response) -> None:
        statuses.append(response.status_code)
        assert response.status_code < 500, (response.request.method, response.request.url, response.text[:200])

    valid_vote = {"trial": str(idx), "choice": tokens[0], "rt": "900"}
    for field in ("trial", "choice", "rt"):
        for value in BAD_TEXT + ([""] if field != "rt" else []):
            check(client.post("/vote", data={**valid_vote, field: value}))
            check(client.post("/vote", json={**valid_vote, field: value}, headers={"accept": "application/json"}))
        for value in BAD_JSON:
            check(client.post("/vote", json={**valid_vote, field: value}))
        if field != "rt":
            check(client.post("/vote", data={k: v for k, v in valid_vote.items() if k != field}))
    for body in (b"", b"\xff\xfe", b"[1,2]", b'{"trial": {"x": 1}}', b"trial=%FF%FE&choice=%00", b"a" * 5000):
        for ctype in ("application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
            check(client.post("/vote", content=body, headers={"content-type": ctype}))
            check(client.post("/start", content=body, headers={"content-type": ctype}))
            check(client.post("/static-submit", content=body, headers={"content-type": ctype}))
    for param in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"):
        for value in BAD_TEXT:
            check(client.get("/", params={param: value}))
            check(TestClient(app, follow_redirects=False).post("/start", data={"consent": "yes", param: value}))
        for value in BAD_JSON:
            check(TestClient(app, follow_redirects=False).post("/start", json={"consent": "yes", param: value}))
    for value in BAD_TEXT + BAD_JSON:
        check(TestClient(app, follow_redirects=False).post("/start", json={"consent": value}))
    for value in BAD_TEXT:
        stranger = TestClient(app, follow_redirects=False)
        stranger.cookies.set("evalkit_study", value.encode("ascii", "ignore").decode() or "x")
        for path in ("/", "/trial", "/done"):
            check(stranger.get(path))
        check(stranger.post("/vote", data=valid_vote))
        check(client.get("/admin", params={"token": value}))
        check(client.get("/admin/participants.csv", params={"token": value}))
        check(
            client.get(
                "/admin/votes.csv", headers={"authorization": f"Bearer {value}".encode("ascii", "ignore").decode()}
            )
        )
        check(client.get("/img/" + quote(value, safe="")))
    submission = {"submission": "s" * 20, "sequence": 0, "answers": [{"trial": 0, "choice": "x", "rt": 1}]}
    for field in ("submission", "sequence", "answers", "PROLIFIC_PID"):
        for value in BAD_TEXT + BAD_JSON:
            check(client.post("/static-submit", json={**submission, field: value}))
    for value in BAD_TEXT + BAD_JSON:
        check(client.post("/static-submit", json={**submission, "answers": [{"trial": value, "choice": "x"}]}))
        check(client.post("/static-submit", json={**submission, "answers": [value]}))
    for length in ("²", "١", "9" * 30, "-5", "abc", ""):  # the Content-Length header itself
        for path in ("/vote", "/start", "/static-submit"):
            status = _asgi(
                app,
                "POST",
                path,
                [
                    (b"content-length", length.encode()),
                    (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"cookie", f"evalkit_study={client.cookies['evalkit_study']}".encode()),
                ],
                b"trial=0",
            )
            statuses.append(status)
            assert 400 <= status < 500, (path, length, status)
    assert votes(study) == snapshot
    assert current(client)[0] == idx
    assert len(statuses) > 500 and all(s < 500 for s in statuses)
    assert config.admin_token  # (the admin routes above were driven with wrong tokens only)


# -- 4. abuse limits -------------------------------------------------------------------------------------------------
def test_new_sessions_per_address_are_rate_limited_with_a_polite_page(study):
    app = create_app(study, ServeOptions(new_per_address=3, window_s=600))
    clients = [start(app) for _ in range(3)]
    r = TestClient(app, follow_redirects=False).post("/start", data={"consent": "yes"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "try again" in r.text.lower()
    assert "<h1" in r.text  # a page, not a stack trace
    # a participant who has a session is never limited
    assert clients[0].post("/start", data={"consent": "yes"}).status_code == 303
    with sqlite3.connect(study / "study.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM participants").fetchone() == (3,)
    # behind a trusted proxy, the forwarded address counts
    proxied = create_app(study, ServeOptions(new_per_address=1, trust_proxy=True))
    for address in ("10.0.0.1", "10.0.0.2"):
        c = TestClient(proxied, follow_redirects=False)
        assert c.post("/start", data={"consent": "yes"}, headers={"x-forwarded-for": address}).status_code == 303
    c = TestClient(proxied, follow_redirects=False)
    assert c.post("/start", data={"consent": "yes"}, headers={"x-forwarded-for": "10.0.0.1"}).status_code == 429


def test_a_capped_study_says_it_is_full(tmp_path):
    folder, _ = make_study(tmp_path, LABELS, question="style", trials_per_participant=3, max_participants=2)
    app = create_app(folder, ServeOptions(new_per_address=0))
    start(app), start(app)
    r = TestClient(app, follow_redirects=False).post("/start", data={"consent": "yes"})
    assert r.status_code == 403 and "full" in r.text
    assert create_app(folder, ServeOptions(max_participants=5)) is not None  # serve may raise the cap
    start(create_app(folder, ServeOptions(max_participants=3)))


# -- 5. secrets --------------------------------------------------------------------------------------------------------
def test_secrets_are_private_and_the_admin_token_leaves_the_url(study):
    for name in ("study.json",):
        assert stat.S_IMODE((study / name).stat().st_mode) == 0o600
    create_app(study)
    assert stat.S_IMODE((study / "study.sqlite").stat().st_mode) == 0o600
    token = load_study(study).admin_token
    client = TestClient(create_app(study), follow_redirects=False)
    r = client.get(f"/admin?token={token}")
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and token not in cookie
    page = client.get("/admin")
    assert page.status_code == 200 and token not in page.text and 'http-equiv="refresh"' in page.text
    assert client.get("/admin/votes.csv").status_code == 200  # the cookie, not the URL, authorises
    assert TestClient(create_app(study)).get("/admin").status_code == 401
    secure = TestClient(create_app(study, ServeOptions(secure_cookies=True)), follow_redirects=False)
    assert "secure" in secure.post("/start", data={"consent": "yes"}).headers["set-cookie"].lower()
    assert "secure" in secure.get(f"/admin?token={token}").headers["set-cookie"].lower()
    plain = TestClient(create_app(study), follow_redirects=False).post("/start", data={"consent": "yes"})
    assert "secure" not in plain.headers["set-cookie"].lower()


def test_an_old_world_readable_study_json_is_made_private(study):
    (study / "study.json").chmod(0o644)
    load_study(study)
    assert stat.S_IMODE((study / "study.json").stat().st_mode) == 0o600


# -- the static export -------------------------------------------------------------------------------------------------
def _static_answers(folder, sequence: int, pick: int = 0) -> dict:
    manifest = json.loads((folder / "static" / "manifest.json").read_text())
    return {
        "submission": f"sub{sequence}x{pick}",
        "sequence": sequence,
        "PROLIFIC_PID": f"S{sequence}",
        "answers": [
            {"trial": i, "choice": t["options"][pick]["token"], "rt": 700}
            for i, t in enumerate(manifest["sequences"][sequence])
        ],
    }


def test_the_static_export_holds_no_code_and_the_server_issues_one_for_accepted_answers(study):
    manifest = json.loads((study / "static" / "manifest.json").read_text())
    config = load_study(study)
    assert "completion_code" not in manifest and "PROLIF1" not in json.dumps(manifest)
    app = create_app(study, ServeOptions(static_origins=("https://static.example.org",)))
    client = TestClient(app)
    body = _static_answers(study, 1)
    r = client.post(
        "/static-submit",
        content=json.dumps(body),
        headers={"content-type": "text/plain", "origin": "https://static.example.org"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://static.example.org"
    code = r.json()["completion_code"]
    again = client.post("/static-submit", json=body, headers={"origin": "https://static.example.org"})
    assert again.json()["completion_code"] == code  # a re-post is idempotent
    with sqlite3.connect(study / "study.sqlite") as conn:
        pid, origin, stored = conn.execute("SELECT pid, origin, completion_code FROM participants").fetchone()
        n_votes = conn.execute("SELECT COUNT(*) FROM votes WHERE pid=?", (pid,)).fetchone()[0]
    assert origin == "static" and stored == code == completion_code(config.code_secret, pid)
    assert n_votes == len(body["answers"])
    # answers that are not that sequence's options, a wrong count, or a foreign origin are refused
    tampered = _static_answers(study, 0)
    tampered["answers"][0]["choice"] = (
        body["answers"][0]["choice"] if body["answers"][0]["choice"] != tampered["answers"][0]["choice"] else "zzzz"
    )
    assert client.post("/static-submit", json=tampered).status_code == 400
    short = {**_static_answers(study, 0), "answers": _static_answers(study, 0)["answers"][:-1]}
    assert client.post("/static-submit", json=short).status_code == 400
    foreign = client.post("/static-submit", json=_static_answers(study, 0), headers={"origin": "https://evil.test"})
    assert foreign.status_code == 403
    with sqlite3.connect(study / "study.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM participants").fetchone() == (1,)


def test_the_load_test_gives_up_on_a_server_that_never_comes_back():
    """scripts/study_loadtest.py used to retry forever; now a participant gives up after --max-down seconds."""
    import importlib.util
    import socket
    import sys
    import time
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "study_loadtest.py"
    spec = importlib.util.spec_from_file_location("study_loadtest", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats = module.Stats()
    started = time.monotonic()
    with pytest.raises(module.ServerGone):
        asyncio.run(module.participant(0, f"http://127.0.0.1:{port}", stats, 10, 0.5))
    assert time.monotonic() - started < 10 and stats.retries >= 1
