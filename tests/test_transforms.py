"""Feature transforms (methods/_transforms.py) and Reinhard's colour spaces against their definitions.

References used: the papers' equations (AdaIN Eq. 8; WCT Eqs. 2-5), an independent numpy/scipy implementation of
WCT (``scipy.linalg.sqrtm`` instead of ``eigh``), and scikit-image's ``rgb2lab``/``lab2rgb`` for CIELAB.
Tolerances are stated per test; features are synthetic and correlated (random mixing matrices), so covariances are
far from diagonal and a transposed matrix or a missing centring would fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from evalkit_methods import _transforms as T
from evalkit_methods.reinhard import lab_to_rgb, lalphabeta_to_rgb, reinhard_transfer, rgb_to_lab, rgb_to_lalphabeta
from skimage import color

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def correlated(c: int, h: int, w: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """(1, C, H, W) features with a dense random covariance whose eigenvalues span 1e-2..1e3 (condition 1e5, like
    deep VGG layers) - all above the 1e-5 eigenvalue floor, so nothing is dropped."""
    gen = torch.Generator().manual_seed(seed)
    mix, _ = torch.linalg.qr(torch.randn(c, c, generator=gen, dtype=torch.float64))  # random rotation
    spread = torch.logspace(-1, 1.5, c, dtype=torch.float64)
    z = torch.randn(c, h * w, generator=gen, dtype=torch.float64)
    mean = torch.randn(c, 1, generator=gen, dtype=torch.float64) * 3 + shift
    return ((mix * spread) @ z * scale + mean).reshape(1, c, h, w)


def stats(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = feat.reshape(feat.shape[1], -1).double()
    return flat.mean(1), torch.cov(flat)  # torch.cov: unbiased, independent of our covariance()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


# -- AdaIN ------------------------------------------------------------------------------------------------------------
def test_adain_output_carries_style_channel_mean_and_std():
    content, style = correlated(16, 20, 24, 0).float(), correlated(16, 31, 17, 1, scale=2.5, shift=4).float()
    out = T.adain(content, style)
    s_mean, s_std = style.mean((2, 3)), style.std((2, 3))
    # tolerance: float32 arithmetic (1e-4 relative) plus eps=1e-5 on variances of order 1..1e4
    assert torch.allclose(out.mean((2, 3)), s_mean, rtol=1e-4, atol=1e-3)
    assert torch.allclose(out.std((2, 3)), s_std, rtol=1e-4, atol=1e-4)
    # and the normalised pattern is the content's: per channel, output is an increasing affine map of the input
    corr = torch.corrcoef(torch.stack([out[0, 3].flatten(), content[0, 3].flatten()]))[0, 1]
    assert float(corr) > 0.99999


def test_adain_matches_reference_formula_in_numpy():
    content, style = correlated(8, 10, 12, 2).float(), correlated(8, 9, 7, 3).float()
    c, s = content[0].reshape(8, -1).numpy().astype(np.float64), style[0].reshape(8, -1).numpy().astype(np.float64)
    ref = (c - c.mean(1, keepdims=True)) / np.sqrt(c.var(1, ddof=1, keepdims=True) + 1e-5) * np.sqrt(
        s.var(1, ddof=1, keepdims=True) + 1e-5
    ) + s.mean(1, keepdims=True)
    assert np.allclose(T.adain(content, style)[0].reshape(8, -1).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_style_interpolation_is_the_weighted_mix_of_adain_outputs():
    content = correlated(8, 12, 12, 4)
    a, b = correlated(8, 10, 10, 5, shift=5), correlated(8, 14, 9, 6, scale=3)
    assert torch.allclose(T.adain_interpolate(content, [a, b], [1, 0]), T.adain(content, a))
    mixed = T.adain_interpolate(content, [a, b], [3, 1])  # weights are normalised: 0.75 / 0.25
    assert torch.allclose(mixed, 0.75 * T.adain(content, a) + 0.25 * T.adain(content, b), atol=1e-12)
    # channel means of the mix are the weighted mean of the two styles' means
    assert torch.allclose(mixed.mean((2, 3)), 0.75 * a.mean((2, 3)) + 0.25 * b.mean((2, 3)), atol=1e-9)
    with pytest.raises(ValueError, match="one weight per style"):
        T.adain_interpolate(content, [a, b], [1.0])


def test_alpha_interpolates_between_content_and_stylised_features():
    content, style = correlated(8, 12, 12, 7), correlated(8, 12, 12, 8, shift=2)
    full = T.wct(content, style, alpha=1.0)
    assert torch.equal(T.wct(content, style, alpha=0.0), content)  # alpha = 0 returns the content features
    assert torch.allclose(T.wct(content, style, alpha=0.3), 0.3 * full + 0.7 * content, atol=1e-12)
    assert torch.allclose(T.blend(T.adain(content, style), content, 0.0), content)
    with pytest.raises(ValueError, match="alpha"):
        T.blend(full, content, 1.5)


# -- WCT --------------------------------------------------------------------------------------------------------------
def test_whitened_features_have_identity_covariance():
    feat = correlated(32, 48, 48, 9).reshape(32, -1)
    white = T.whiten(feat)
    # tolerance 1e-8: float64 eigendecomposition of a condition-number-1e8 covariance
    assert torch.allclose(torch.cov(white), torch.eye(32, dtype=torch.float64), atol=1e-8)
    assert float(white.mean(1).abs().max()) < 1e-10


def test_coloured_features_have_the_style_mean_and_covariance():
    content, style = correlated(32, 40, 40, 10).float(), correlated(32, 30, 50, 11, scale=2, shift=1).float()
    out = T.wct(content, style)
    assert out.dtype == torch.float32 and out.shape == content.shape
    o_mean, o_cov = stats(out)
    s_mean, s_cov = stats(style)
    # tolerance 1e-4 relative (Frobenius): float32 inputs/outputs around a float64 transform
    assert rel(o_cov, s_cov) < 1e-4
    assert rel(o_mean, s_mean) < 1e-5


def test_wct_matches_an_independent_sqrtm_implementation():
    content, style = correlated(12, 16, 16, 12), correlated(12, 20, 10, 13)
    c = content[0].reshape(12, -1).numpy()
    s = style[0].reshape(12, -1).numpy()
    cc, sc = c - c.mean(1, keepdims=True), s - s.mean(1, keepdims=True)
    c_cov, s_cov = cc @ cc.T / (cc.shape[1] - 1), sc @ sc.T / (sc.shape[1] - 1)
    ref = np.real(scipy.linalg.sqrtm(s_cov)) @ np.linalg.inv(np.real(scipy.linalg.sqrtm(c_cov))) @ cc + s.mean(
        1, keepdims=True
    )
    assert np.allclose(T.wct(content, style)[0].reshape(12, -1).numpy(), ref, rtol=1e-6, atol=1e-6)


def test_eigenvalue_floor_handles_rank_deficient_features():
    gen = torch.Generator().manual_seed(14)
    low_rank = torch.randn(16, 6, generator=gen, dtype=torch.float64) @ torch.randn(
        6, 900, generator=gen, dtype=torch.float64
    )
    white = T.whiten(low_rank)
    assert torch.isfinite(white).all()
    evals = torch.linalg.eigvalsh(torch.cov(white))
    # whitening acts on the 6-dimensional span: covariance is a projector (eigenvalues 0 x10 and 1 x6)
    assert torch.allclose(evals[:10], torch.zeros(10, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(evals[10:], torch.ones(6, dtype=torch.float64), atol=1e-8)
    out = T.wct(low_rank.reshape(1, 16, 30, 30), correlated(16, 30, 30, 15))
    assert torch.isfinite(out).all()


def test_masked_wct_keeps_statistics_per_segment():
    c_feat = torch.cat([correlated(8, 20, 10, 16), correlated(8, 20, 10, 17, scale=5, shift=9)], dim=3)
    s_feat = torch.cat([correlated(8, 16, 12, 18, shift=-4), correlated(8, 16, 12, 19, scale=0.2, shift=6)], dim=3)
    c_lab = torch.zeros(20, 20, dtype=torch.long)
    c_lab[:, 10:] = 1
    s_lab = torch.zeros(16, 24, dtype=torch.long)
    s_lab[:, 12:] = 1
    out = T.wct_masked(c_feat, s_feat, c_lab, s_lab)
    flat_o, flat_s = out.reshape(8, -1), s_feat.reshape(8, -1)
    for label in (0, 1):
        o_seg = flat_o[:, (c_lab.reshape(-1) == label)]
        s_seg = flat_s[:, (s_lab.reshape(-1) == label)]
        assert rel(torch.cov(o_seg), torch.cov(s_seg)) < 1e-8, f"segment {label} covariance"
        assert rel(o_seg.mean(1), s_seg.mean(1)) < 1e-8, f"segment {label} mean"


def test_masked_wct_falls_back_to_global_for_labels_missing_in_style():
    c_feat, s_feat = correlated(8, 12, 12, 20), correlated(8, 12, 12, 21)
    c_lab = torch.zeros(12, 12, dtype=torch.long)
    c_lab[6:] = 7  # label 7 does not occur in the style
    s_lab = torch.zeros(12, 12, dtype=torch.long)
    out = T.wct_masked(c_feat, s_feat, c_lab, s_lab)
    global_out = T.wct(c_feat, s_feat)
    missing = c_lab.reshape(-1) == 7
    assert torch.allclose(out.reshape(8, -1)[:, missing], global_out.reshape(8, -1)[:, missing])
    assert not torch.allclose(out.reshape(8, -1)[:, ~missing], global_out.reshape(8, -1)[:, ~missing])


def test_masked_wct_resizes_image_resolution_label_maps():
    c_feat, s_feat = correlated(4, 8, 8, 22), correlated(4, 8, 8, 23)
    big = torch.zeros(32, 32, dtype=torch.long)
    big[:, 16:] = 1
    small = T.resize_labels(big, (8, 8))
    assert small[:, :4].eq(0).all() and small[:, 4:].eq(1).all()
    assert torch.allclose(T.wct_masked(c_feat, s_feat, big, big), T.wct_masked(c_feat, s_feat, small, small))


def test_match_colour_gives_target_rgb_mean_and_covariance():
    gen = torch.Generator().manual_seed(24)
    src = (0.5 + 0.08 * torch.randn(1, 3, 40, 40, generator=gen)).clamp(0, 1)
    mix = torch.tensor([[1.0, 0.4, 0.0], [0.2, 1.0, 0.1], [0.0, 0.3, 0.6]])
    tgt = (0.45 + 0.06 * torch.einsum("ij,bjhw->bihw", mix, torch.randn(1, 3, 40, 40, generator=gen))).clamp(0, 1)
    out = T.match_colour(src, tgt)
    o_mean, o_cov = stats(out)
    t_mean, t_cov = stats(tgt)
    # tolerance 1e-2: the eps=1e-5 regulariser is ~0.5% of these variances (~2e-3)
    assert rel(o_mean, t_mean) < 1e-5 and rel(o_cov, t_cov) < 1e-2
    assert rel(stats(src)[1], t_cov) > 0.3  # and the source's colours were really different


# -- Reinhard colour spaces -------------------------------------------------------------------------------------------
def test_cielab_matches_scikit_image_both_ways():
    rgb = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(25), dtype=torch.float64)
    ref = color.rgb2lab(rgb[0].permute(1, 2, 0).numpy())
    assert np.abs(rgb_to_lab(rgb)[0].permute(1, 2, 0).numpy() - ref).max() < 1e-9
    lab = ref.copy()
    lab[..., 1:] *= 1.4  # push some colours out of gamut: both must clip the same way
    back = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(back - color.lab2rgb(lab)).max() < 1e-9


def test_lalphabeta_round_trip_and_decorrelation_matrix():
    rgb = 0.05 + 0.9 * torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(26), dtype=torch.float64)
    assert float((lalphabeta_to_rgb(rgb_to_lalphabeta(rgb)) - rgb).abs().max()) < 1e-12
    grey = torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64)
    lab = rgb_to_lalphabeta(grey)[0, :, 0, 0]
    # paper Eq. 4: for a neutral colour (L = M = S up to the matrix rows' sums) alpha and beta are near zero
    assert abs(float(lab[1])) < 0.02 and abs(float(lab[2])) < 0.02


@pytest.mark.parametrize("space", ["lab", "lalphabeta"])
def test_reinhard_output_has_style_channel_statistics(space):
    gen = torch.Generator().manual_seed(27)
    content = (0.5 + 0.1 * torch.randn(1, 3, 32, 32, generator=gen)).clamp(0.05, 0.95).double()
    style = torch.tensor([0.55, 0.45, 0.4]).view(1, 3, 1, 1) + 0.05 * torch.randn(1, 3, 32, 32, generator=gen)
    style = style.clamp(0.05, 0.95).double()
    forward = rgb_to_lab if space == "lab" else rgb_to_lalphabeta
    out = forward(reinhard_transfer(content, style, space))
    ref = forward(style)
    # in-gamut images, so no clipping: statistics match to float64 precision (eps=1e-6 on the std ratio)
    assert torch.allclose(out.mean((2, 3)), ref.mean((2, 3)), atol=1e-6)
    assert torch.allclose(out.std((2, 3)), ref.std((2, 3)), rtol=1e-4, atol=1e-6)


def test_chunked_covariance_equals_the_one_shot_result(monkeypatch):
    """Large feature maps are reduced in column chunks; the chunking must not change the statistics."""
    feat = correlated(8, 30, 37, 28).float().reshape(8, -1)
    whole_mean, whole_cov = T.covariance(feat)
    monkeypatch.setattr(T, "_CHUNK_ELEMENTS", 8 * 101)  # 101 columns per chunk, last chunk partial
    mean, cov = T.covariance(feat)
    assert torch.allclose(mean, whole_mean, rtol=1e-12) and torch.allclose(cov, whole_cov, rtol=1e-10)
    assert torch.allclose(cov, torch.cov(feat.double()), rtol=1e-10)
    assert mean.dtype == cov.dtype == torch.float64


# -- statistics over the valid region only (issue 13) ----------------------------------------------------------
def _padded_maps(seed: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 6, 12, 17, generator=g) * torch.linspace(0.5, 2, 6)[None, :, None, None] + 1, (9, 13)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_padded_positions_enter_no_statistic(layout):
    content, valid = _padded_maps()
    style = torch.randn(1, 6, 10, 11, generator=torch.Generator().manual_seed(1)) * 3 - 2
    garbage = content.clone()
    garbage[..., valid[0] :, :] = 1e4  # what padding may hold: anything
    garbage[..., :, valid[1] :] = -1e4
    for fn in (lambda c: T.adain(c, style, valid=valid), lambda c: T.wct(c, style, valid=valid)):
        a = fn(content.contiguous(memory_format=layout))[..., : valid[0], : valid[1]]
        b = fn(garbage.contiguous(memory_format=layout))[..., : valid[0], : valid[1]]
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    # and the statistics are the ones of the valid crop alone
    crop = content[..., : valid[0], : valid[1]]
    torch.testing.assert_close(
        T.adain(garbage, style, valid=valid)[..., : valid[0], : valid[1]], T.adain(crop, style), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        T.wct(garbage, style, valid=valid)[..., : valid[0], : valid[1]], T.wct(crop, style), atol=1e-4, rtol=1e-4
    )


def test_unpadded_maps_are_unchanged_by_the_valid_region_and_the_layout():
    content, _ = _padded_maps()
    style = torch.randn(1, 6, 10, 11, generator=torch.Generator().manual_seed(2))
    full = tuple(content.shape[-2:])
    assert torch.equal(T.adain(content, style, valid=full), T.adain(content, style))
    assert torch.equal(T.wct(content, style, valid=full), T.wct(content, style))
    last = T.wct(content.contiguous(memory_format=torch.channels_last), style)
    assert last.is_contiguous(memory_format=torch.channels_last)  # the result keeps the input's layout
    torch.testing.assert_close(last, T.wct(content, style), atol=1e-5, rtol=1e-5)


def test_adapters_take_statistics_over_the_image_not_the_padding(monkeypatch):
    """AdaIN on a 250x356 content (padded to 256x360): filling the padding with anything leaves the pixels far from
    the border untouched, which only holds if no padded position enters the statistics (with them, every pixel moves).
    Synthetic shape-exact cd16x weights: the property is the adapter's, not the weights'."""
    from evalkit_methods import _vgg_autoencoders as AE
    from evalkit_methods.adain import AdaIN

    adapter = AdaIN("cd16x", "cpu")
    adapter.encoder = AE.build_encoder("cd16x", 4)
    adapter.decoder = AE.build_decoder("cd16x", 4)
    for net, seed in ((adapter.encoder, 0), (adapter.decoder, 1)):
        net.load_state_dict(AE.synthetic_state(net, seed))
    g = torch.Generator().manual_seed(3)
    content, style = torch.rand(1, 3, 250, 356, generator=g), torch.rand(1, 3, 200, 210, generator=g)
    real_pad = AE.pad_to_multiple
    outs = []
    for fill in (None, 1.0):

        def pad(x, multiple, fill=fill):
            padded = real_pad(x, multiple)
            if fill is not None and padded.shape != x.shape:
                padded = padded.clone()
                padded[..., x.shape[-2] :, :] = fill
                padded[..., :, x.shape[-1] :] = fill
            return padded

        monkeypatch.setattr(AE, "pad_to_multiple", pad)
        with torch.no_grad():
            outs.append(adapter.stylize(content, style, **AdaIN.resolve_params({})))
    interior = (slice(None), slice(None), slice(0, 200), slice(0, 300))  # >= 50 px from the padded edges
    torch.testing.assert_close(outs[0][interior], outs[1][interior], atol=1e-5, rtol=0)
    assert not torch.allclose(outs[0], outs[1])  # the padding did reach the border pixels: the test has teeth


# -- colour preservation ----------------------------------------------------------------------------------------
def _coral_numpy(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """naoto0804/pytorch-AdaIN ``coral`` written out independently in numpy (float64)."""

    def norm(x):
        f = x.reshape(3, -1)
        mean, std = f.mean(1, keepdims=True), f.std(1, ddof=1, keepdims=True)
        return (f - mean) / std, mean, std

    def sqrtm(m):
        u, d, vt = np.linalg.svd(m)
        return u @ np.diag(np.sqrt(d)) @ vt

    s, _, _ = norm(source)
    t, t_mean, t_std = norm(target)
    moved = sqrtm(t @ t.T + np.eye(3)) @ np.linalg.inv(sqrtm(s @ s.T + np.eye(3))) @ s
    return (moved * t_std + t_mean).reshape(source.shape)


def test_coral_is_the_reference_codes_and_differs_from_covariance_matching():
    g = torch.Generator().manual_seed(4)
    style = torch.rand(1, 3, 40, 50, generator=g) ** 2
    content = torch.rand(1, 3, 30, 20, generator=g) * 0.5 + 0.3
    ours = T.coral(style, content)
    expected = _coral_numpy(style[0].double().numpy(), content[0].double().numpy())
    np.testing.assert_allclose(ours[0].double().numpy(), expected, atol=1e-6)
    # with different pixel counts the sum-based matrices do not give the target's covariance exactly
    matched = T.match_colour(style, content)
    assert float((ours - matched).abs().max()) > 1e-3
    assert T.colour_mode(True) == "coral" and T.colour_mode("false") == "none"
    with pytest.raises(ValueError, match="preserve_color"):
        T.colour_mode("sepia")
