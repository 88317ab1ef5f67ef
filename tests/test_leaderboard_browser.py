"""The leaderboard of a real (small) ``artistic`` run, opened in headless Chromium over the DevTools Protocol.

The run: the artistic protocol's first two contents, one style each, at 128 px, with identity, reinhard, gatys
(5 Adam steps: a few L-BFGS steps leave the content image unchanged) and adain when the weights mirror is present,
and every artistic metric (those that cannot run, e.g. NIMA without weights, show up as unavailable). The page must
load from disk with no console error and no non-file request, sort on a header click, and load every thumbnail; the
screenshot is saved under the results root (the whole leaderboard is copied to ``$EVALKIT_TEST_ARTIFACTS`` when set).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tomllib
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from tests._cdp import Browser, chromium_path
from tests.conftest import DATA_MIRROR, WEIGHTS_MIRROR, needs_data

pytest.importorskip("websockets", reason="websockets not installed: pip install -e '.[dev]'")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.mirror,
    needs_data,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium not installed (expected /usr/bin/chromium): run `make system-deps` (apt-get install chromium)",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
PIXELS = 128


def mini_artistic(dest: Path, methods: list[str], metrics: list[str]) -> Path:
    """A 2-pair subset of protocols/artistic.toml (two different contents) at 128 px, as a protocol file."""
    raw = tomllib.loads((ROOT / "protocols" / "artistic.toml").read_text())
    seen: set[str] = set()
    pairs = []
    for pair in raw["pairs"]:
        if pair["content"] not in seen:
            seen.add(pair["content"])
            pairs.append(pair)
        if len(pairs) == 2:
            break
    q = json.dumps
    lines = [
        'name = "artistic"',
        f"description = {q('2-pair subset of the artistic protocol (CI leaderboard)')}",
        f'resolutions = ["{PIXELS}"]',
        f"style_size = {PIXELS}",
        f"eval_size = {PIXELS}",
        "seeds = 1",
        f"methods = {q(methods)}",
        f"metrics = {q(metrics)}",
        "",
        "[params.gatys]",
        "iterations = 5",
        'optimizer = "adam"',
        "lr = 0.05",
        "",
    ]
    for image in sorted({p["content"] for p in pairs} | {p["style"] for p in pairs}):
        lines += [f"[images.{image}]", *(f"{k} = {q(v)}" for k, v in raw["images"][image].items()), ""]
    for pair in pairs:
        lines += ["[[pairs]]", *(f"{k} = {q(v)}" for k, v in pair.items()), ""]
    dest.write_text("\n".join(lines))
    return dest


@pytest.fixture(scope="module")
def board(tmp_path_factory, shared_home) -> Path:
    """Run the mini benchmark and build its leaderboard (HTML + md + tex) with the real CLI; returns the root."""
    from typer.testing import CliRunner

    from evalkit import assets
    from evalkit.cli import app
    from evalkit.metrics import metric_names
    from evalkit.runner import RunRequest, run_benchmark

    work = tmp_path_factory.mktemp("artistic_board")
    root = work / "results"
    settings = assets.AssetSettings(
        home=str(shared_home),
        data_mirror=str(DATA_MIRROR),
        weights_mirror=str(WEIGHTS_MIRROR) if WEIGHTS_MIRROR else None,
        allow_download=False,
    )
    raw = tomllib.loads((ROOT / "protocols" / "artistic.toml").read_text())
    metrics = [m for m in raw["metrics"] if m in metric_names()]
    methods = ["identity", "reinhard", "gatys"] + (["adain"] if WEIGHTS_MIRROR else [])
    protocol = mini_artistic(work / "artistic-mini.toml", methods, metrics)
    summary = run_benchmark(
        RunRequest(
            protocol=str(protocol),
            out=root,
            progress=False,
            assets=settings,
            command="pytest tests/test_leaderboard_browser.py",
        ),
        Console(file=io.StringIO()),
    )
    assert summary.counts["ok"] >= 2 * 3, summary.failures
    runner = CliRunner()
    for args in ([], ["--format", "md"], ["--format", "tex"]):
        result = runner.invoke(app, ["leaderboard", "--results", str(root), *args])
        assert result.exit_code == 0, result.output
    yield root
    if os.environ.get("EVALKIT_TEST_ARTIFACTS"):
        shutil.copytree(root, Path(os.environ["EVALKIT_TEST_ARTIFACTS"]) / "leaderboard-artistic", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser(board, tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("chromium_profile")) as b:
        b.goto((board / "leaderboard.html").resolve().as_uri())
        yield b


LOAD_ALL = """(async () => {
  const imgs = Array.from(document.querySelectorAll('#image-grid img'));
  for (const img of imgs) {
    img.scrollIntoView({block: 'center'});
    await new Promise(done => {
      if (img.complete) { done(); return; }
      img.addEventListener('load', done, {once: true});
      img.addEventListener('error', done, {once: true});
      setTimeout(done, 10000);
    });
  }
  window.scrollTo(0, 0);
  return imgs.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, loading: i.getAttribute('loading'),
                         href: i.closest('a') ? i.closest('a').getAttribute('href') : null}));
})()"""


def expected_means(root: Path, metric: str) -> dict[str, float]:
    """Mean per method straight from the database (one seed and resolution: the mean over pairs)."""
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        frame = pd.read_sql_query(
            "SELECT j.label, j.pair_id, m.value FROM metrics m JOIN jobs j USING (job_key) "
            "WHERE m.metric = ? AND m.status = 'ok'",
            conn,
            params=(metric,),
        )
    return frame.groupby("label")["value"].mean().to_dict()


def row_order(browser: Browser) -> list[str]:
    return browser.evaluate(
        "Array.from(document.querySelectorAll('#quality-table tbody tr')).map(r => r.getAttribute('data-entry'))"
    )


def test_every_thumbnail_loads(browser, board):
    with sqlite3.connect(board / "evalkit.sqlite") as conn:
        outputs = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'ok'").fetchone()[0]
        pairs = conn.execute("SELECT COUNT(DISTINCT pair_id) FROM jobs").fetchone()[0]
    images = browser.evaluate(LOAD_ALL)
    assert len(images) == outputs + 2 * pairs  # every output, plus content and style of every pair
    assert all(img["loading"] == "lazy" for img in images)
    broken = [img["src"] for img in images if img["width"] <= 0]
    assert not broken, f"thumbnails that did not load: {broken}"
    for img in images:  # each thumbnail opens a full-size image that exists inside the results root
        full = (board / urllib.parse.unquote(img["href"])).resolve()
        assert full.is_file() and board.resolve() in full.parents
        assert full.stat().st_size > (board / img["src"]).stat().st_size or full.suffix == ".png"


def test_page_is_offline_and_has_no_console_errors(browser, board):
    browser.evaluate(LOAD_ALL)
    assert browser.console_errors() == []
    schemes = {urllib.parse.urlparse(u).scheme for u in browser.requested_urls()}
    assert schemes <= {"file", "data"}, schemes
    assert "artistic" in browser.evaluate("document.title")
    assert browser.evaluate("document.querySelectorAll('#plots svg').length") == 3  # time, content/style, ssim/style
    # unavailable metrics show n/a with the recorded reason on hover
    with sqlite3.connect(board / "evalkit.sqlite") as conn:
        reasons = {
            f"{status}: {message}"
            for status, message in conn.execute("SELECT status, message FROM metrics WHERE status != 'ok'")
        }
    titles = browser.evaluate(
        "Array.from(document.querySelectorAll('#quality-table td.na')).map(td => td.getAttribute('title'))"
    )
    assert len(titles) == len(
        browser.evaluate(
            "Array.from(document.querySelectorAll('#quality-table td')).filter(td => td.textContent.trim() === 'n/a')"
        )
    )
    assert all(t in reasons for t in titles), (titles, reasons)


@pytest.mark.parametrize("metric", ["content_loss", "ssim"])
def test_clicking_a_header_resorts_rows(browser, board, metric):
    from evalkit.metrics import metric_info

    means = expected_means(board, metric)
    if len(means) < 2:
        pytest.skip(f"{metric} has fewer than two methods with values in this run")
    best_first = sorted(means, key=means.get, reverse=metric_info(metric).higher_is_better)
    selector = f'#quality-table thead th[data-metric="{metric}"]'
    initial = row_order(browser)
    browser.click(selector)
    order = row_order(browser)
    # best first (ties in any order); methods without a value (n/a) sort last
    assert [means[e] for e in order[: len(means)]] == [means[e] for e in best_first]
    assert set(order[: len(means)]) == set(means)
    browser.click(selector)
    reverse = row_order(browser)
    assert [means[e] for e in reverse[: len(means)]] == [means[e] for e in best_first[::-1]]
    if [means[e] for e in best_first] != [means[e] for e in best_first[::-1]]:
        assert reverse != order
    assert initial != order or initial != reverse  # the clicks really moved rows
    assert browser.evaluate(f"document.querySelector('{selector}').getAttribute('aria-sort')") in (
        "ascending",
        "descending",
    )
    assert browser.console_errors() == []


def test_screenshot_artifact_and_paper_tables(browser, board):
    browser.evaluate(LOAD_ALL)
    shot = browser.screenshot(board / "leaderboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    md = (board / "leaderboard.md").read_text()
    tex = (board / "leaderboard.tex").read_text()
    for label in expected_means(board, "content_loss"):
        assert label.replace("[", "\\[").replace("]", "\\]") in md
        assert label in tex
    assert r"\toprule" in tex and "### Speed" in md
