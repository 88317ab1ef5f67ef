"""Metric suite: metadata, losses vs an independent computation, shared work, unavailability, NIMA, CLI."""

from __future__ import annotations

import json
import math
import sqlite3
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit import assets, imaging
from evalkit.metrics import EvalSample, MetricSuite, get_metric_class, metric_names
from evalkit.metrics.features import CONTENT_LAYER, STYLE_LAYERS
from evalkit.vgg import get_vgg19
from tests.conftest import WEIGHTS_MIRROR

PYIQA_NAMES = {"ssim": "ssim", "fsim": "fsim", "niqe": "niqe", "brisque": "brisque", "nima": "nima"}


def _skimage(name: str, size: int | None = None) -> torch.Tensor:
    path = resources.files("skimage").joinpath(f"data/{name}")
    img = imaging.load_image(Path(str(path)))
    if size:
        img = imaging.resize(img, imaging.Resolution.parse(str(size)))
    return imaging.to_tensor(img)


# -- metadata ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", metric_names())
def test_every_metric_carries_complete_metadata(name):
    cls = get_metric_class(name)
    info = cls.info
    assert info.name == name
    assert info.reference in ("content", "style", "none")
    assert info.description and info.definition, "a metric must say exactly what it computes"
    lo, hi = info.range
    assert lo is None or hi is None or lo < hi
    assert isinstance(info.higher_is_better, bool)
    asset = getattr(cls, "asset", None)
    if asset is not None:  # a metric with a weight file names it in its metadata
        assert asset.name in info.weights
    ok, reason = cls("cpu").availability()
    assert isinstance(ok, bool) and (ok or reason), "an unavailable metric must say why"


@pytest.mark.parametrize("name", sorted(PYIQA_NAMES))
def test_pyiqa_backed_metadata_agrees_with_pyiqa(name):
    """Direction and reference type are evalkit's own declarations; pyiqa's registry checks them."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    cfg = DEFAULT_CONFIGS[PYIQA_NAMES[name]]
    info = get_metric_class(name).info
    assert info.higher_is_better == (not cfg.get("lower_better", False))
    assert (info.reference == "content") == (cfg["metric_mode"] == "FR")


# -- content / style losses through the suite ----------------------------------------------------------------
def test_losses_through_the_suite_match_an_independent_numpy_computation():
    """Output and style of *different* sizes: checks the per-image M normalisation, via the suite's cache."""
    content = _skimage("astronaut.png", 64)
    gen = torch.Generator().manual_seed(3)
    output = (content + 0.1 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    style = _skimage("coffee.png", 48)  # 48 x 72 vs 64 x 64
    suite = MetricSuite(["content_loss", "style_loss"], "cpu", assets.AssetStore.from_env())
    values = {v.name: v.value for v in suite.evaluate(EvalSample(output, content, style, "o", "c", "s"))}

    vgg = get_vgg19("imagenet", "cpu", assets.AssetStore.from_env())
    with torch.no_grad():
        fo, fc, fs = (vgg(x, (CONTENT_LAYER, *STYLE_LAYERS)) for x in (output, content, style))
    diff = fo[CONTENT_LAYER].double().numpy() - fc[CONTENT_LAYER].double().numpy()
    expected_content = 0.5 * np.sum(diff**2)
    expected_style = 0.0
    for layer in STYLE_LAYERS:
        o = fo[layer][0].double().numpy().reshape(fo[layer].shape[1], -1)
        s = fs[layer][0].double().numpy().reshape(fs[layer].shape[1], -1)
        n = o.shape[0]
        g = np.einsum("ik,jk->ij", o, o) / o.shape[1]
        a = np.einsum("ik,jk->ij", s, s) / s.shape[1]
        expected_style += np.sum((g - a) ** 2) / (4.0 * n * n) / len(STYLE_LAYERS)
    assert math.isclose(values["content_loss"], expected_content, rel_tol=1e-9)
    assert math.isclose(values["style_loss"], expected_style, rel_tol=1e-6)
    assert values["content_loss"] > 0 and values["style_loss"] > 0


def test_one_vgg_pass_per_image_and_style_grams_once_per_style():
    """3 outputs of one (content, style) pair: 3 + 1 + 1 VGG passes, not 3 x 4 as separate losses would."""
    content, style = _skimage("astronaut.png", 48), _skimage("coffee.png", 48)
    style2 = _skimage("brick.png", 48)
    suite = MetricSuite(["content_loss", "style_loss"], "cpu", assets.AssetStore.from_env())
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        out = (content + 0.05 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
        statuses = [v.status for v in suite.evaluate(EvalSample(out, content, style, f"o{i}", "c", "s"))]
        assert statuses == ["ok", "ok"]
    assert suite.features.vgg_passes == 5
    grams_before = suite.features.grams("s", style)
    suite.evaluate(EvalSample(content, content, style2, "o3", "c", "s2"))  # new output + new style: 2 passes
    assert suite.features.vgg_passes == 7
    assert suite.features.grams("s", style) is grams_before  # cached object reused, not recomputed


# -- unavailable metrics never fail a run --------------------------------------------------------------------
def _empty_mirror_settings(tmp_path: Path) -> assets.AssetSettings:
    empty = tmp_path / "empty_mirror"
    empty.mkdir(exist_ok=True)
    return assets.AssetSettings(home=str(tmp_path / "home"), weights_mirror=str(empty), allow_download=False)


def test_missing_weight_file_makes_metric_unavailable_with_reason(tmp_path):
    store = assets.AssetStore(_empty_mirror_settings(tmp_path))
    suite = MetricSuite(["niqe", "brisque", "ssim"], "cpu", store)
    assert set(suite.unavailable) == {"niqe", "brisque"}
    reason = suite.unavailable["niqe"]
    assert "modelparameters.mat" in reason and "EVALKIT_WEIGHTS_MIRROR" in reason
    img = _skimage("chelsea.png", 96)
    values = {v.name: v for v in suite.evaluate(EvalSample(img, img, img, "o", "c", "s"))}
    assert values["niqe"].status == "unavailable" and values["niqe"].value is None
    assert values["ssim"].status == "ok" and values["ssim"].value == pytest.approx(1.0, abs=1e-12)


def test_corrupt_weight_file_is_unavailable_not_used(tmp_path):
    settings = _empty_mirror_settings(tmp_path)
    bad = Path(settings.weights_mirror) / "iqa/brisque/allmodel"
    bad.parent.mkdir(parents=True)
    bad.write_text("svm_type epsilon_svr\nSV\n")
    store = assets.AssetStore(settings)
    ok, reason = get_metric_class("brisque")("cpu", store).availability()
    assert not ok and "sha256" in reason and str(bad) in reason


QUICK_PROTOCOL = """
name = "metrics_tiny"
resolutions = ["64"]
style_size = 64
eval_size = 96
methods = ["gatys"]

[params.gatys]
iterations = 2

[images.chelsea]
package = "skimage"
resource = "data/chelsea.png"
sha256 = "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"

[images.brick]
package = "skimage"
resource = "data/brick.png"
sha256 = "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"

[[pairs]]
id = "chelsea-brick"
content = "chelsea"
style = "brick"
"""


@pytest.mark.skipif(WEIGHTS_MIRROR is None, reason="EVALKIT_WEIGHTS_MIRROR not set: NIQE/BRISQUE need it")
def test_run_stores_every_metric_and_nima_unavailable_does_not_fail_it(tmp_path, monkeypatch):
    from evalkit.runner import RunRequest, run_benchmark

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # NIMA's checkpoint is on the HF hub: unobtainable by design
    proto = tmp_path / "metrics_tiny.toml"
    proto.write_text(textwrap.dedent(QUICK_PROTOCOL))
    all_metrics = ["content_loss", "style_loss", "ssim", "fsim", "niqe", "brisque", "nima"]
    request = RunRequest(
        protocol=str(proto),
        metrics=all_metrics,
        out=tmp_path / "results",
        progress=False,
        assets=assets.AssetSettings.from_env(weights_mirror=str(WEIGHTS_MIRROR)),
    )
    summary = run_benchmark(request)
    assert summary.counts["ok"] == 1 and not summary.failures
    with sqlite3.connect(summary.database) as conn:
        query = "SELECT metric, value, status, message FROM metrics"
        rows = {m: (v, s, msg) for m, v, s, msg in conn.execute(query)}
    assert set(rows) == set(all_metrics)
    value, status, message = rows["nima"]
    assert (value, status) == (None, "unavailable")
    assert "NIMA_InceptionV2_ava-b0c77c00.pth" in message and "EVALKIT_WEIGHTS_MIRROR" in message
    for name in all_metrics[:-1]:
        value, status, message = rows[name]
        assert status == "ok" and math.isfinite(value), (name, status, message)
    assert 0.0 <= rows["ssim"][0] <= 1.0 and 0.0 <= rows["fsim"][0] <= 1.0


# -- NIMA code path with SYNTHETIC weights -------------------------------------------------------------------
def _synthetic_nima_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Shape-exact SYNTHETIC weights (random, seeded) to exercise loading and inference; not a NIMA model."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, ref in net.state_dict().items():
        if not ref.is_floating_point():
            state[key] = torch.zeros_like(ref)
        elif key.endswith("running_var"):
            state[key] = torch.rand(ref.shape, generator=gen) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.01 * torch.randn(ref.shape, generator=gen)
        else:
            fan_in = max(1, ref[0].numel()) if ref.dim() > 1 else 1
            state[key] = torch.randn(ref.shape, generator=gen) / math.sqrt(fan_in)
    return state


def test_nima_code_path_with_synthetic_shape_exact_weights(tmp_path):
    from evalkit.metrics.nima import NIMA_AVA, build_network

    settings = _empty_mirror_settings(tmp_path)
    synthetic_weights = build_network()
    state = _synthetic_nima_state(synthetic_weights)
    target = Path(settings.weights_mirror) / NIMA_AVA.name
    target.parent.mkdir(parents=True)
    torch.save({"params": state}, target)
    store = assets.AssetStore(settings)

    suite = MetricSuite(["nima"], "cpu", store)
    assert not suite.unavailable, suite.unavailable
    image = _skimage("coffee.png")[..., :320, :360]
    (value,) = suite.evaluate(EvalSample(image, image, image, "o", "c", "s"))
    assert value.status == "ok", value.message

    # Independent computation of the documented definition with the same synthetic weights.
    synthetic_weights.load_state_dict(state)
    synthetic_weights.eval()
    import torchvision.transforms.functional as TF

    x = TF.center_crop(TF.resize(image, 299), 299)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        pooled = synthetic_weights.base_model(x)[-1].mean(dim=(2, 3))
        linear = synthetic_weights.classifier[2]
        probs = F.softmax(pooled @ linear.weight.T + linear.bias, dim=-1)
    expected = float((probs * torch.arange(1, 11, dtype=probs.dtype)).sum())
    assert 1.0 <= value.value <= 10.0
    assert value.value == pytest.approx(expected, rel=1e-5)


def test_nima_checkpoint_of_the_wrong_model_is_unavailable_with_reason(tmp_path):
    from evalkit.metrics.nima import NIMA_AVA

    settings = _empty_mirror_settings(tmp_path)
    target = Path(settings.weights_mirror) / NIMA_AVA.name
    target.parent.mkdir(parents=True)
    wrong = {"classifier.2.weight": torch.zeros(10, 1536)}  # SYNTHETIC and deliberately incomplete
    torch.save({"params": wrong}, target)
    store = assets.AssetStore(settings)
    suite = MetricSuite(["nima"], "cpu", store)
    assert "does not fit" in suite.unavailable["nima"] and str(target) in suite.unavailable["nima"]


# -- evalkit score -------------------------------------------------------------------------------------------
def test_score_cli_scores_files_and_explains_missing_inputs(tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    settings = _empty_mirror_settings(tmp_path)  # no weights: niqe comes back unavailable, no crash
    img = imaging.load_image(Path(str(resources.files("skimage").joinpath("data/chelsea.png"))))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    img.save(a)
    imaging.to_pil(imaging.to_tensor(img) * 0.5).save(b)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "score",
            str(b),
            "--ref",
            str(a),
            "--metrics",
            "ssim,fsim,style_loss,niqe",
            "--json",
            "--weights-mirror",
            settings.weights_mirror,
            "--home",
            settings.home,
        ],
    )
    assert result.exit_code == 0, result.output
    values = {v["metric"]: v for v in json.loads(result.output)}
    # Independent check: pyiqa's SSIM on the same two files.
    import pyiqa

    expected = float(
        pyiqa.create_metric("ssim", device="cpu")(
            imaging.to_tensor(imaging.load_image(b)), imaging.to_tensor(imaging.load_image(a))
        )
    )
    # 1e-9, not 1e-12: evalkit filters with two 1-D float64 passes where pyiqa uses its float32-rounded 11x11 window
    # (another summation order and window rounding: ~1e-11 here; tests/test_metric_formulations.py bounds it)
    assert values["ssim"]["value"] == pytest.approx(expected, abs=1e-9) and values["ssim"]["value"] < 0.99
    assert 0 < values["fsim"]["value"] < 1
    assert values["style_loss"]["status"] == "unavailable" and "--style" in values["style_loss"]["message"]
    assert values["niqe"]["status"] == "unavailable"
    small = tmp_path / "small.png"
    img.resize((100, 80)).save(small)
    mismatch = runner.invoke(app, ["score", str(small), "--ref", str(a), "--metrics", "ssim"])
    assert mismatch.exit_code != 0 and "pixel-aligned" in str(mismatch.exception)


def test_metrics_cli_lists_metadata_and_why_nima_is_unavailable(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evalkit.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "3000")  # wide enough that no cell wraps
    settings = _empty_mirror_settings(tmp_path)
    settings.allow_download = True  # so the reason given is the HF hub being offline, not EVALKIT_OFFLINE
    result = CliRunner().invoke(app, ["metrics", "--weights-mirror", settings.weights_mirror, "--home", settings.home])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert set(metric_names()) <= set(lines)
    assert "HF_HUB_OFFLINE" in lines["nima"] and "NIMA_InceptionV2_ava-b0c77c00.pth" in lines["nima"]
    assert "│ yes" in lines["ssim"] and "higher" in lines["ssim"] and "lower" in lines["niqe"]
    assert "iqa/brisque/allmodel" in lines["brisque"]
