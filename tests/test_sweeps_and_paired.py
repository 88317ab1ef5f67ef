"""Issue 16: sweeps (CLI and TOML), paired statistics between methods, trade-off curves with the Pareto frontier.

Statistics are checked against known truths (a planted difference is recovered; with none, the false-positive rate
is the nominal one), against the reference formulation (Holm's step-down adjustment by hand), and the plots against
the database's means.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.cli.run import parse_sweeps
from evalkit.errors import EvalkitError
from evalkit.planner import sweep_variants
from evalkit.protocol import load_protocol
from evalkit.registry import get_method
from evalkit.report import paired
from evalkit.report.plots import pareto_front
from evalkit.results import JobResult, MetricValue
from evalkit.store import ResultsStore
from tests.test_leaderboard import make_spec, png


# -- sweeps ----------------------------------------------------------------------------------------------------------
def test_sweep_arguments_form_a_validated_grid_with_readable_variants():
    sweeps = parse_sweeps(["gatys.style_weight=10,1000", "gatys.content_layer=conv2_2,conv4_2"])
    assert sweeps == {"gatys": {"style_weight": ["10", "1000"], "content_layer": ["conv2_2", "conv4_2"]}}
    variants = sweep_variants(get_method("gatys"), {"iterations": "5"}, sweeps["gatys"])
    assert [v for v, _ in variants] == [
        "style_weight=10 content_layer=conv2_2",
        "style_weight=10 content_layer=conv4_2",
        "style_weight=1000 content_layer=conv2_2",
        "style_weight=1000 content_layer=conv4_2",
    ]
    assert all(p["iterations"] == 5 and isinstance(p["style_weight"], float) for _, p in variants)
    assert sweep_variants(get_method("reinhard"), {}, {}) == [("", get_method("reinhard").resolve_params({}))]
    with pytest.raises(ValueError, match="parameter 'content_layer'.*conv9_9"):
        sweep_variants(get_method("gatys"), {}, {"content_layer": ["conv9_9"]})
    with pytest.raises(EvalkitError, match="cannot parse --sweep 'adain.alpha'"):
        parse_sweeps(["adain.alpha"])


def test_a_variant_is_part_of_the_label_and_key_but_old_keys_stay_valid():
    plain = make_spec("adain", "p1", {"alpha": 0.5}, "cd16x")
    from dataclasses import replace

    swept = replace(plain, variant="alpha=0.5").with_key()
    assert plain.label == "adain[cd16x]" and swept.label == "adain[cd16x] alpha=0.5"
    assert swept.key != plain.key
    assert "variant" not in plain.identity()  # keys of runs recorded before sweeps existed are unchanged


def test_protocol_sweep_tables_are_validated(tmp_path):
    base = tmp_path / "p.toml"
    text = load_protocol("quick").text
    base.write_text(text + '\n[sweep.reinhard]\nspace = ["lab", "lalphabeta"]\n')
    assert load_protocol(str(base)).sweep == {"reinhard": {"space": ["lab", "lalphabeta"]}}
    base.write_text(text + "\n[sweep.reinhard]\nspace = []\n")
    with pytest.raises(EvalkitError, match="sweep"):
        load_protocol(str(base))


def test_sweep_runs_each_variant_once_and_resumes_per_variant(tmp_path):
    root = tmp_path / "r"
    args = ["run", "--protocol", "quick", "--methods", "reinhard,identity", "--metrics", "ssim", "-r", str(root)]
    args += ["--no-progress", "--executor", "local"]
    first = CliRunner().invoke(app, [*args, "--sweep", "reinhard.space=lab,lalphabeta"])
    assert first.exit_code == 0, first.output
    with ResultsStore.open_reader(root, "t") as store:
        jobs = store.jobs_frame()
        methods = store.methods_table()
    assert sorted(jobs["label"].unique()) == ["identity", "reinhard space=lab", "reinhard space=lalphabeta"]
    assert "reinhard space=lab" in methods  # each variant finds its model row
    again = CliRunner().invoke(app, [*args, "--sweep", "reinhard.space=lab,lalphabeta,lab"])
    assert again.exit_code == 0, again.output
    with ResultsStore.open_reader(root, "t") as store:
        assert len(store.jobs_frame()) == len(jobs)  # nothing re-run, the duplicate value dropped


# -- paired statistics -----------------------------------------------------------------------------------------------
def test_holm_matches_the_step_down_formulation():
    # sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert paired.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _pivot(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(columns, index=[f"p{i}" for i in range(len(next(iter(columns.values()))))])


def test_a_planted_difference_is_recovered_with_its_interval_and_tied_group():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 40)
    pivot = _pivot(
        {
            "good": base + 0.05 + rng.normal(0, 0.02, 40),
            "twin": base + 0.05 + rng.normal(0, 0.02, 40),
            "worse": base + rng.normal(0, 0.02, 40),
        }
    )
    table = paired.compare(pivot, "ssim")  # higher is better
    by = {(c.a, c.b): c for c in table.comparisons}
    good_worse = by[("good", "worse")]
    assert good_worse.lower < 0.05 < good_worse.upper and good_worse.better == "good"
    assert by[("good", "twin")].better is None
    assert set(table.tied_for_best) == {"good", "twin"} and "worse" not in table.tied_for_best
    # the same difference for a lower-is-better metric makes "worse" the best
    assert paired.compare(pivot, "content_loss").best == "worse"


def test_no_difference_is_found_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    rejections = 0
    trials = 400
    for _ in range(trials):
        shared = rng.normal(0, 1, 20)
        pivot = _pivot({"a": shared + rng.normal(0, 0.3, 20), "b": shared + rng.normal(0, 0.3, 20)})
        rejections += paired.compare(pivot, "ssim").comparisons[0].significant
    assert 0.02 <= rejections / trials <= 0.085  # nominal 0.05; binomial sd 0.011


@pytest.fixture
def swept_results(tmp_path):
    """A results root with a 3-point alpha sweep of one model and one plain model, real store rows."""
    root = tmp_path / "results"
    rng = np.random.default_rng(2)
    with ResultsStore(root) as store:
        run = store.start_run("synthetic", "0" * 64, "t", ["adain", "wct"], ["64"], "cpu", "local", {})
        from dataclasses import replace

        for label, alpha, closs, sloss, ssim in [
            ("adain", 0.25, 1.0, 5.0, 0.8),
            ("adain", 0.5, 2.0, 3.0, 0.7),
            ("adain", 1.0, 4.0, 2.0, 0.6),
            ("wct", 1.0, 3.0, 4.0, 0.5),  # dominated by adain alpha=0.5 on (content, style)
        ]:
            for i in range(6):
                spec = make_spec(label, f"p{i}", {"alpha": alpha}, "cd16x")
                if label == "adain":
                    spec = replace(spec, variant=f"alpha={alpha:g}").with_key()
                noise = float(rng.normal(0, 0.05))
                metrics = [
                    MetricValue("content_loss", closs + noise),
                    MetricValue("style_loss", sloss + noise),
                    MetricValue("ssim", ssim + noise / 10),
                ]
                result = JobResult(key=spec.key, status="ok", png=png(i), width=56, height=48, metrics=metrics)
                store.record_job(run, "synthetic", spec, result, eval_size=64)
        store.finish_run(run)
    return root


def test_pareto_front_uses_each_axis_direction():
    points = [(1.0, 5.0), (2.0, 3.0), (4.0, 2.0), (3.0, 4.0)]
    assert pareto_front(points, False, False) == [(1.0, 5.0), (2.0, 3.0), (4.0, 2.0)]
    assert pareto_front(points, True, True) == [(1.0, 5.0), (3.0, 4.0), (4.0, 2.0)]


def test_leaderboard_draws_curves_and_frontier_at_the_database_means(swept_results):
    from evalkit.report.data import load_report_data
    from evalkit.report.html import render_leaderboard

    out = render_leaderboard(load_report_data(swept_results), swept_results / "leaderboard.html")
    html = out.read_text()
    data = load_report_data(swept_results)
    means = data.metrics.groupby(["entry", "metric"])["value"].mean()
    svg = html[html.index("content loss vs style loss") :]
    svg = svg[: svg.index("</figure>")]
    group = svg[svg.index('data-series="adain[cd16x]"') :]
    group = group[: group.index("</g>")]
    points = re.findall(r'data-x="([^"]+)" data-y="([^"]+)"[^>]*><title>([^<:]+):', group)
    assert len(points) == 3 and "<polyline" in group  # one curve through the three sweep points
    for x, y, entry in points:
        assert float(x) == pytest.approx(means[(entry, "content_loss")], rel=1e-12)
        assert float(y) == pytest.approx(means[(entry, "style_loss")], rel=1e-12)
    assert 'class="pareto"' in svg and svg.count('class="on-front"') == 3  # wct's point is dominated
    assert (swept_results / "figures" / "content_loss_vs_style_loss.svg").read_text().startswith("<?xml")
    assert "Paired comparisons" in html and "tied for best" in html


def test_compare_command_prints_the_paired_table(swept_results):
    result = CliRunner().invoke(app, ["compare", "-r", str(swept_results), "--metric", "ssim", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "| adain\\[cd16x\\] alpha=0.25 | adain\\[cd16x\\] alpha=0.5 | 6 |" in result.output
    assert "Tied for best (not significantly worse than adain\\[cd16x\\] alpha=0.25)" in result.output
    tex = CliRunner().invoke(app, ["compare", "-r", str(swept_results), "--metric", "ssim", "--format", "tex"])
    assert tex.exit_code == 0 and r"\begin{tabular}{llrrlrrl}" in tex.output
    bad = CliRunner().invoke(app, ["compare", "-r", str(swept_results), "--metric", "nope"])
    assert bad.exit_code != 0 and "recorded metrics are content_loss, ssim, style_loss" in str(
        bad.exception or bad.output
    )
