"""InST (methods/inst.py, methods/_inst.py): each piece against the reference's formula on random tensors, the fit
(textual inversion) lowering its loss, the inference against the notebook's sampler written out, and StyleID with
InST through the ordinary `evalkit run` on tiny random components (a test-only weight set): every job ok, the fit
learned and timed once per style, kept across runs, and the speed table's fit column."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from evalkit_methods import _inst as I  # noqa: E402
from evalkit_methods.inst import InST  # noqa: E402

from evalkit.errors import EvalkitError  # noqa: E402
from tests.diffusion_support import build_tiny_sd, write_tiny_methods  # noqa: E402

SHORT: dict[str, Any] = {"fit_steps": 3, "fit_size": 32, "ddim_steps": 6}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the formulas ---------------------------------------------------------------------------------------------------
def test_reference_cast_is_numpys_uint8_cast_of_the_minus_one_one_image() -> None:
    """What the reference's CLIP encoder sees: ``(v / 127.5 - 1).astype(np.uint8)`` for every byte value."""
    values = np.arange(256, dtype=np.uint8)
    expected = (values.astype(np.float32) / 127.5 - 1.0).astype(np.uint8)
    got = I.reference_cast(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert set(got.tolist()) == {0, 1, 255}


def test_style_mapper_has_the_reference_parameters_and_formula() -> None:
    torch.manual_seed(0)
    mapper = I.StyleMapper(image_dim=16, token_dim=12, dropout=0.05).eval()
    names = {f"{a}.{p}.weight" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")} | {
        "attn1.to_out.0.bias",
        "attn2.to_out.0.bias",
        "net.1.weight",
        "net.1.bias",
    }
    assert set(mapper.state_dict()) == names
    x = torch.randn(3, 1, 16, generator=_gen(1))
    # one token: each attention is its value projection then its output projection (softmax over one key is 1)
    a2 = mapper.attn2
    one_token = mapper.net[1](a2.to_out[0](a2.to_v(x)))
    torch.testing.assert_close(mapper(x), one_token, rtol=1e-5, atol=1e-6)
    # several tokens: LDM's attention written out (8 heads of 64, scale 64^-0.5)
    seq = torch.randn(2, 5, 16, generator=_gen(2))
    a1 = mapper.attn1
    q, k, v = (f(seq).reshape(2, 5, 8, 64).transpose(1, 2) for f in (a1.to_q, a1.to_k, a1.to_v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1)
    explicit = a1.to_out[0]((weights @ v).transpose(1, 2).reshape(2, 5, 512))
    torch.testing.assert_close(a1(seq), explicit, rtol=1e-5, atol=1e-6)


def test_adain_is_the_notebooks_mean_and_variance_formula() -> None:
    c = torch.randn(1, 4, 6, 5, generator=_gen(3)) * 2 + 1
    s = torch.randn(1, 4, 7, 9, generator=_gen(4)) * 0.3 - 1
    out = I.adain(c, s)
    for ch in range(4):
        cf, sf = c[0, ch].flatten().double(), s[0, ch].flatten().double()
        c_std = (((cf - cf.mean()) ** 2).sum() / (cf.numel() - 1) + 1e-5).sqrt()
        s_std = (((sf - sf.mean()) ** 2).sum() / (sf.numel() - 1) + 1e-5).sqrt()
        expected = (c[0, ch].double() - cf.mean()) / c_std * s_std + sf.mean()
        torch.testing.assert_close(out[0, ch].double(), expected, rtol=1e-5, atol=1e-5)


def test_stochastic_inversion_is_the_forward_formula_with_the_prediction() -> None:
    x0, eps = torch.randn(1, 4, 3, 3, generator=_gen(5)), torch.randn(1, 4, 3, 3, generator=_gen(6))
    a = torch.tensor(0.3)
    torch.testing.assert_close(I.stochastic_inversion(x0, eps, a), 0.3**0.5 * x0 + 0.7**0.5 * eps)


# -- tiny components ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def model(tiny_folder: Path) -> Iterator[InST]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored after the module: later runs keep their setting
    adapter = InST(weight_set="tiny", device="cpu")
    adapter.load({"pipeline": tiny_folder, "clip": tiny_folder / "clip"})
    yield adapter
    torch.set_num_threads(threads)


def test_placeholder_embedding_is_the_token_row_replaced(model: InST) -> None:
    """The prompt ``*`` with the placeholder embedded as ``v`` equals the text encoder whose vocabulary row for
    ``*`` is ``v`` (an independent way to the same states)."""
    import copy

    vector = torch.randn(1, model.token_dim, generator=_gen(7))
    with torch.no_grad():
        hooked = model.prompt_with(vector)
        plain = model.parts.prompt(I.PLACEHOLDER)
        edited = copy.deepcopy(model.parts.text_encoder)
        edited.get_input_embeddings().weight[model.placeholder_id] = vector[0]
        tokens = model.parts.tokenizer([I.PLACEHOLDER], padding="max_length", max_length=8, return_tensors="pt")
        expected = edited(tokens.input_ids)[0]
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(hooked, plain)
    assert model.placeholder_id == 6  # '*</w>' of the tiny vocabulary: the token after BOS, as the reference takes


def test_the_fit_lowers_its_loss_and_touches_only_the_mapper(model: InST) -> None:
    """Textual inversion: on a fixed evaluation set of (posterior sample, timestep, noise), the loss with the learned
    embedding is below the loss with the mapper's initial one; the UNet, VAE and encoders are unchanged; the fit is
    a function of ``fit_seed`` (same seed, same embedding; another seed, another)."""
    style = torch.rand(1, 3, 40, 48, generator=_gen(8))
    frozen = {k: v.clone() for k, v in model.parts.unet.state_dict().items()}
    params = {**SHORT, "fit_steps": 60, "fit_lr": 3e-3}
    fitted = model.fit_style(style, **params)
    assert all(torch.equal(v, frozen[k]) for k, v in model.parts.unet.state_dict().items())
    assert fitted["losses"].shape == (60,) and torch.isfinite(fitted["losses"]).all()

    square = torch.nn.functional.interpolate(style, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
    embed = model.clip_embedding(square, "reference-cast")
    torch.manual_seed(0)  # the fit's initial mapper: the first draw after seeding with fit_seed
    initial = I.StyleMapper(model.image_dim, model.token_dim).eval()
    with torch.no_grad():
        start = initial(embed[:, None])[:, 0]
        g = _gen(9)
        posterior = model.latent_dist(square)
        latents = [posterior.sample(generator=g) * model.parts.vae.config.scaling_factor for _ in range(24)]
        steps = torch.randint(0, 1000, (24,), generator=g).tolist()
        samples = [(z, t, torch.randn(z.shape, generator=g)) for z, t in zip(latents, steps, strict=True)]

        def loss(embedding: torch.Tensor) -> float:
            return float(sum(model.inversion_loss(embedding, z, t, n) for z, t, n in samples)) / len(samples)

        before, after = loss(start), loss(fitted["embedding"])
    print(f"fit loss on the evaluation set: {before:.4f} -> {after:.4f}")
    assert after < before, (before, after)
    again = model.fit_style(style, **params)
    torch.testing.assert_close(again["embedding"], fitted["embedding"])
    other = model.fit_style(style, **{**params, "fit_seed": 1})
    assert not torch.allclose(other["embedding"], fitted["embedding"])


def test_stylize_is_the_notebooks_sampler_written_out(model: InST) -> None:
    """Stochastic inversion then ``int(strength * ddim_steps)`` DDIM steps with guidance, recomputed here from the
    LDM sampler's own schedule (timesteps ``range(0, 1000, 1000 // steps) + 1``, the smallest ``t_start`` of them in
    reverse, the previous alpha of the first being alpha_cumprod[0]) without diffusers' scheduler; the seed matters."""
    content, style = torch.rand(1, 3, 24, 32, generator=_gen(10)), torch.rand(1, 3, 16, 16, generator=_gen(11))
    embedding = torch.randn(1, model.token_dim, generator=_gen(12))
    params = {"strength": 0.5, "ddim_steps": 10, "guidance_scale": 7.5}
    out = model.stylize(content, style, seed=3, fitted={"embedding": embedding}, **params)

    parts, alphas = model.parts, model.parts.scheduler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(3)
    sf = parts.vae.config.scaling_factor
    with torch.no_grad():
        c = model.latent_dist(content).sample(generator=g) * sf
        s = model.latent_dist(style).sample(generator=g) * sf
        x0 = I.adain(c, s)
        cond, uncond = model.prompt_with(embedding), model.parts.prompt("")
        noise = torch.randn(x0.shape, generator=g)
        a = alphas[500].float()
        eps = parts.unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, 500, encoder_hidden_states=cond).sample
        x = a.sqrt() * x0 + (1 - a).sqrt() * eps
        ddim = np.arange(0, 1000, 100) + 1
        for i in reversed(range(5)):
            t = int(ddim[i])
            a_t, a_prev = alphas[t], (alphas[int(ddim[i - 1])] if i > 0 else alphas[0])
            e_c = parts.unet(x, t, encoder_hidden_states=cond).sample.double()
            e_u = parts.unet(x, t, encoder_hidden_states=uncond).sample.double()
            e = e_u + 7.5 * (e_c - e_u)
            pred_x0 = (x.double() - (1 - a_t).sqrt() * e) / a_t.sqrt()
            x = (a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e).float()
        expected = parts.decode(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    other_seed = model.stylize(content, style, seed=4, fitted={"embedding": embedding}, **params)
    assert not torch.allclose(other_seed, out, atol=1e-3)


def test_refusals_are_one_line(model: InST) -> None:
    content, style = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 16, 16)
    with pytest.raises(EvalkitError) as err:
        model.stylize(content, style, fitted={"embedding": torch.zeros(1, model.token_dim)}, max_side=32)
    assert "\n" not in str(err.value) and "max_side=32" in str(err.value)
    with pytest.raises(EvalkitError, match="no style embedding"):
        model.stylize(content, style)
    for bad in ({"strength": 1.5}, {"fit_steps": 0}, {"clip_input": "pixels"}, {"guidance_scale": -1}):
        with pytest.raises(ValueError):
            InST.resolve_params(bad)


def test_declared_weight_set_params_and_phases() -> None:
    ws: Any = InST.weight_sets["sd14"]
    assert ws.model_id == "CompVis/stable-diffusion-v1-4" and dict(ws.extra) == {
        "clip": "openai/clip-vit-large-patch14"
    }
    defaults = InST.resolve_params(None)
    shown = ("strength", "ddim_steps", "guidance_scale", "fit_steps", "fit_lr", "fit_size")
    assert {k: defaults[k] for k in shown} == {
        "strength": 0.7, "ddim_steps": 50, "guidance_scale": 10.0, "fit_steps": 6100, "fit_lr": 1e-4, "fit_size": 512,
    }  # fmt: skip
    assert InST.fits_style() and not InST.deterministic and InST.extra == "diffusion"
    from evalkit_methods.styleid import StyleID

    assert not StyleID.fits_style()


# -- the CLI, end to end ----------------------------------------------------------------------------------------------
def test_the_cli_runs_styleid_and_inst_on_test_only_weights_fits_once_per_style_and_resumes(
    tiny_folder: Path, tmp_path: Path
) -> None:
    """`evalkit run --protocol quick` with StyleID and InST (tiny components, method file): every job ok and scored;
    InST with two seeds learns each of the five styles once (five fit times on ten jobs); a rerun resumes every job;
    a new results root on the same machine reuses the kept fits (no fit time); `evalkit speed` shows fit/style."""
    methods = write_tiny_methods(tmp_path / "tiny_diffusion.py", tiny_folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "EVALKIT_HOME": str(tmp_path / "home")}

    def run(out: Path) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable, "-m", "evalkit", "run", "--protocol", "quick", "--metrics", "ssim", "--res", "64",
            "--methods", f"{methods}:TinyStyleID,{methods}:TinyInST", "--seeds", "2",
            "--param", "tiny_diffusion:TinyStyleID.ddim_steps=3", "--out", str(out), "--no-progress",
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)

    out = tmp_path / "results"
    first = run(out)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        rows = conn.execute("SELECT method, style, seed, status, weight_set, time_fit_s FROM jobs").fetchall()
        scored = conn.execute("SELECT COUNT(*) FROM metrics WHERE metric='ssim' AND status='ok'").fetchone()[0]
    styleid = [r for r in rows if r[0] == "tinystyleid"]
    inst = [r for r in rows if r[0] == "tinyinst"]
    assert len(styleid) == 5 and len(inst) == 10  # StyleID is deterministic: one seed; InST two
    assert all(r[3] == "ok" and r[4] == "tiny" for r in rows) and scored == 15
    assert all(r[5] is None for r in styleid)
    fits = [r for r in inst if r[5] is not None]
    assert len(fits) == 5 and {r[1] for r in fits} == {r[1] for r in inst} and all(r[5] > 0 for r in fits)

    again = run(out)
    assert again.returncode == 0, again.stderr
    assert "resuming: 15 of 15 jobs already finished" in again.stderr, again.stderr
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT job_key) FROM jobs").fetchone() == (15, 15)

    speed = subprocess.run(
        [sys.executable, "-m", "evalkit", "speed", "--results", str(out), "--format", "md"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert speed.returncode == 0, speed.stderr
    header = next(line for line in speed.stdout.splitlines() if line.startswith("| model"))
    assert "fit/style" in header
    inst_row = next(line for line in speed.stdout.splitlines() if "tinyinst" in line)
    styleid_row = next(line for line in speed.stdout.splitlines() if "tinystyleid" in line)
    fit_index = [c.strip() for c in header.split("|")].index("fit/style")
    assert [c.strip() for c in inst_row.split("|")][fit_index] not in ("", "–")
    assert [c.strip() for c in styleid_row.split("|")][fit_index] == "–"

    elsewhere = tmp_path / "results2"  # another root, same machine: the fits on disk are reused
    second = run(elsewhere)
    assert second.returncode == 0, second.stderr
    with sqlite3.connect(elsewhere / "evalkit.sqlite") as conn:
        times = conn.execute("SELECT status, time_fit_s FROM jobs WHERE method='tinyinst'").fetchall()
    assert len(times) == 10 and all(s == "ok" and t is None for s, t in times)
