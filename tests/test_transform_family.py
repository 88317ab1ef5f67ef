"""Issue 15: the transformation families (EFDM, style swap, CMD), MicroAST, and the Gatys layer ablations.

Each method is tested on its defining property against an independent computation: EFDM's output channels have
exactly the style's sorted values; every patch of a style-swapped map is a style patch, and the chunked swap equals
the paper's one-hot convolution / transposed-convolution formulation; CMD's moments equal scipy's and its objective
falls under optimisation; MicroAST loads the official layout strictly and counts as its paper does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evalkit_methods import _transforms as T

from evalkit.assets import AssetStore
from evalkit.checkpoints import CheckpointError
from evalkit.registry import get_method
from tests.conftest import needs_weights


def _loaded(name: str, weight_set: str):
    cls = get_method(name)
    adapter = cls(weight_set, "cpu")
    adapter.load(cls.weight_sets[weight_set].resolve(AssetStore.from_env()))
    return cls, adapter


# -- the registry ----------------------------------------------------------------------------------------------------
def test_every_family_of_the_slide_is_a_registered_transform():
    assert {"adain", "wct", "efdm", "styleswap"} <= set(T.FEATURE_TRANSFORMS)
    with pytest.raises(ValueError, match="unknown feature transform 'gram'.*registered are adain"):
        T.feature_transform("gram")
    with pytest.raises(ValueError, match="registered twice"):
        T.register_transform("efdm")(T.efdm)


# -- EFDM ------------------------------------------------------------------------------------------------------------
def test_efdm_gives_each_channel_exactly_the_styles_sorted_values():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(1, 8, 12, 10, generator=g)
    style = torch.randn(1, 8, 15, 8, generator=g).exp()  # a different distribution, same count (120)
    out = T.efdm(content, style)
    assert torch.equal(out.flatten(2).sort(dim=2).values, style.flatten(2).sort(dim=2).values)
    # ranks preserved: the output is a monotone function of the content within each channel
    c_rank = content.flatten(2).argsort(2).argsort(2)
    o_rank = out.flatten(2).argsort(2).argsort(2)
    assert torch.equal(c_rank, o_rank)


def test_efdm_matches_an_independent_numpy_quantile_mapping_and_ignores_the_padding():
    g = torch.Generator().manual_seed(1)
    content = torch.randn(1, 4, 9, 11, generator=g)
    style = torch.randn(1, 4, 20, 7, generator=g) * 3 + 1  # 140 values vs 80 valid content positions
    valid = (8, 10)
    out = T.efdm(content, style, valid=valid)
    region = content[0, :, :8, :10].reshape(4, -1).double().numpy()
    s_sorted = np.sort(style[0].reshape(4, -1).double().numpy(), axis=1)
    n, m = region.shape[1], s_sorted.shape[1]
    for ch in range(4):
        quantiles = np.interp((np.arange(n) + 0.5) * m / n - 0.5, np.arange(m), s_sorted[ch])
        expected = np.empty(n)
        expected[np.argsort(region[ch], kind="stable")] = quantiles
        np.testing.assert_allclose(out[0, ch, :8, :10].reshape(-1).numpy(), expected, rtol=1e-6, atol=1e-6)
    # the padded row/column never entered the ranks: changing them changes nothing inside the valid region
    changed = content.clone()
    changed[..., 8:, :] = 100.0
    changed[..., :, 10:] = -100.0
    assert torch.equal(T.efdm(changed, style, valid=valid)[..., :8, :10], out[..., :8, :10])


# -- style swap ------------------------------------------------------------------------------------------------------
def _paper_style_swap(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Chen & Schmidt's formulation, literally: conv with normalised patches, one-hot argmax map, transposed conv
    with the raw patches, divided by the transposed conv of ones (small inputs only)."""
    patches = F.unfold(style, 3)[0].T.reshape(-1, style.shape[1], 3, 3)
    normed = patches / patches.flatten(1).norm(dim=1)[:, None, None, None]
    scores = F.conv2d(content, normed)
    onehot = F.one_hot(scores.argmax(dim=1), patches.shape[0]).permute(0, 3, 1, 2).to(content.dtype)
    summed = F.conv_transpose2d(onehot, patches)
    counts = F.conv_transpose2d(onehot, torch.ones_like(patches))
    return summed / counts


def test_style_swap_equals_the_papers_convolution_formulation_in_small_chunks(monkeypatch):
    g = torch.Generator().manual_seed(2)
    content = torch.randn(1, 6, 11, 9, generator=g)
    style = torch.randn(1, 6, 8, 10, generator=g)
    expected = _paper_style_swap(content, style)
    monkeypatch.setattr(T, "_SWAP_ELEMENTS", 7 * 9)  # 1 patch per chunk: the running argmax must agree
    torch.testing.assert_close(T.style_swap(content, style), expected, rtol=1e-5, atol=1e-6)


def test_every_patch_of_a_swapped_map_is_a_style_patch():
    """Content that is a crop of the style: each content patch's best match is itself, so the swapped map equals the
    crop and every 3x3 patch of it occurs in the style."""
    g = torch.Generator().manual_seed(3)
    style = torch.rand(1, 5, 14, 16, generator=g)
    content = style[..., 3:12, 2:13].clone()
    out = T.style_swap(content, style)
    torch.testing.assert_close(out, content, rtol=0, atol=1e-6)
    style_patches = F.unfold(style, 3)[0].T  # (K, C*9)
    out_patches = F.unfold(out, 3)[0].T
    nearest = torch.cdist(out_patches, style_patches, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert float(nearest.max()) < 1e-5
    # and the swap of a map with itself is the identity
    torch.testing.assert_close(T.style_swap(style, style), style, rtol=0, atol=1e-6)


def test_style_swap_leaves_the_padding_alone_and_rejects_tiny_maps():
    g = torch.Generator().manual_seed(4)
    content, style = torch.randn(1, 3, 10, 10, generator=g), torch.randn(1, 3, 9, 9, generator=g)
    out = T.style_swap(content, style, valid=(8, 7))
    assert torch.equal(out[..., 8:, :], content[..., 8:, :]) and torch.equal(out[..., :, 7:], content[..., :, 7:])
    torch.testing.assert_close(out[..., :8, :7], _paper_style_swap(content[..., :8, :7], style))
    with pytest.raises(ValueError, match="at least 3x3"):
        T.style_swap(content, style[..., :2, :])


# -- the multi-level autoencoder methods -----------------------------------------------------------------------------
def test_levels_parameter_is_validated_against_the_weight_set():
    from evalkit_methods._multilevel import parse_levels

    assert parse_levels("3, 5") == "5,3" and parse_levels("all") == "all"
    for bad in ("6", "3,3", "x"):
        with pytest.raises(ValueError, match="levels"):
            parse_levels(bad)
    cls = get_method("efdm")
    assert list(cls.weight_sets) == ["official", "official-l3", "cd16x"]
    assert list(get_method("styleswap").weight_sets) == ["official", "cd16x"]  # relu3_1 only


@needs_weights
@pytest.mark.mirror
def test_efdm_and_styleswap_run_in_the_wct_autoencoders_on_real_weights():
    g = torch.Generator().manual_seed(5)
    content, style = torch.rand(1, 3, 70, 90, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    cls, efdm = _loaded("efdm", "official-l3")
    with torch.no_grad():
        out = efdm.stylize(content, style, **cls.resolve_params({"levels": "3"}))
        with pytest.raises(ValueError, match="has no relu5_1 autoencoder"):
            efdm.stylize(content, style, **cls.resolve_params({"levels": "5"}))
        swap_cls, swap = _loaded("styleswap", "official")
        swapped = swap.stylize(content, style, **swap_cls.resolve_params({}))
        identity = swap.stylize(content, style, **swap_cls.resolve_params({"alpha": 0.0}))
    assert out.shape == swapped.shape == content.shape
    assert swap.levels == [3] and swap.info().parameters > 0
    # alpha = 0 decodes the content's own relu3_1 features: a reconstruction, far closer to the content
    assert float((identity - content).abs().mean()) < float((swapped - content).abs().mean())


# -- CMD -------------------------------------------------------------------------------------------------------------
def test_cmd_moments_equal_scipys_central_moments():
    from evalkit_methods.cmd import central_moments, cmd
    from scipy import stats

    g = torch.Generator().manual_seed(6)
    feat = torch.rand(1, 3, 7, 5, generator=g, dtype=torch.float64)
    moments = central_moments(feat, 5)
    flat = feat[0].reshape(3, -1).numpy()
    np.testing.assert_allclose(moments[0].numpy(), flat.mean(axis=1))
    for k in range(2, 6):
        np.testing.assert_allclose(moments[k - 1].numpy(), stats.moment(flat, moment=k, axis=1), rtol=1e-10)
    other = central_moments(feat.flip(-1), 5)  # same values, other order: same distribution
    assert float(cmd(moments, other)) < 1e-12
    assert float(cmd(moments, central_moments(feat**2, 5))) > 0.01


@needs_weights
@pytest.mark.mirror
def test_cmd_optimisation_lowers_the_moment_discrepancy():
    cls, adapter = _loaded("cmd", "imagenet")
    g = torch.Generator().manual_seed(7)
    content, style = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g) ** 3
    params = cls.resolve_params({"iterations": 15})
    target, moments = adapter.targets(content, style, params["order"])
    with torch.no_grad():
        before = adapter.losses(content, target, moments, params["order"])[1]
    out = adapter.stylize(content, style, **params)
    with torch.no_grad():
        after = adapter.losses(out, target, moments, params["order"])[1]
    assert float(after) < 0.5 * float(before)  # measured: 0.448 -> 0.039 in 20 steps


# -- Gatys ablations -------------------------------------------------------------------------------------------------
def test_gatys_layers_are_validated_with_one_line_errors():
    cls = get_method("gatys")
    assert cls.resolve_params({"style_layers": "relu3_1, relu1_1"})["style_layers"] == "relu1_1,relu3_1"
    assert cls.resolve_params({"content_layer": "CONV2_2"})["content_layer"] == "conv2_2"
    with pytest.raises(ValueError, match="parameter 'content_layer'.*unknown VGG-19 layer 'conv6_1'"):
        cls.resolve_params({"content_layer": "conv6_1"})
    with pytest.raises(ValueError, match="parameter 'style_layers'.*distinct"):
        cls.resolve_params({"style_layers": "relu1_1,relu1_1"})


@needs_weights
def test_gatys_objective_reads_the_chosen_layers():
    """The objective with ``content_layer=conv2_2`` and one style layer equals the formula on those features."""
    from evalkit.metrics.features import gram

    cls, adapter = _loaded("gatys", "imagenet")
    g = torch.Generator().manual_seed(8)
    content, style, x = (torch.rand(1, 3, 48, 48, generator=g) for _ in range(3))
    with torch.no_grad():
        feats = adapter.vgg(x, ["conv2_2", "relu2_1"], pooling="avg")
        c_target = adapter.vgg(content, ["conv2_2"], pooling="avg")["conv2_2"]
        s_gram = gram(adapter.vgg(style, ["relu2_1"], pooling="avg")["relu2_1"]).float()
        c, s = adapter._losses(x, c_target, {"relu2_1": s_gram}, "avg", "conv2_2")
        f = feats["relu2_1"][0].reshape(128, -1).double()
        expected_style = ((f @ f.T / f.shape[1] - s_gram.double()) ** 2).sum() / (4 * 128**2)
    torch.testing.assert_close(c.double(), 0.5 * ((feats["conv2_2"] - c_target) ** 2).sum().double(), rtol=1e-5, atol=0)
    torch.testing.assert_close(s.double(), expected_style, rtol=1e-4, atol=0)


# -- MicroAST --------------------------------------------------------------------------------------------------------
def _microast_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    from evalkit_methods.microast import Decoder, Encoder, Modulator

    return {
        "content_encoder": {k: tuple(v.shape) for k, v in Encoder().state_dict().items()},
        "modulator": {k: tuple(v.shape) for k, v in Modulator().state_dict().items()},
        "decoder": {k: tuple(v.shape) for k, v in Decoder().state_dict().items()},
    }


def test_microast_layout_is_the_official_one():
    """Key names and shapes of net_microAST.py (EndyWon/MicroAST @ 5a6c905), as SOURCES.md describes the files."""
    layout = _microast_layout()
    assert layout["content_encoder"]["enc1.0.conv_layer.weight"] == (16, 3, 9, 9)
    assert layout["content_encoder"]["enc1.2.conv_layer.weight"] == (32, 1, 3, 3)  # grouped 16 -> 32
    assert layout["modulator"]["weight1.0.conv_layer.weight"] == (64, 1, 3, 3)
    assert layout["decoder"]["dec1.conv1.conv_layer.weight"] == (64, 64, 3, 3)
    assert layout["decoder"]["dec3.1.conv_layer.weight"] == (32, 2, 3, 3)  # grouped 64 -> 32 after the upsampling
    counts = {role: sum(int(np.prod(s)) for s in shapes.values()) for role, shapes in layout.items()}
    assert counts == {"content_encoder": 157_792, "modulator": 2_560, "decoder": 153_843}
    assert [len(v) for v in layout.values()] == [18, 8, 18]


def _synthetic_microast(tmp_path, broken: str | None = None):
    from evalkit_methods.microast import FILES, Decoder, Encoder, Modulator

    torch.manual_seed(0)
    modules = {"content_encoder": Encoder(), "style_encoder": Encoder(), "modulator": Modulator(), "decoder": Decoder()}
    files = {}
    for role, module in modules.items():
        state = module.state_dict()
        if role == broken:
            state["dec3.10.conv_layer.weight"] = state.pop("dec3.10.conv_layer.weight")[:, :8]
        files[role] = tmp_path / FILES[role][0]
        torch.save(state, files[role])
    return files


def test_microast_loads_a_synthetic_official_layout_and_rejects_a_wrong_shape(tmp_path):
    cls = get_method("microast")
    adapter = cls("official", "cpu")
    adapter.load(_synthetic_microast(tmp_path))
    info = adapter.info()
    assert info.parameters == 471_987 and info.extra["style_encoder_parameters"] == 157_792
    assert info.layers == 9 + 9 + 4 + 9 + 2  # weight layers of the four parts + the decoder's two upsamplings
    with torch.no_grad():
        out = adapter.stylize(torch.rand(1, 3, 37, 50), torch.rand(1, 3, 29, 31), **cls.resolve_params({}))
    assert out.shape == (1, 3, 37, 50)  # any size: the stride-4 maps round up, the output is cropped
    broken = tmp_path / "broken"
    broken.mkdir()
    files = _synthetic_microast(broken, "decoder")
    with pytest.raises(CheckpointError, match=r"decoder_iter_160000.pth.tar key 'dec3.10.conv_layer.weight' has shape"):
        cls("official", "cpu").load(files)
