"""StyleID (methods/styleid.py): each piece against its formula on random tensors, then the adapter end to end on tiny
randomly initialised diffusers components saved to a folder (no download; the real SD weights are not used here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from evalkit_methods import _styleid_attention as S  # noqa: E402
from evalkit_methods.styleid import HubWeightSet, StyleID, UnsupportedSize, parse_layers  # noqa: E402

from evalkit.assets import AssetStore  # noqa: E402
from evalkit.errors import EvalkitError, WeightsUnavailable  # noqa: E402
from tests.diffusion_support import TINY_LAYERS, build_tiny_sd  # noqa: E402

FAST: dict[str, Any] = {"layers": TINY_LAYERS, "ddim_steps": 3}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the formulas ---------------------------------------------------------------------------------------------------
def test_query_blend_is_the_convex_combination() -> None:
    qc, q = torch.randn(1, 2, 5, 4, generator=_gen(1)), torch.randn(1, 2, 5, 4, generator=_gen(2))
    torch.testing.assert_close(S.blend_queries(qc, q, 0.75), 0.75 * qc + 0.25 * q)
    torch.testing.assert_close(S.blend_queries(qc, q, 1.0), qc)
    torch.testing.assert_close(S.blend_queries(qc, q, 0.0), q)


@pytest.mark.parametrize("temperature", [1.0, 1.5, 4.0])
def test_scaled_attention_is_softmax_of_tempered_logits(temperature: float) -> None:
    g = _gen(3)
    q, k, v = (
        torch.randn(2, 3, 7, 8, generator=g),
        torch.randn(2, 3, 11, 8, generator=g),
        torch.randn(2, 3, 11, 8, generator=g),
    )
    d = q.shape[-1]
    explicit = torch.softmax(temperature * (q @ k.transpose(-1, -2)) / d**0.5, dim=-1) @ v
    torch.testing.assert_close(S.scaled_attention(q, k, v, temperature), explicit, rtol=1e-5, atol=1e-5)


def test_latent_adain_matches_the_mean_std_formula() -> None:
    c, s = torch.randn(1, 4, 6, 5, generator=_gen(4)) * 3 + 1, torch.randn(1, 4, 9, 7, generator=_gen(5)) * 0.5 - 2
    out = S.latent_adain(c, s)
    for ch in range(4):
        cf, sf = c[0, ch].flatten(), s[0, ch].flatten()
        c_std = ((cf - cf.mean()) ** 2).sum().div(cf.numel() - 1).sqrt()
        s_std = ((sf - sf.mean()) ** 2).sum().div(sf.numel() - 1).sqrt()
        expected = (c[0, ch] - cf.mean()) / (c_std + 1e-4) * s_std + sf.mean()
        torch.testing.assert_close(out[0, ch], expected, rtol=1e-5, atol=1e-5)
    # the result carries the style latent's channel statistics (up to the eps on the content's std)
    torch.testing.assert_close(out.mean(dim=(2, 3)), s.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.std(dim=(2, 3)), s.std(dim=(2, 3)), rtol=1e-3, atol=1e-3)


def _tiny_scheduler(steps: int = 5):
    from diffusers import DDIMScheduler

    sch: Any = DDIMScheduler(  # Any: diffusers' lazy modules hide their types from mypy
        num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    sch.set_timesteps(steps)
    return sch


def test_inversion_step_is_the_closed_form_ddim_update() -> None:
    x, eps = torch.randn(1, 4, 3, 3, generator=_gen(6)), torch.randn(1, 4, 3, 3, generator=_gen(7))
    a, a_next = 0.9, 0.6
    x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
    torch.testing.assert_close(S.ddim_inversion_step(x, eps, a, a_next), a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps)
    # v-prediction: x0 = sqrt(a) x - sqrt(1-a) v, eps = sqrt(a) v + sqrt(1-a) x
    v = eps
    x0v, epsv = a**0.5 * x - (1 - a) ** 0.5 * v, a**0.5 * v + (1 - a) ** 0.5 * x
    expected = a_next**0.5 * x0v + (1 - a_next) ** 0.5 * epsv
    torch.testing.assert_close(S.ddim_inversion_step(x, v, a, a_next, "v_prediction"), expected)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_schedule_is_undone_by_the_scheduler_steps(prediction_type: str) -> None:
    """With a prediction that does not depend on the latent (eps fixed for epsilon; for v, the same x0/eps pair),
    DDIM generation exactly undoes the inversion: the two use the same alphas in reverse."""
    sch = _tiny_scheduler()
    sch.register_to_config(prediction_type=prediction_type)
    schedule = S.inversion_schedule(sch)
    assert [t for t, _, _ in schedule] == sorted(sch.timesteps.tolist())
    assert schedule[0][1] == sch.alphas_cumprod[0]  # set_alpha_to_one=False: the reference's max(0, t - stride)
    x0, eps = torch.randn(1, 4, 4, 4, generator=_gen(8)), torch.randn(1, 4, 4, 4, generator=_gen(9))

    def output(sample: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if prediction_type == "epsilon":
            return eps
        # v whose split at this alpha gives eps (x0 then follows from the sample)
        x0_here = (sample - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        return alpha.sqrt() * eps - (1 - alpha).sqrt() * x0_here

    latent = x0
    for _t, alpha, alpha_next in schedule:
        latent = S.ddim_inversion_step(latent, output(latent, alpha), alpha, alpha_next, prediction_type)
    for t in sch.timesteps.tolist():
        latent = sch.step(output(latent, sch.alphas_cumprod[t]), t, latent, eta=0.0).prev_sample
    torch.testing.assert_close(latent, x0, rtol=1e-4, atol=1e-4)


class _Attn(torch.nn.Module):
    """Just enough of a diffusers Attention for the processor: projections and the attributes it reads."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.inner = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_processor_off_matches_diffusers_and_inject_matches_the_formula() -> None:
    from diffusers.models.attention_processor import AttnProcessor

    torch.manual_seed(0)
    attn: Any = _Attn().inner
    x, xc, xs = (torch.randn(1, 6, 16, generator=_gen(i)) for i in (10, 11, 12))
    attn.set_processor(AttnProcessor())
    stock = attn(x)
    state = S.InjectionState(layers=frozenset({5}), gamma=0.75, temperature=1.5, timestep=41)
    attn.set_processor(S.StyleInjectionProcessor(5, state))
    torch.testing.assert_close(attn(x), stock, rtol=1e-5, atol=1e-5)  # off: stock attention

    state.mode, state.keep = "record", "q"
    plain = S.StyleInjectionProcessor(5, S.InjectionState())  # recording does not change the output
    torch.testing.assert_close(attn(xc), plain(attn, xc))
    state.keep = "kv"
    attn(xs)
    state.mode = "inject"
    got = attn(x)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 2, 8).transpose(1, 2)

    q = 0.75 * heads(attn.to_q(xc)) + 0.25 * heads(attn.to_q(x))
    k, v = heads(attn.to_k(xs)), heads(attn.to_v(xs))
    mix = torch.softmax(1.5 * q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v
    expected = attn.to_out[0](mix.transpose(1, 2).reshape(1, 6, 16))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    state.timestep = 1
    with pytest.raises(KeyError):  # nothing recorded at another timestep
        attn(x)


def test_parse_layers() -> None:
    assert parse_layers("11, 7,8,9,10") == "7,8,9,10,11"
    assert parse_layers([3, 2, 2]) == "2,3"
    for bad in ("", "a,b", "-1", "1.5"):
        with pytest.raises(ValueError):
            parse_layers(bad)


# -- tiny components ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def model(tiny_folder: Path) -> Iterator[StyleID]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored after the module: later runs keep their setting
    adapter = StyleID(weight_set="tiny", device="cpu")
    adapter.load({"pipeline": tiny_folder})
    yield adapter
    torch.set_num_threads(threads)


def _images(h: int = 18, w: int = 22) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(1, 3, h, w, generator=_gen(20)), torch.rand(1, 3, 24, 16, generator=_gen(21))


def test_tiny_end_to_end(model: StyleID) -> None:
    content, style = _images()
    out = model.stylize(content, style, seed=0, **FAST)
    assert out.shape == content.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert model.state.mode == "off" and not model.state.content_q and not model.state.style_kv  # nothing kept
    info = model.info()
    assert info.parameters == sum(info.extra.values()) and info.layers > 0


def test_seed_changes_nothing_and_parameters_do(model: StyleID) -> None:
    """StyleID draws nothing at random (eta=0 DDIM, the posterior's mode): the adapter says deterministic."""
    content, style = _images(16, 16)
    a = model.stylize(content, style, seed=0, **FAST)
    assert StyleID.deterministic
    torch.testing.assert_close(model.stylize(content, style, seed=0, **FAST), a, rtol=0, atol=0)
    torch.testing.assert_close(model.stylize(content, style, seed=123, **FAST), a, rtol=0, atol=0)
    assert not torch.equal(model.stylize(content, style, **{**FAST, "gamma": 0.0}), a)
    assert not torch.equal(model.stylize(content, style, **{**FAST, "init_adain": False}), a)


def test_injection_uses_the_style(model: StyleID) -> None:
    content, style = _images(16, 16)
    other = torch.rand(1, 3, 24, 16, generator=_gen(30))
    plain = {**FAST, "init_adain": False}  # without the latent AdaIN, only the injected keys/values see the style
    assert not torch.equal(model.stylize(content, style, **plain), model.stylize(content, other, **plain))
    with torch.no_grad():  # reference: no injection at all (content inverted and regenerated)
        model.scheduler.set_timesteps(3)
        model.state.layers = frozenset()
        alone = model.decode(model.generate(model.invert(model.encode(content))))
    assert not torch.allclose(model.stylize(content, style, **plain), alone, atol=1e-3)


def test_slots_follow_the_reference_numbering_on_an_sd_layout() -> None:
    """SD's up path: 4 blocks x 3 resnets = slots 0-11, the first block without attention (reference: 7-11 are the
    last two of the third block and all three of the fourth). Built with SD's block types, tiny channels."""
    from diffusers import UNet2DConditionModel
    from evalkit_methods.styleid import check_layers, up_path_slots

    unet: Any = UNet2DConditionModel(
        sample_size=8, layers_per_block=2, block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=8, attention_head_dim=4,
    )  # fmt: skip
    slots = up_path_slots(unet)
    assert len(slots) == 12 and [i for i, s in enumerate(slots) if s is None] == [0, 1, 2]
    assert slots[7] is unet.up_blocks[2].attentions[1].transformer_blocks[0].attn1
    assert slots[11] is unet.up_blocks[3].attentions[2].transformer_blocks[0].attn1
    assert check_layers("7,8,9,10,11", slots) == frozenset(range(7, 12))
    with pytest.raises(EvalkitError, match="valid: 3-11 of 12 slots"):
        check_layers("2,7", slots)


def test_inversion_then_generation_reconstructs_when_the_prediction_is_constant(tiny_folder: Path) -> None:
    """Injection off, no AdaIN: the adapter's inversion and generation loops are exact inverses whenever the UNet's
    prediction does not change between the two latents of a step; made so here by zeroing the tiny UNet's output
    conv weights (its bias stays: a constant, non-zero noise prediction). On the random UNet itself the round trip
    does *not* come back (measured: max error 14x the latent's scale at 10 steps), so nothing is asserted there."""
    adapter = StyleID(weight_set="tiny")
    adapter.load({"pipeline": tiny_folder})
    with torch.no_grad():
        adapter.unet.conv_out.weight.zero_()
        adapter.unet.conv_out.bias.normal_(generator=_gen(41))
        adapter.scheduler.set_timesteps(10)
        latent = adapter.encode(torch.rand(1, 3, 16, 16, generator=_gen(40)))
        inverted = adapter.invert(latent)
        back = adapter.generate(inverted)
    assert adapter.state.mode == "off"
    assert not torch.allclose(inverted, latent, atol=0.1)
    torch.testing.assert_close(back, latent, rtol=1e-4, atol=1e-4)


def test_layers_outside_the_unet_are_a_one_line_error(model: StyleID) -> None:
    content, style = _images(16, 16)
    for layers in ("7,8,9,10,11", "0,2", "4"):  # default (SD numbering) is beyond the tiny UNet; 0 has no attention
        with pytest.raises(EvalkitError) as err:
            model.stylize(content, style, layers=layers, ddim_steps=1)
        assert "\n" not in str(err.value) and "valid: 2-3" in str(err.value)
    with pytest.raises(ValueError, match="parameter 'temperature'"):
        model.stylize(content, style, temperature=0, **{k: v for k, v in FAST.items()})


def test_above_max_side_is_a_clear_refusal(model: StyleID) -> None:
    content, style = _images(40, 24)
    with pytest.raises(UnsupportedSize) as err:
        model.stylize(content, style, max_side=32, **FAST)
    assert isinstance(err.value, EvalkitError) and "\n" not in str(err.value)
    assert "40" in str(err.value) and "max_side=32" in str(err.value)
    # a style above the cap is only scaled down (it supplies keys/values), not refused
    out = model.stylize(content[..., :16, :16], torch.rand(1, 3, 64, 48, generator=_gen(50)), max_side=32, **FAST)
    assert out.shape[-2:] == (16, 16)


def test_missing_hub_model_is_unavailable_with_the_fix(tmp_path: Path) -> None:
    ws = HubWeightSet("sd21", model_id="stabilityai/stable-diffusion-2-1-base", cache_dir=str(tmp_path))
    store = AssetStore.from_env(home=str(tmp_path / "home"), allow_download=False)
    with pytest.raises(WeightsUnavailable) as err:
        ws.resolve(store)
    message = str(err.value)
    assert "\n" not in message and "stabilityai/stable-diffusion-2-1-base" in message
    assert "huggingface-cli download" in message
    assert ws.availability(store)[0] == "missing"
    with pytest.raises(WeightsUnavailable, match="not a complete diffusers model folder"):
        StyleID(weight_set="sd21").load({"pipeline": tmp_path})


def test_declared_weight_sets_and_params() -> None:
    assert StyleID.weight_sets["sd21"].model_id == "stabilityai/stable-diffusion-2-1-base"  # type: ignore[attr-defined]
    assert StyleID.weight_sets["sd14"].model_id == "CompVis/stable-diffusion-v1-4"  # type: ignore[attr-defined]
    assert list(StyleID.weight_sets) == ["sd21", "sd14"]
    defaults = StyleID.resolve_params(None)
    assert defaults == {
        "gamma": 0.75, "temperature": 1.5, "layers": "7,8,9,10,11", "ddim_steps": 20, "init_adain": True,
        "max_side": 768,
    }  # fmt: skip
    for bad in ({"gamma": 1.5}, {"temperature": 11}, {"ddim_steps": 0}, {"ddim_steps": 1001}, {"layers": "x"}):
        with pytest.raises(ValueError):
            StyleID.resolve_params(bad)
