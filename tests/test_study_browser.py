"""A real headless Chromium takes a whole study: instructions -> consent -> trials (keyboard and mouse, with a
reload in the middle) -> completion code; served by uvicorn on loopback."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time

import pytest

from evalkit.study.app import ServeOptions, create_app
from evalkit.study.build import load_study
from tests._cdp import Browser, chromium_path
from tests.study_support import make_study

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (/usr/bin/chromium; `make system-deps` installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(app, port: int):
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(tmp_path):
    folder, _ = make_study(
        tmp_path, ["m1", "m2", "m3"], question="style", trials_per_participant=4, completion_code="PROLIFIC42"
    )
    with _serve(create_app(folder), _free_port()) as url:
        yield folder, url


def _press(browser: Browser, key: str, code: str, keycode: int) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.send(
            "Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": keycode}
        )


def _wait_for(browser: Browser, expression: str, timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = browser.evaluate(expression)
        except RuntimeError:  # navigation in progress: the context is gone for a moment
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(expression)


def test_browser_completes_a_whole_study(server, tmp_path):
    folder, url = server
    config = load_study(folder)
    total = config.trials_per_participant + config.vigilance + config.repeats
    keys = [("ArrowLeft", "ArrowLeft", 37), ("ArrowRight", "ArrowRight", 39), ("1", "Digit1", 49), ("b", "KeyB", 66)]
    with Browser(tmp_path / "chromium-profile") as browser:
        browser.goto(f"{url}/?PROLIFIC_PID=pp42&STUDY_ID=st1&SESSION_ID=se7")
        assert "Which carries the style better?" in browser.evaluate("document.body.innerText")
        browser.click("#consent")
        browser.click("#start")
        for step in range(total):
            counter = _wait_for(
                browser,
                "document.getElementById('counter') &&"
                f" document.getElementById('counter').innerText.startsWith('{step + 1} /')"
                " && document.getElementById('counter').innerText",
            )
            assert counter == f"{step + 1} / {total}"
            # every stimulus actually loaded
            assert _wait_for(browser, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            if step == 2:  # a reload resumes at the same trial
                browser.send("Page.reload")
                _wait_for(
                    browser,
                    f"document.getElementById('counter') && document.getElementById('counter')"
                    f".innerText === '{step + 1} / {total}'",
                )
            if step % 3 == 2:
                browser.click("#option-B")
            else:
                _press(browser, *keys[step % len(keys)])
        code = _wait_for(
            browser,
            "document.getElementById('completion-code') && document.getElementById('completion-code').innerText",
        )
        # the participant's own code (issue 11: it used to be one constant for the whole study); the Prolific
        # return link carries the study's Prolific code
        with sqlite3.connect(folder / "study.sqlite") as conn:
            assert code == conn.execute("SELECT completion_code FROM participants").fetchone()[0]
        assert code != config.completion_code
        assert browser.evaluate("document.getElementById('prolific-return').href").endswith(
            f"cc={config.completion_code}"
        )
        assert browser.console_errors() == []
    with sqlite3.connect(folder / "study.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == total
        assert conn.execute("SELECT COUNT(*) FROM votes WHERE rt_ms > 0").fetchone()[0] == total
        assert conn.execute(
            "SELECT prolific_pid, study_id, session_id, completed IS NOT NULL FROM participants"
        ).fetchall() == [("pp42", "st1", "se7", 1)]


def _file_server(folder):
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _take_static(browser: Browser, url: str, sequence: list) -> None:
    browser.goto(url)
    browser.click("#consent")
    browser.click("#start")
    for step in range(len(sequence)):
        _wait_for(
            browser,
            f"document.querySelector('.counter') && document.querySelector('.counter')"
            f".innerText === '{step + 1} / {len(sequence)}'",
        )
        _press(browser, "ArrowRight", "ArrowRight", 39)


def test_browser_completes_the_static_export(tmp_path):
    """The static folder works on any file server: the page runs a manifest sequence and keeps the answers. Without
    a submit_url it shows no completion code (it has none to show); with one, the code the study server issued."""
    import json

    api_port = _free_port()
    folder, _ = make_study(
        tmp_path,
        ["m1", "m2", "m3"],
        question="favorite",
        trials_per_participant=3,
        submit_url=f"http://127.0.0.1:{api_port}/static-submit",
    )
    config = load_study(folder)
    manifest = json.loads((folder / "static" / "manifest.json").read_text())
    sequence = manifest["sequences"][1]
    offline = tmp_path / "offline-static"  # the same export with no submit_url
    import shutil

    shutil.copytree(folder / "static", offline)
    (offline / "manifest.json").write_text(json.dumps({**manifest, "submit_url": None}))
    httpd, httpd_offline = _file_server(folder / "static"), _file_server(offline)
    static_origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with Browser(tmp_path / "chromium-static") as browser:
            _take_static(
                browser,
                f"http://127.0.0.1:{httpd_offline.server_address[1]}/index.html?seq=1&PROLIFIC_PID=px",
                sequence,
            )
            assert "cannot issue completion codes" in _wait_for(
                browser, "document.getElementById('result') && document.getElementById('result').innerText"
            )
            assert browser.evaluate("document.querySelector('.code')") is None
            state = browser.evaluate(f"localStorage.getItem('evalkit-study-{config.name}')")
            assert browser.console_errors() == []
        with (
            _serve(create_app(folder, ServeOptions(static_origins=(static_origin,))), api_port),
            Browser(tmp_path / "chromium-static-2") as browser,
        ):
            _take_static(browser, f"{static_origin}/index.html?seq=1&PROLIFIC_PID=py", sequence)
            code = _wait_for(browser, "document.querySelector('.code') && document.querySelector('.code').innerText")
            assert browser.console_errors() == []
    finally:
        httpd.shutdown()
        httpd_offline.shutdown()
    state = json.loads(state)
    assert state["PROLIFIC_PID"] == "px" and state["sequence"] == 1
    # every answer is the right-hand option's token, and the private key maps it back to a candidate
    assert [a["choice"] for a in state["answers"]] == [t["options"][1]["token"] for t in sequence]
    assert all(config.static_tokens[a["choice"]] in config.candidates for a in state["answers"])
    with sqlite3.connect(folder / "study.sqlite") as conn:
        assert conn.execute("SELECT prolific_pid, origin, completion_code FROM participants").fetchall() == [
            ("py", "static", code)
        ]
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == len(sequence)


VIEWPORTS = {"desktop": (1280, 800, 1, False), "phone": (390, 844, 3, True)}
GEOMETRY = """(() => {
  const opts = Array.from(document.querySelectorAll('button.option img'));
  return {scrollY: window.scrollY, w: window.innerWidth, h: window.innerHeight,
          rects: opts.map(i => { const r = i.getBoundingClientRect();
            return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height,
                    nw: i.naturalWidth, nh: i.naturalHeight}; })};
})()"""


def _tap(browser: Browser, selector: str) -> None:
    """A touch tap at the centre of the element (the phone's way of choosing)."""
    box = browser.evaluate(
        f"(() => {{ const e = document.querySelector('{selector}'); e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    browser.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": box[0], "y": box[1]}]})
    browser.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_custom_texts_study_at_desktop_and_phone_size(tmp_path, viewport):
    """A study built with --texts, taken at 1280x800 (mouse) and 390x844 (touch): the custom consent and question
    appear; on desktop both options are whole on screen without scrolling; on the phone they are stacked, each
    within the screen's width; images are never shown larger than their native size. Screenshots are artefacts."""
    import os
    from pathlib import Path

    from tests.test_study_researcher import TEXTS

    texts = tmp_path / "texts.toml"
    texts.write_text(TEXTS)
    folder, _ = make_study(
        tmp_path, ["m1", "m2", "m3"], trials_per_participant=3, texts=texts, image_size=(512, 384), allow_tie=True
    )
    config = load_study(folder)
    total = config.trials_per_participant + config.vigilance + config.repeats
    shots = Path(os.environ.get("EVALKIT_TEST_ARTIFACTS") or tmp_path) / "study-screens"
    shots.mkdir(parents=True, exist_ok=True)
    width, height, scale, mobile = VIEWPORTS[viewport]
    with _serve(create_app(folder), _free_port()) as url, Browser(tmp_path / "profile") as browser:
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile},
        )
        if mobile:
            browser.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
        browser.goto(f"{url}/?PROLIFIC_PID=pp{viewport}")
        text = browser.evaluate("document.body.innerText")
        assert "The Painting Study of Lab X" in text and "ethics approval EC-2026-17" in text
        assert "Which image is the better painting of this photo?" in text
        browser.screenshot(shots / f"{viewport}-consent.png")
        if mobile:
            _tap(browser, "#consent")
            _tap(browser, "#start")
        else:
            browser.click("#consent")
            browser.click("#start")
        for step in range(total):
            _wait_for(
                browser,
                f"document.getElementById('counter') && document.getElementById('counter').innerText"
                f" === '{step + 1} / {total}'",
            )
            assert _wait_for(browser, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert "Which image is the better painting of this photo?" in browser.evaluate("document.body.innerText")
            geo = browser.evaluate(GEOMETRY)
            a, b = geo["rects"]
            for r in (a, b):
                assert r["width"] <= r["nw"] + 0.5 and r["height"] <= r["nh"] + 0.5  # never upscaled
                assert r["left"] >= 0 and r["right"] <= geo["w"] + 0.5  # whole width visible
            if mobile:
                assert b["top"] >= a["bottom"]  # stacked
                assert all(r["height"] <= geo["h"] for r in (a, b))  # each whole on the screen when scrolled to
            else:
                assert geo["scrollY"] == 0 and a["top"] == pytest.approx(b["top"], abs=1)  # side by side
                assert all(r["top"] >= 0 and r["bottom"] <= geo["h"] for r in (a, b)), geo  # no scrolling needed
            if step == 0:
                browser.screenshot(shots / f"{viewport}-trial.png")
            if mobile:
                _tap(browser, "#option-B")
            else:
                browser.click("#option-A")
        code = _wait_for(
            browser,
            "document.getElementById('completion-code') && document.getElementById('completion-code').innerText",
        )
        assert "Thanks! Questions" in browser.evaluate("document.body.innerText")
        browser.screenshot(shots / f"{viewport}-done.png")
        assert browser.console_errors() == []
    with sqlite3.connect(folder / "study.sqlite") as conn:
        assert conn.execute("SELECT completion_code FROM participants").fetchone()[0] == code
        assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == total
