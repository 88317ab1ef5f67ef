"""hist_loss (StyleID's histogram loss) against a literal numpy re-computation of ``eval_histogan.py``.

``_script_hist_loss`` below is this project's own transcription of the released script's steps, in its order
(jiwoogit/StyleID @ 35436fc ``eval_histogan.py``: the ``RGBuvHistBlock.forward`` loop over the batch and the three
channel blocks, the normalisation over all bins, and the Hellinger line ``1/sqrt(2) * sqrt(sum((sqrt(H_t) -
sqrt(H_i))^2)) / batch``). With ``dtype=np.float32`` it also follows the script's precision (float32 image, logs,
intensity and matrix product; float64 kernel cast to float32), so it is the number the script prints; with
``np.float64`` it is the same formula in double precision, which evalkit's float64 module must match to rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit import imaging
from evalkit.assets import AssetStore
from evalkit.metrics import EvalSample, MetricSuite, get_metric_class
from evalkit.metrics.histogram import HistLoss, hist_loss
from tests.conftest import DATA_MIRROR, needs_data

# the script's settings (eval_histogan.py lines 29, 32-34, 229-241)
EPS = 1e-6
H = 64
INSZ = 256
SIGMA = 0.02


def _bilinear(x: np.ndarray, out_h: int, out_w: int, dtype) -> np.ndarray:
    """``F.interpolate(x, size=(out_h, out_w), mode='bilinear', align_corners=False)`` (no antialiasing)."""

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo).astype(dtype)
        return lo, hi, frac

    r0, r1, fr = axis(x.shape[2], out_h)
    c0, c1, fc = axis(x.shape[3], out_w)
    rows = x[:, :, r0, :] * (1 - fr)[:, None] + x[:, :, r1, :] * fr[:, None]
    return (rows[..., c0] * (1 - fc) + rows[..., c1] * fc).astype(dtype)


def _script_histogram(x: np.ndarray, dtype) -> np.ndarray:
    """RGBuvHistBlock(h=64, insz=256, method='inverse-quadratic', sigma=0.02, intensity_scale=True).forward(x)."""
    x = np.clip(x.astype(dtype), 0, 1)
    if x.shape[2] > INSZ or x.shape[3] > INSZ:
        x = _bilinear(x, INSZ, INSZ, dtype)
    batch = x.shape[0]
    x = x[:, :3]
    centres = np.linspace(-3, 3, num=H)  # float64 in the script, so the kernel is computed in float64
    hists = np.zeros((batch, 3, H, H), dtype=dtype)
    for b in range(batch):
        pixels = x[b].reshape(3, -1).T
        squares = pixels**2
        iy = np.sqrt(squares[:, 0] + squares[:, 1] + squares[:, 2] + dtype(EPS))[:, None]
        for c, (p, q) in enumerate(((1, 2), (0, 2), (0, 1))):  # channel 0: R/G, R/B; 1: G/R, G/B; 2: B/R, B/G
            iu = (np.log(pixels[:, c] + dtype(EPS)) - np.log(pixels[:, p] + dtype(EPS)))[:, None]
            iv = (np.log(pixels[:, c] + dtype(EPS)) - np.log(pixels[:, q] + dtype(EPS)))[:, None]
            diff_u = np.abs(iu - centres[None, :])
            diff_v = np.abs(iv - centres[None, :])
            diff_u = (1 / (1 + diff_u**2 / SIGMA**2)).astype(dtype)  # inverse quadratic
            diff_v = (1 / (1 + diff_v**2 / SIGMA**2)).astype(dtype)
            a = (iy * diff_u).T
            hists[b, c] = a @ diff_v
    total = hists.sum(axis=1).sum(axis=1).sum(axis=1).reshape(-1, 1, 1, 1)
    return hists / (total + dtype(EPS))


def _script_hist_loss(output: np.ndarray, style: np.ndarray, dtype=np.float32) -> float:
    """eval_histogan.py lines 258-266: output = ``input_image``, style = ``target_image``."""
    input_hist = _script_histogram(output, dtype)
    target_hist = _script_histogram(style, dtype)
    return float(
        1 / np.sqrt(2.0) * np.sqrt(np.sum((np.sqrt(target_hist) - np.sqrt(input_hist)) ** 2)) / len(input_hist)
    )


def _to_tensor_like_torchvision(path) -> np.ndarray:
    """What the script's ``image_loader`` gives: PIL decode, ToTensor (8-bit / 255, float32), batch of one."""
    with Image.open(path) as img:
        arr = np.asarray(img, dtype=np.uint8)
    return (arr.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]


def _suite_value(output: torch.Tensor, style: torch.Tensor, style_key: str = "s") -> float:
    suite = MetricSuite(["hist_loss"], "cpu", AssetStore.from_env())
    (value,) = suite.evaluate(EvalSample(output, output, style, "o", "o", style_key))
    assert value.status == "ok", value.message
    return float(value.value)


def _check(output: torch.Tensor, style: torch.Tensor, abs32: float = 1e-9) -> float:
    """Module == script transcription (float32, as the script runs) to 1e-6 and (float64) to 1e-9, relative
    (``abs32``: the float32 noise floor, for values near 0)."""
    ours = hist_loss(output, style)
    out_np, sty_np = output.numpy(), style.numpy()
    script32 = _script_hist_loss(out_np, sty_np, np.float32)
    script64 = _script_hist_loss(out_np, sty_np, np.float64)
    assert ours == pytest.approx(script32, rel=1e-6, abs=abs32)
    assert ours == pytest.approx(script64, rel=1e-9, abs=1e-12)
    return ours


def _random_8bit(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=shape).astype(np.float32) / np.float32(255))


# -- real StyleID pairs ----------------------------------------------------------------------------------------
@needs_data
@pytest.mark.mirror
@pytest.mark.parametrize("content,style", [("00", "00"), ("01", "17"), ("12", "08"), ("19", "39")])
def test_real_pairs_match_the_script(content, style):
    """A content image stands in for an output (512x512, like StyleID's outputs): the resize branch runs."""
    assert DATA_MIRROR is not None
    out_path, sty_path = DATA_MIRROR / f"styleid/cnt/{content}.png", DATA_MIRROR / f"styleid/sty/{style}.png"
    output = imaging.to_tensor(imaging.load_image(out_path))  # what evalkit feeds (8-bit / 255, float32)
    sty = imaging.to_tensor(imaging.load_image(sty_path))
    # evalkit's decoding gives exactly the script's ToTensor values for these RGB PNGs
    assert np.array_equal(output.numpy(), _to_tensor_like_torchvision(out_path))
    assert np.array_equal(sty.numpy(), _to_tensor_like_torchvision(sty_path))
    value = _check(output, sty)
    assert 0.4 < value < 0.9  # measured 0.5977 .. 0.7219 on these pairs
    assert _suite_value(output, sty) == pytest.approx(value, rel=1e-12)


@needs_data
@pytest.mark.mirror
def test_non_square_and_small_images_follow_the_script_resize():
    """384x512 is squashed to 256x256 (fractional bilinear weights); 200x220 is below 256 and is not resized."""
    assert DATA_MIRROR is not None
    content = imaging.to_tensor(imaging.load_image(DATA_MIRROR / "styleid/cnt/03.png"))[:, :, :384, :]
    style = imaging.to_tensor(imaging.load_image(DATA_MIRROR / "styleid/sty/05.png"))[:, :, 50:250, 10:230]
    _check(content, style)
    _check(style, content)


def test_score_cli_gives_the_script_value(tmp_path):
    """`evalkit score OUT --style STYLE --metrics hist_loss`, at the files' own size."""
    from typer.testing import CliRunner

    from evalkit.cli import app

    out_path, sty_path = tmp_path / "out.png", tmp_path / "style.png"
    imaging.to_pil(_random_8bit((1, 3, 300, 280), 1)).save(out_path)
    imaging.to_pil(_random_8bit((1, 3, 240, 320), 2) ** 2).save(sty_path)
    result = CliRunner().invoke(
        app, ["score", str(out_path), "--style", str(sty_path), "--metrics", "hist_loss", "--json"]
    )
    assert result.exit_code == 0, result.output
    (value,) = json.loads(result.output)
    assert value["metric"] == "hist_loss" and value["status"] == "ok"
    expected = _script_hist_loss(_to_tensor_like_torchvision(out_path), _to_tensor_like_torchvision(sty_path))
    assert value["value"] == pytest.approx(expected, rel=1e-6)
    no_style = CliRunner().invoke(app, ["score", str(out_path), "--metrics", "hist_loss", "--json"])
    (missing,) = json.loads(no_style.output)
    assert missing["status"] == "unavailable" and "--style" in missing["message"]


@needs_data
@pytest.mark.mirror
def test_score_cli_on_a_styleid_pair():
    from typer.testing import CliRunner

    from evalkit.cli import app

    assert DATA_MIRROR is not None
    out_path, sty_path = DATA_MIRROR / "styleid/cnt/05.png", DATA_MIRROR / "styleid/sty/33.png"
    result = CliRunner().invoke(
        app, ["score", str(out_path), "--style", str(sty_path), "--metrics", "hist_loss", "--json"]
    )
    assert result.exit_code == 0, result.output
    (value,) = json.loads(result.output)
    expected = _script_hist_loss(_to_tensor_like_torchvision(out_path), _to_tensor_like_torchvision(sty_path))
    assert value["value"] == pytest.approx(expected, rel=1e-6)
    assert value["value"] == pytest.approx(0.668808, abs=1e-6)  # measured; the released code prints 0.66880757


# -- edge cases --------------------------------------------------------------------------------------------------
def test_identical_images_score_zero():
    img = _random_8bit((1, 3, 320, 300), 3)
    assert hist_loss(img, img.clone()) == 0.0
    assert _script_hist_loss(img.numpy(), img.numpy()) == 0.0
    assert _suite_value(img, img.clone()) == 0.0


@pytest.mark.parametrize(
    "rgb",
    [(128, 128, 128), (0, 0, 0), (255, 0, 0), (10, 200, 90)],
    ids=["grey", "black", "pure-red", "green"],
)
def test_constant_images_match_the_script(rgb):
    """Flat images put all mass in one bin per channel; a zero channel sends u, v to +-13.8 (log 1e-6), outside
    [-3, 3], where only the kernel's tails count."""
    const = torch.tensor(rgb, dtype=torch.float32).div(255).view(1, 3, 1, 1).expand(1, 3, 300, 260).contiguous()
    style = _random_8bit((1, 3, 280, 280), 4)
    value = _check(const, style)
    assert 0 < value <= 1
    _check(style, const)


def test_all_greys_have_one_histogram():
    """u = v = 0 for any grey; the intensity weight is a common factor that the normalisation removes."""
    black, white = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    assert hist_loss(black, white) == pytest.approx(0.0, abs=1e-6)
    _check(black, white, abs32=1e-6)  # float32 rounding alone leaves ~5e-7 here


def test_inputs_are_read_as_8_bit_and_clamped():
    """A float output is scored as its 8-bit PNG (what the script would read); values outside [0, 1] are clamped."""
    x = torch.rand(1, 3, 100, 90, generator=torch.Generator().manual_seed(5))
    style = _random_8bit((1, 3, 100, 90), 6)
    as_png = torch.round(x * 255) / 255
    assert hist_loss(x, style) == hist_loss(as_png, style)
    assert hist_loss(x * 3 - 1, style) == hist_loss((x * 3 - 1).clamp(0, 1), style)


def test_metadata_and_style_histogram_cache():
    info = get_metric_class("hist_loss").info
    assert (info.name, info.higher_is_better, info.reference, info.range) == ("hist_loss", False, "style", (0.0, 1.0))
    assert "inverse-quadratic" in info.definition and "256" in info.definition
    metric = HistLoss("cpu")
    out, style, other = (
        _random_8bit((1, 3, 64, 64), 7),
        _random_8bit((1, 3, 64, 64), 8),
        _random_8bit((1, 3, 64, 64), 9),
    )
    first = metric.compute(EvalSample(out, out, style, "o", "o", "s1"), None)  # type: ignore[arg-type]
    again = metric.compute(EvalSample(out, out, style, "o", "o", "s1"), None)  # type: ignore[arg-type]
    assert first == again == hist_loss(out, style) and list(metric._style_hists) == ["s1"]
    assert metric.compute(EvalSample(out, out, other, "o", "o", "s2"), None) == hist_loss(out, other)  # type: ignore[arg-type]
