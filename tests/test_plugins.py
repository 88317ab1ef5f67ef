"""Third-party extensions installed as real packages (tests/conftest.py builds ``evalkit-testplugin`` with pip): a
method and a metric, each found through its entry-point group, run end to end and show up where users look."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from evalkit import imaging
from evalkit.assets import AssetSettings
from evalkit.cli import app
from evalkit.runner import RunRequest, run_benchmark
from evalkit.store import ResultsStore
from tests.test_runner import _gradient, _save, write_protocol


def test_a_third_party_metric_and_method_run_end_to_end(plugin, tmp_path):
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    shas = {
        "style": _save(mirror / "t" / "style.img", Image.new("RGB", (48, 32), (200, 40, 40)), format="PNG"),
        "c1": _save(mirror / "t" / "c1.img", _gradient(64, 48).rotate(180), format="PNG"),
    }
    protocol = write_protocol(tmp_path, shas, [("p1", "c1", "style")])
    out = tmp_path / "results"
    summary = run_benchmark(
        RunRequest(
            protocol=str(protocol),
            methods=["meanshift"],
            out=out,
            progress=False,
            metrics=["content_loss", "mean_abs_diff"],
            assets=AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror)),
        )
    )
    assert summary.counts == {"ok": 1}
    with ResultsStore(out) as store:
        metrics = store.metrics_frame().set_index("metric")
        job = store.jobs_frame().iloc[0]
    value = metrics.loc["mean_abs_diff", "value"]
    # independent computation: the stored output against the content image at the evaluation size (32 px)
    content = imaging.resize(imaging.load_image(mirror / "t" / "c1.img"), imaging.Resolution.parse("32"))
    output = Image.open(out / job["output_path"]).convert("RGB")
    expected = np.abs(np.asarray(output, np.float64) - np.asarray(content, np.float64)).mean()
    assert value == pytest.approx(expected, abs=1e-3) and value > 1.0

    listing = CliRunner().invoke(app, ["metrics"], env={"COLUMNS": "3000"})
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if "mean_abs_diff" in line)
    assert "lower" in row and "content" in row and "mean(|O - C|) * 255" in row
    board = CliRunner().invoke(app, ["leaderboard", "--results", str(out), "--format", "md", "--out", "-"])
    assert board.exit_code == 0, board.output
    header = next(line for line in board.output.splitlines() if line.startswith("|"))
    assert "mean\\_abs\\_diff ↓" in header, board.output  # Markdown-escaped, direction from its MetricInfo
