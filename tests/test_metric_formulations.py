"""Faster formulations of metrics against the formulation they replace, computed independently on the same inputs:
SSIM's separable float64 Gaussian against pyiqa's ``ssim`` (11x11 float32-rounded window), CFSD's row blocks
against the reference's literal softmax/KL over the whole N x N maps. The stored values of every metric are checked by
tests/test_metric_reference.py."""

from __future__ import annotations

import pyiqa
import pytest
import torch
import torch.nn.functional as F

from evalkit.metrics.cfsd import structural_distance
from evalkit.metrics.ssim import ssim_luma


@pytest.mark.parametrize(("h", "w"), [(192, 256), (97, 131), (64, 64)])
def test_ssim_matches_pyiqa(h, w):
    torch.manual_seed(h * w)
    net = pyiqa.create_metric(
        "ssim", device="cpu", downsample=False, test_y_channel=True, color_space="yiq", as_loss=False
    )
    content = torch.rand(1, 3, h, w)
    for output in (content, (content + 0.2 * torch.randn_like(content)).clamp(0, 1), torch.rand(1, 3, h, w)):
        expected = float(net(output, content))
        assert float(ssim_luma(output, content)) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def structural_distance_reference(content: torch.Tensor, output: torch.Tensor) -> float:
    """The reference's formulation, literally (``F.kl_div(log_softmax(S_o), softmax(S_c), reduction="batchmean")``
    with batch 1 = the sum over rows): the check for :func:`structural_distance`; holds the N x N maps whole."""
    c = content.shape[1]
    fc = content[0].reshape(c, -1).T.double() / c
    fo = output[0].reshape(c, -1).T.double() / c
    p_c = F.softmax(fc @ fc.T, dim=1)
    log_p_o = F.log_softmax(fo @ fo.T, dim=1)
    return float(F.kl_div(log_p_o[None], p_c[None], reduction="batchmean"))


@pytest.mark.parametrize(("shape", "block"), [((1, 64, 20, 30), 100), ((1, 32, 17, 13), 64), ((1, 16, 8, 8), 2048)])
def test_cfsd_matches_the_reference_formulation(shape, block):
    torch.manual_seed(shape[1])
    content = torch.relu(torch.randn(shape)) * 2
    for output in (content, torch.relu(content + torch.randn(shape)), torch.relu(torch.randn(shape)) * 5):
        expected = structural_distance_reference(content, output)
        got = structural_distance(content, output, block=block)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert structural_distance(content, content, block=block) == pytest.approx(0.0, abs=1e-9)
