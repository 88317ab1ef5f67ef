"""The done-when of the sweep issue, in headless Chromium: a quick-protocol sweep (adain alpha over 5 values, wct
alpha over 3, gatys style weight over 3) gives one trade-off curve per model whose points are the database's means,
and the Pareto frontier. Gatys runs 5 Adam steps so the test stays short; the curves are what is checked."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests._cdp import Browser, chromium_path
from tests.conftest import WEIGHTS_MIRROR

pytest.importorskip("websockets", reason="websockets not installed: pip install -e '.[dev]'")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.mirror,
    pytest.mark.skipif(WEIGHTS_MIRROR is None, reason="adain/wct weights need the mirror"),
    pytest.mark.skipif(chromium_path() is None, reason="chromium not installed: run `make system-deps`"),
]

SWEEPS = ["adain.alpha=0.1,0.3,0.5,0.7,1", "wct.alpha=0.3,0.6,1", "gatys.style_weight=10,1000,100000"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, shared_home) -> Path:
    from evalkit.cli import app

    root = tmp_path_factory.mktemp("sweep") / "results"
    args = ["run", "--protocol", "quick", "--methods", "adain[cd16x],wct[official-l3],gatys", "-r", str(root)]
    args += ["--metrics", "content_loss,style_loss,ssim", "--no-progress", "--executor", "local"]
    args += ["--param", "gatys.iterations=5", "--param", "gatys.optimizer=adam", "--param", "gatys.lr=0.05"]
    for sweep in SWEEPS:
        args += ["--sweep", sweep]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    board = CliRunner().invoke(app, ["leaderboard", "--results", str(root)])
    assert board.exit_code == 0, board.output
    yield root
    if os.environ.get("EVALKIT_TEST_ARTIFACTS"):
        shutil.copytree(root, Path(os.environ["EVALKIT_TEST_ARTIFACTS"]) / "leaderboard-sweep", dirs_exist_ok=True)


POINTS = """Array.from(document.querySelectorAll('#plots figure')).filter(f => f.querySelector('.pareto')).map(f => ({
  title: f.querySelector('figcaption').textContent,
  series: Array.from(f.querySelectorAll('g.series')).map(g => ({
    name: g.getAttribute('data-series'), curve: !!g.querySelector('polyline'),
    points: Array.from(g.querySelectorAll('circle')).map(c => ({
      x: Number(c.getAttribute('data-x')), y: Number(c.getAttribute('data-y')),
      entry: c.querySelector('title').textContent.split(':')[0], front: c.classList.contains('on-front')}))})),
}))"""


def test_trade_off_curves_and_frontier_show_the_database_means(swept, tmp_path):
    with sqlite3.connect(swept / "evalkit.sqlite") as conn:
        frame = pd.read_sql_query(
            "SELECT j.label, j.pair_id, m.metric, m.value FROM metrics m JOIN jobs j USING (job_key) "
            "WHERE m.status = 'ok'",
            conn,
        )
    means = frame.groupby(["label", "pair_id", "metric"])["value"].mean().groupby(["label", "metric"]).mean()
    with Browser(tmp_path / "profile") as browser:
        browser.goto((swept / "leaderboard.html").resolve().as_uri())
        figures = browser.evaluate(POINTS)
        assert browser.console_errors() == []
        browser.screenshot(swept / "leaderboard-sweep.png")
    assert [f["title"] for f in figures] == ["content loss vs style loss", "ssim vs style loss"]
    for figure, x_metric in zip(figures, ["content_loss", "ssim"], strict=True):
        series = {s["name"]: s for s in figure["series"]}
        assert {n: len(s["points"]) for n, s in series.items()} == {
            "adain[cd16x]": 5,
            "gatys[imagenet]": 3,
            "wct[official-l3]": 3,
        }
        assert all(s["curve"] for s in series.values())
        fronts = 0
        for s in series.values():
            for p in s["points"]:
                assert p["x"] == pytest.approx(means[(p["entry"], x_metric)], rel=1e-9)
                assert p["y"] == pytest.approx(means[(p["entry"], "style_loss")], rel=1e-9)
                fronts += p["front"]
        assert fronts >= 1
    assert (swept / "figures" / "content_loss_vs_style_loss.svg").is_file()
