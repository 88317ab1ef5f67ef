"""Content and style losses against an independent computation of the paper's formulas."""

from __future__ import annotations

import numpy as np
import torch

from evalkit.assets import AssetStore
from evalkit.metrics.features import STYLE_LAYERS, FeatureProvider, gram
from evalkit.metrics.losses import content_loss, style_loss


def _paper_style_loss(out_feats: dict, style_feats: dict) -> float:
    """Gatys 2016 eq. 4-5 verbatim in numpy: unnormalised Grams, E_l = 1/(4 N^2 M^2) sum (G - A)^2, w_l = 1/5."""
    total = 0.0
    for layer in STYLE_LAYERS:
        f = out_feats[layer][0].double().numpy().reshape(out_feats[layer].shape[1], -1)
        s = style_feats[layer][0].double().numpy().reshape(style_feats[layer].shape[1], -1)
        n, m = f.shape
        g = np.einsum("ik,jk->ij", f, f)
        a = np.einsum("ik,jk->ij", s, s)
        total += 0.2 * np.sum((g - a) ** 2) / (4.0 * n**2 * m**2)
    return total


def test_losses_match_the_paper_formulas_on_real_vgg_features():
    gen = torch.Generator().manual_seed(0)
    out, content, style = (torch.rand(1, 3, 64, 80, generator=gen) for _ in range(3))  # equal sizes: M_out = M_style
    feats = FeatureProvider("cpu", AssetStore.from_env())
    layers = ("conv4_2", *STYLE_LAYERS)
    fo, fc, fs = (feats.vgg(x, layers) for x in (out, content, style))  # raw activations, outside the cache
    expected_content = 0.5 * np.sum((fo["conv4_2"].double().numpy() - fc["conv4_2"].double().numpy()) ** 2)
    assert np.isclose(content_loss(fo["conv4_2"], fc["conv4_2"]), expected_content, rtol=1e-9)
    assert np.isclose(style_loss(feats.grams("o", out), feats.grams("s", style)), _paper_style_loss(fo, fs), rtol=1e-6)


def test_style_loss_is_zero_for_identical_images_and_size_invariant_for_tiled_textures():
    gen = torch.Generator().manual_seed(1)
    tile = torch.rand(1, 3, 32, 32, generator=gen)
    feats = FeatureProvider("cpu", AssetStore.from_env())
    assert style_loss(feats.grams("t", tile), feats.grams("t2", tile.clone())) == 0.0
    # Normalising by M makes the Gram of a periodic texture (nearly) independent of how many periods are shown.
    big = tile.repeat(1, 1, 8, 8)
    small = tile.repeat(1, 1, 4, 4)
    g_big, g_small = feats.grams("big", big), feats.grams("small", small)
    for layer in STYLE_LAYERS[:3]:
        rel = float((g_big[layer] - g_small[layer]).norm() / g_big[layer].norm())
        assert rel < 0.1, (layer, rel)  # unnormalised Grams would differ by 4x (rel 0.75)


def test_gram_is_normalised_by_positions():
    f = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    flat = f.reshape(2, 12).double()
    torch.testing.assert_close(gram(f), flat @ flat.T / 12)


def test_features_are_computed_once_per_image():
    feats = FeatureProvider("cpu", AssetStore.from_env())
    img = torch.rand(1, 3, 32, 32)
    feats.grams("style", img)
    feats.features("style", img)
    feats.grams("style", img)
    assert feats.vgg_passes == 1
