"""The leaderboard from a synthetic results database: aggregation, directions, escaping, optional tables, formats.

Rows are written through the real :class:`ResultsStore` API, so the report reads exactly what a run writes.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics import metric_info
from evalkit.report.data import load_report_data
from evalkit.report.formatting import latex_escape, md_escape
from evalkit.report.html import render_leaderboard
from evalkit.report.plots import Axis
from evalkit.report.quality import build_quality_table, mean_ci
from evalkit.report.text import render_tables
from evalkit.results import JobResult, MetricValue
from evalkit.specs import JobSpec
from evalkit.store import ResultsStore

EVIL = "<script>alert(1)</script>&_%"
PAIRS = ["p1", "p2", "p3", "p4"]


def png(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_spec(method: str, pair: str, params: dict | None = None, weight_set: str | None = None) -> JobSpec:
    return JobSpec(
        method=method,
        weight_set=weight_set,
        params=params or {},
        pair_id=pair,
        resolution="64",
        seed=0,
        content=f"c_{pair}",
        style=f"s_{pair}",
        content_mask=None,
        style_mask=None,
        style_size=64,
        eval_size=64,
        method_version="1",
        weight_digests={"model": "ab" * 32} if weight_set else {},
        image_digests={},
    ).with_key()


# per method: content_loss per pair, ssim per pair (ssim higher is better, content_loss lower is better)
VALUES = {
    "alpha": ([1.0, 2.0, 3.0, 4.0], [0.50, 0.52, 0.48, 0.50]),
    "beta": ([0.5, 0.7, 0.6, 0.8], [0.30, 0.35, 0.25, 0.30]),
    EVIL: ([9.0, 8.0, 7.0, 6.0], [0.90, 0.92, 0.94, 0.96]),
}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    with ResultsStore(root) as store:
        run = store.start_run(
            "synthetic",
            "0" * 64,
            "evalkit run (test)",
            list(VALUES),
            ["64"],
            "cpu",
            "local",
            {"python": "3.x", "packages": {"torch": "9.9"}, "cpu_model": "Test CPU"},
        )
        for m, (closs, ssim) in VALUES.items():
            for i, pair in enumerate(PAIRS):
                spec = make_spec(
                    m,
                    pair,
                    {"note": "<b>x</b> & 100%_"} if m == EVIL else {"k": 1},
                    weight_set="w1" if m == "alpha" else None,
                )
                metrics = [
                    MetricValue("content_loss", closs[i]),
                    MetricValue("ssim", ssim[i]),
                    MetricValue("nima", None, "unavailable", "weights 'nima[ava]' <missing> & not downloadable"),
                    MetricValue("mystery", float(i)),
                ]
                store.record_job(
                    run,
                    "synthetic",
                    spec,
                    JobResult(
                        key=spec.key,
                        status="ok",
                        png=png(i),
                        width=56,
                        height=48,
                        time_network_s=0.01 * (i + 1),
                        time_post_s=None,
                        device="cpu",
                        metrics=metrics,
                    ),
                    eval_size=64,
                )
        # a method whose jobs all failed, and a second parameter setting of "beta"
        spec = make_spec("broken", "p1")
        store.record_job(
            run,
            "synthetic",
            spec,
            JobResult(key=spec.key, status="error", message="RuntimeError: boom at x.py:1"),
            eval_size=64,
        )
        spec = make_spec("beta", "p1", {"k": 2})
        store.record_job(
            run,
            "synthetic",
            spec,
            JobResult(key=spec.key, status="ok", png=png(9), width=56, height=48, metrics=[MetricValue("ssim", 0.1)]),
            eval_size=64,
        )
        store.finish_run(run)
    return root


def test_mean_ci_matches_student_t_table():
    # n = 5, s^2 = 2.5, t(0.975, 4) = 2.776445 (standard t table): half-width = 2.776445 * sqrt(2.5 / 5)
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert hi - mean == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert mean - lo == pytest.approx(hi - mean)
    assert mean_ci([7.0])[1:] == (None, None)


def test_quality_table_aggregates_per_pair_and_uses_metric_metadata(results):
    data = load_report_data(results)
    table = build_quality_table(data.jobs, data.metrics, ["content_loss", "ssim"])
    assert [c.metric for c in table.columns][:2] == ["content_loss", "ssim"]
    rows = {r.entry: r for r in table.rows}
    # the two parameter settings of beta are separate rows, never averaged together
    assert {"beta (k=1)", "beta (k=2)"} <= set(rows)
    assert rows["alpha[w1]"].cells["content_loss"].mean == pytest.approx(2.5)
    assert rows["alpha[w1]"].cells["content_loss"].n == 4
    cols = {c.metric: c for c in table.columns}
    for name in ("content_loss", "ssim"):
        means = {e: r.cells[name].mean for e, r in rows.items() if r.cells[name].available}
        pick = max if metric_info(name).higher_is_better else min
        best = pick(means, key=means.get)
        assert [e for e, r in rows.items() if r.cells[name].best] == [best]
        assert cols[name].arrow == ("↑" if metric_info(name).higher_is_better else "↓")
    assert rows["beta (k=1)"].cells["content_loss"].best  # lowest content loss
    assert rows[EVIL].cells["ssim"].best  # highest ssim
    # a metric without metadata gets no arrow and no best mark, rather than a guessed direction
    assert cols["mystery"].arrow == "" and not any(r.cells["mystery"].best for r in table.rows)
    nima = rows["alpha[w1]"].cells["nima"]
    assert not nima.available and "not downloadable" in nima.reason
    broken = rows["broken"]
    assert broken.jobs_ok == 0 and "boom" in broken.cells["ssim"].reason


def test_html_escapes_marks_unavailable_and_is_self_contained(results):
    data = load_report_data(results)
    page = render_leaderboard(data, results / "leaderboard.html")
    html = page.read_text()
    assert "<script>alert" not in html and html.count("<script") == 1  # only the page's own inline script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;_%" in html
    assert "&lt;b&gt;x&lt;/b&gt; &amp; 100%_" in html  # parameter values escaped too
    assert 'title="unavailable: weights &#39;nima[ava]&#39; &lt;missing&gt; &amp; not downloadable"' in html
    assert "http://" not in html and "https://" not in html and '<link rel="stylesheet"' not in html
    assert "Human study" not in html  # no study tables -> no section
    thumbs = sorted((results / "thumbs").glob("*.jpg"))
    assert len(thumbs) == len(VALUES) * len(PAIRS) + 1  # one per distinct output PNG
    assert all(max(Image.open(t).size) <= 200 for t in thumbs)
    for src in (results / "thumbs").glob("*.jpg"):
        assert f'src="thumbs/{src.name}"' in html
    assert html.count('loading="lazy"') == len(VALUES) * len(PAIRS) + 1
    before = {t: t.stat().st_mtime_ns for t in thumbs}
    render_leaderboard(load_report_data(results), results / "leaderboard.html")
    assert {t: t.stat().st_mtime_ns for t in thumbs} == before  # rebuilt page reuses thumbnails


def test_human_study_tables_add_column_and_agreement(results):
    with sqlite3.connect(results / "evalkit.sqlite") as conn:
        conn.executemany(  # rows as a study written before study ids (schema 2) left them: shown as legacy
            "INSERT INTO preferences(study_id, study, label, score, lower, upper, rank, votes)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [("pilot", "pilot", "alpha[w1]", 1.25, 0.9, 1.6, 1, 40), ("pilot", "pilot", EVIL, -0.5, -0.9, -0.1, 2, 40)],
        )
        conn.execute(
            "INSERT INTO metric_agreement(study_id, study, metric, agreement, n)"
            " VALUES ('pilot', 'pilot', 'ssim', 0.625, 80)"
        )
    html = render_leaderboard(load_report_data(results), results / "lb.html").read_text()
    assert "human: pilot" in html and "Agreement of metrics with human judgements" in html
    assert 'data-sort="1.25"' in html and "0.625" in html
    assert "<script>alert" not in html


def test_markdown_and_latex_tables_escape_and_bold_best(results):
    data = load_report_data(results)
    md = render_tables(data, "md")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;\\_%" in md and "<script>" not in md
    assert "| Method | content\\_loss ↓ | mystery | nima ↑ | ssim ↑ |" in md
    ssim_best = next(line for line in md.splitlines() if line.startswith("| &lt;script"))
    assert "**0.930 ± 0.041**" in ssim_best  # mean of .90,.92,.94,.96 ± t-interval half-width
    tex = render_tables(data, "tex")
    assert r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}\&\_\%" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"Method & content\_loss $\downarrow$ & mystery & nima $\uparrow$ & ssim $\uparrow$ \\" in tex
    quality = tex.split(r"\end{table}")[0]
    body = [line for line in quality.splitlines() if line.endswith(r"\\") and "&" in line]
    header = body[0]
    assert all(line.count(" & ") == header.count(" & ") for line in body)  # no stray unescaped & in any row


def test_escaping_functions():
    assert (
        latex_escape("a_b & c% $d$ #e {f} ~^\\")
        == r"a\_b \& c\% \$d\$ \#e \{f\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    assert md_escape("a|b <i>") == r"a\|b &lt;i&gt;"


def test_run_selection_errors(results):
    with pytest.raises(EvalkitError, match="unknown run id"):
        load_report_data(results, ["nope"])
    with ResultsStore(results) as store:
        store.start_run("other", "1" * 64, "evalkit run", [], ["64"], "cpu", "local", {})
    # the latest run is of protocol "other": by default only its runs are shown (none of the synthetic jobs)
    assert load_report_data(results).jobs.empty
    runs = [r[0] for r in sqlite3.connect(results / "evalkit.sqlite").execute("SELECT run_id FROM runs")]
    with pytest.raises(EvalkitError, match="different protocols"):
        load_report_data(results, runs)
    with pytest.raises(EvalkitError, match="no results database"):
        load_report_data(results / "missing")


def test_cli_writes_all_formats(results):
    from typer.testing import CliRunner

    from evalkit.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["leaderboard", "--results", str(results)])
    assert out.exit_code == 0, out.output
    html = (results / "leaderboard.html").read_text()
    for name in ("jobs.csv", "metrics.csv", "metrics_wide.csv"):
        assert f'href="export/{name}"' in html and (results / "export" / name).is_file()
    exported = pd.read_csv(results / "export" / "metrics.csv")
    assert set(exported["metric"]) == {"content_loss", "ssim", "nima", "mystery"}
    out = runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "tex", "--out", "-"])
    assert out.exit_code == 0 and out.output.startswith("% generated by evalkit")
    out = runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "pdf"])
    assert out.exit_code != 0


def test_log_axis_maps_decades_to_ends():
    axis = Axis.fit([1.0, 50.0, 1000.0], 0, 300)
    assert axis.log and axis(1.0) == 0 and axis(1000.0) == 300 and axis(10.0) == 100
    assert [t[1] for t in axis.ticks()] == ["1", "10", "100", "1000"]
    linear = Axis.fit([2.0, 3.0], 0, 100)
    assert not linear.log and 0 < linear(2.0) < linear(3.0) < 100


def test_spec_json_roundtrip_keeps_evil_label(results):
    data = load_report_data(results)
    evil = data.jobs[data.jobs["label"] == EVIL]
    assert len(evil) == len(PAIRS)
    assert json.loads(evil["params"].iloc[0]) == {"note": "<b>x</b> & 100%_"}
