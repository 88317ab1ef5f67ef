"""Issue 16: the mean/std losses of the AdaIN-era papers and StyleID's CFSD, each against an independent,
literal re-computation of the released evaluation code's formula."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from evalkit import assets
from evalkit.metrics import EvalSample, MetricSuite, get_metric_class
from evalkit.metrics.cfsd import CAFFE_SCALE, structural_distance
from evalkit.vgg import get_vgg19
from tests.test_metrics import _skimage


def _calc_mean_std(feat: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """MicroAST's ``calc_mean_std`` in numpy: unbiased variance + eps over positions, per channel."""
    flat = feat.reshape(feat.shape[1], -1)
    return flat.mean(axis=1), np.sqrt(flat.var(axis=1, ddof=1) + eps)


def test_meanstd_losses_follow_the_microast_evaluation_script():
    content = _skimage("astronaut.png", 64)
    gen = torch.Generator().manual_seed(4)
    output = (content + 0.1 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    style = _skimage("coffee.png", 48)  # a different size from the output: the style loss compares statistics only
    names = ["style_loss_meanstd", "content_loss_mse"]
    suite = MetricSuite(names, "cpu", assets.AssetStore.from_env())
    values = {v.name: v.value for v in suite.evaluate(EvalSample(output, content, style, "o", "c", "s"))}
    vgg = get_vgg19("imagenet", "cpu", assets.AssetStore.from_env())
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    with torch.no_grad():
        fo, fc, fs = ({k: v.double().numpy() for k, v in vgg(x, layers).items()} for x in (output, content, style))
    style_loss = 0.0
    for layer in layers:
        (mo, so), (ms, ss) = _calc_mean_std(fo[layer]), _calc_mean_std(fs[layer])
        style_loss += np.mean((mo - ms) ** 2) + np.mean((so - ss) ** 2)  # nn.MSELoss on (1, C, 1, 1)
    content_loss = (np.mean((fo["relu4_1"] - fc["relu4_1"]) ** 2) + np.mean((fo["relu5_1"] - fc["relu5_1"]) ** 2)) / 2
    assert math.isclose(values["style_loss_meanstd"], style_loss / 5, rel_tol=1e-6)
    assert math.isclose(values["content_loss_mse"], content_loss, rel_tol=1e-6)
    same = suite.evaluate(EvalSample(content, content, content, "c", "c", "c"))
    assert [v.value for v in same] == [0.0, 0.0]


def _patch_simi_reference(output: torch.Tensor, content: torch.Tensor) -> float:
    """StyleID's PatchSimi.forward, literally (transpose(1, 3), reshape, div(c), bmm, log_softmax / softmax,
    ``F.kl_div(..., reduction="batchmean")``), on (1, C, H, W) features."""

    def simi(x: torch.Tensor, log: bool) -> torch.Tensor:
        b, c, h, w = x.size()
        feats = torch.transpose(x, 1, 3).reshape(b, h * w, c).div(c)
        scores = torch.bmm(feats, torch.transpose(feats, 1, 2))
        return (F.log_softmax(scores, dim=-1) if log else F.softmax(scores, dim=-1)).reshape(b, -1)

    return float(F.kl_div(simi(output, True), simi(content, False), reduction="batchmean"))


def test_structural_distance_is_the_reference_kl_in_any_row_blocks():
    gen = torch.Generator().manual_seed(5)
    content = torch.rand(1, 16, 9, 7, generator=gen, dtype=torch.float64) * 3
    output = content + 0.5 * torch.rand(1, 16, 9, 7, generator=gen, dtype=torch.float64)
    expected = _patch_simi_reference(output, content)
    assert expected > 0
    for block in (1, 5, 2048):
        assert math.isclose(structural_distance(content, output, block), expected, rel_tol=1e-10)
    assert structural_distance(content, content) == 0.0


def test_cfsd_caffe_metric_on_real_features_and_cfsd_names_its_reference_weights():
    content = _skimage("astronaut.png", 48)
    gen = torch.Generator().manual_seed(6)
    output = (content + 0.2 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    suite = MetricSuite(["cfsd_caffe"], "cpu", assets.AssetStore.from_env())
    (value,) = suite.evaluate(EvalSample(output, content, content, "o", "c", "c"))
    vgg = get_vgg19("imagenet", "cpu", assets.AssetStore.from_env())
    with torch.no_grad():
        fo, fc = (vgg(x, ["relu3_1"], pooling="max")["relu3_1"].double() / CAFFE_SCALE for x in (output, content))
    assert value.status == "ok" and math.isclose(value.value, _patch_simi_reference(fo, fc), rel_tol=1e-6)
    assert get_metric_class("cfsd").info.weights == ("vgg19[torchvision]",)
    assert list(get_metric_class("cfsd").weight_sets) == ["torchvision"]
