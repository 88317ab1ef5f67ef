"""The seed speed table's systems (PhotoWCT, PhotoWCT2, PhotoNAS) and the TF2 checkpoint path PCA-KD and PhotoWCT2
share: readers, loaders, layouts and counts against the papers, transforms and smoothing against independent
computations, and PCA-KD's upstream files through the real download path."""

from __future__ import annotations

import csv
import functools
import http.server
import re
import threading
import urllib.parse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit import tf_bundle
from evalkit.assets import AssetSettings, AssetStore
from evalkit.checkpoints import CheckpointError, cached_conversion, read_tf_checkpoint
from evalkit.weights import WeightSet
from tests.conftest import WEIGHTS_MIRROR, needs_weights

PCA = {b: Path(WEIGHTS_MIRROR or "/nonexistent") / "pca_kd" / b for b in ("vgg", "mobilenet")}
PW2 = Path(WEIGHTS_MIRROR or "/nonexistent") / "photowct2"
mirror = pytest.mark.mirror


# -- TF2 tensor bundles ---------------------------------------------------------------------------------------------
@needs_weights
@mirror
@pytest.mark.parametrize("backbone", ["vgg", "mobilenet"])
@pytest.mark.parametrize("stem", ["sencoder", "sdecoder"])
def test_bundle_reader_equals_the_derived_npz_bit_for_bit(backbone, stem):
    folder = PCA[backbone]
    ours = read_tf_checkpoint(folder / f"{stem}.index", folder / f"{stem}.data-00000-of-00001")
    with np.load(folder / f"{stem}_tf_hwio.npz") as derived:  # converted with TensorFlow (SOURCES.md)
        assert set(ours) == set(derived.files)
        for key in derived.files:
            assert ours[key].dtype == derived[key].dtype and ours[key].shape == derived[key].shape, key
            assert ours[key].tobytes() == derived[key].tobytes(), key


@needs_weights
@mirror
@pytest.mark.parametrize("model", ["conv", "relu"])
def test_bundle_reader_on_the_real_photowct2_indexes(model, tmp_path):
    # The data files are not obtainable here; the index fixes their layout. A shard of exactly the implied size, each
    # tensor filled with its own running number, must read back tensor by tensor.
    for part, tensors, size in (("encoder", 20, 14_022_960), ("decoder", 18, 14_020_876)):
        index = PW2 / f"ckpts-{model}" / f"{part}.index"
        shards, entries = tf_bundle.read_index(index)
        assert (shards, len(entries), tf_bundle.expected_data_size(index)) == (1, tensors, [size])
        blob = bytearray(size)
        for number, entry in enumerate(sorted(entries.values(), key=lambda e: e.offset)):
            count = entry.size // 4
            blob[entry.offset : entry.offset + entry.size] = np.full(count, number, "<f4").tobytes()
        data = tmp_path / f"{model}-{part}.data"
        data.write_bytes(bytes(blob))
        got = read_tf_checkpoint(index, data)
        for number, entry in enumerate(sorted(entries.values(), key=lambda e: e.offset)):
            value = got[tf_bundle.variable_name(entry.name)]
            assert value.shape == entry.shape and np.all(value == number)
        # a truncated shard is one line naming it
        data.write_bytes(bytes(blob[: size // 2]))
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(data))} is {size // 2} bytes.*truncated"):
            read_tf_checkpoint(index, data)


@needs_weights
@mirror
def test_bundle_reader_rejects_corrupt_indexes_in_one_line(tmp_path):
    real = (PCA["vgg"] / "sencoder.index").read_bytes()
    not_an_index = tmp_path / "a.index"
    not_an_index.write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"a.index is not a TensorFlow checkpoint index"):
        tf_bundle.read_index(not_an_index)
    chopped = tmp_path / "b.index"
    chopped.write_bytes(real[:200] + real[-48:])  # footer intact, blocks gone
    with pytest.raises(CheckpointError) as err:
        tf_bundle.read_index(chopped)
    assert "b.index" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="data file of checkpoint .* not found"):
        read_tf_checkpoint(PCA["vgg"] / "sencoder.index", tmp_path / "missing.data")


def test_cached_conversion_converts_once_and_rebuilds_a_broken_cache(tmp_path):
    store = AssetStore(AssetSettings(home=str(tmp_path / "home")))
    source = tmp_path / "source.bin"
    source.write_bytes(b"version 1")
    calls = []

    def convert() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) + len(calls)}

    first = cached_conversion(store, "thing", [source], convert)
    again = cached_conversion(store, "thing", [source], convert)
    assert len(calls) == 1 and np.array_equal(first["w"], again["w"])
    (derived,) = (tmp_path / "home" / "derived").glob("thing-*.npz")
    derived.write_bytes(b"garbage")  # an unreadable derived file is rebuilt, not an error
    cached_conversion(store, "thing", [source], convert)
    assert len(calls) == 2
    source.write_bytes(b"version 2")  # another source is another conversion, never a stale one
    cached_conversion(store, "thing", [source], convert)
    assert len(calls) == 3 and len(list((tmp_path / "home" / "derived").glob("thing-*.npz"))) == 2


# -- PCA-KD for every user: upstream addresses through the real download path ------------------------------------
class _RawGitHub(http.server.SimpleHTTPRequestHandler):
    """Serves ``/chiutaiyin/PCA-Knowledge-Distillation/<commit>/<Backbone> backbone/ckpts/<file>`` from the mirror,
    as raw.githubusercontent.com would; anything else is a 404."""

    served: list[str] = []
    tamper = False

    def translate_path(self, path: str) -> str:
        parts = urllib.parse.unquote(urllib.parse.urlparse(path).path).strip("/").split("/")
        if len(parts) == 6 and parts[:2] == ["chiutaiyin", "PCA-Knowledge-Distillation"] and parts[4] == "ckpts":
            backbone = {"VGG backbone": "vgg", "MobileNet backbone": "mobilenet"}.get(parts[3])
            if backbone and len(parts[2]) == 40:
                self.served.append(parts[5])
                return str(PCA[backbone] / parts[5])
        return "/nonexistent"

    def copyfile(self, source, outputfile) -> None:
        data = source.read()
        outputfile.write(data[:-1] + b"\x00" if self.tamper else data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def raw_github():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RawGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _RawGitHub.served, _RawGitHub.tamper = [], False
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _via(weight_set: WeightSet, base: str) -> WeightSet:
    files = {
        role: replace(a, url=a.url.replace("https://raw.githubusercontent.com", base)) if a.url else a
        for role, a in weight_set.files.items()
    }
    return replace(weight_set, files=files)


@needs_weights
@mirror
def test_pca_kd_weights_download_verify_cache_and_load_without_the_mirror(raw_github, tmp_path, capsys):
    from evalkit_methods.pca_kd import WEIGHT_SETS, PcaKd

    store = AssetStore(AssetSettings(home=str(tmp_path / "home"), weights_mirror=None, data_mirror=None))
    for name, upstream in WEIGHT_SETS.items():
        assert {a.url.split("/")[-1] for a in upstream.files.values()} == {
            "sencoder.index",
            "sencoder.data-00000-of-00001",
            "sdecoder.index",
            "sdecoder.data-00000-of-00001",
        }
        assert all(a.sha256 and a.url.startswith("https://raw.githubusercontent.com/") for a in upstream.files.values())
        ws = _via(upstream, raw_github)
        assert ws.availability(store)[0] == "downloadable"
        files = ws.resolve(store)  # progress bar, sha256 check, cache: the resolver's real download path
        assert ws.availability(store) == ("available", "cache")
        assert all(p.is_relative_to(tmp_path / "home" / "weights") for p in files.values())
        adapter = PcaKd(name, "cpu", assets=store)
        adapter.load(files)
        assert adapter.info().parameters == {"vgg": 283_236, "mobilenet": 52_742}[name]
        assert len(list((tmp_path / "home" / "derived").glob(f"pca_kd-{name}-*.npz"))) == 2
    assert len(_RawGitHub.served) == 8  # each file fetched once
    # a corrupted transfer is refused and nothing is cached
    _RawGitHub.tamper = True
    fresh = AssetStore(AssetSettings(home=str(tmp_path / "other"), weights_mirror=None, data_mirror=None))
    with pytest.raises(Exception, match="sha256"):
        _via(WEIGHT_SETS["vgg"], raw_github).resolve(fresh)
    assert not list((tmp_path / "other" / "weights").rglob("*.index"))


def test_weights_status_without_a_mirror_shows_pca_kd_and_photowct2_downloadable(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evalkit.cli import app

    monkeypatch.delenv("EVALKIT_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["weights", "status"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines() if "│" in line
    }
    for label in ("pca_kd[vgg]", "pca_kd[mobilenet]", "photowct2[relu]", "photowct2[conv]", "photowct[official]"):
        assert rows.get(label) == "downloadable", (label, rows)
    assert rows.get("photonas[official]") == "missing"  # Google Drive only: nothing to download automatically


# -- PhotoWCT ---------------------------------------------------------------------------------------------------------
def _photowct(tmp_path, seed: int = 0):
    from evalkit_methods._vgg_autoencoders import synthetic_state
    from evalkit_methods.photowct import PhotoWCT, PhotoWCTNet

    state = synthetic_state(PhotoWCTNet(), seed)
    path = tmp_path / "photo_wct.pth"
    torch.save(state, path)
    adapter = PhotoWCT("official", "cpu")
    adapter.load({"model": path})
    return adapter, state, path


def test_photowct_layout_and_counts_are_the_official_ones(tmp_path):
    from evalkit_methods.photowct import official_layout

    layout = official_layout()
    # NVIDIA/FastPhotoStyle models.py: e<k> = conv0 + VGG-19 convs to conv<k>_1; d<k> mirrors it
    convs = {1: 1, 2: 3, 3: 5, 4: 9}
    assert len(layout) == sum(2 * (n + 1) + 2 * n for n in convs.values()) == 80  # weight + bias per conv
    assert layout["e1.conv0.weight"] == (3, 3, 1, 1) and layout["e4.conv4_1.weight"] == (512, 256, 3, 3)
    assert layout["d4.conv4_1.weight"] == (256, 512, 3, 3) and layout["d2.conv1_1.weight"] == (3, 64, 3, 3)
    assert "d1.conv1_2.weight" not in layout and "e3.conv3_2.weight" not in layout
    adapter, state, _ = _photowct(tmp_path)
    torch.testing.assert_close(adapter.net.d3.conv2_2.weight, state["d3.conv2_2.weight"])
    info = adapter.info()
    assert (info.parameters, info.layers) == (8_349_948, 48)  # the paper's 8.35M / 48


def test_photowct_loader_names_a_wrong_key_or_shape_in_one_line(tmp_path):
    from evalkit_methods.photowct import PhotoWCT

    _, state, path = _photowct(tmp_path)
    bad = dict(state)
    bad["e4.conv3_3.weight"] = bad["e4.conv3_3.weight"][:128]
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as err:
        PhotoWCT("official").load({"model": path})
    assert re.search(r"e4\.conv3_3\.weight.*\(128, 256, 3, 3\).*\(256, 256, 3, 3\)", str(err.value))
    assert "\n" not in str(err.value)
    renamed = {k.replace("d2.", "decoder2."): v for k, v in state.items()}
    torch.save(renamed, path)
    with pytest.raises(CheckpointError, match=r"lacks key 'd2\.conv2_1\.weight'"):
        PhotoWCT("official").load({"model": path})


class _OfficialStyleAutoencoder(nn.Module):
    """FastPhotoStyle's VGGEncoder/VGGDecoder(level) written with their module types (ReflectionPad2d, MaxPool2d
    with indices, MaxUnpool2d): an independent computation of what ``e<k>``/``d<k>`` do."""

    def __init__(self, state: dict, level: int) -> None:
        super().__init__()
        self.state, self.level = state, level

    def conv(self, part: str, name: str, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        w, b = self.state[f"{part}{self.level}.{name}.weight"], self.state[f"{part}{self.level}.{name}.bias"]
        x = F.conv2d(nn.ReflectionPad2d(1)(x) if w.shape[-1] == 3 else x, w, b)
        return nn.ReLU()(x) if relu else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4", "conv4_1"]
        names = order[: order.index(f"conv{self.level}_1") + 1]
        pool = nn.MaxPool2d(2, 2, return_indices=True)
        x, stack = self.conv("e", "conv0", x, relu=False), []
        for name in names:
            x = self.conv("e", name, x)
            if name in ("conv1_2", "conv2_2", "conv3_4") and name != names[-1]:
                size = x.size()
                x, idx = pool(x)
                stack.append((idx, size))
        for name in reversed(names):
            x = self.conv("d", name, x, relu=name != "conv1_1")
            if name in ("conv2_1", "conv3_1", "conv4_1"):
                idx, size = stack.pop()
                x = nn.MaxUnpool2d(2, 2)(x, idx, output_size=size)
        return x


def test_photowct_autoencoders_match_an_independent_module_version(tmp_path):
    adapter, state, _ = _photowct(tmp_path, seed=3)
    x = torch.rand(1, 3, 37, 51, generator=torch.Generator().manual_seed(0))  # odd sizes: floor pooling, unpool size
    with torch.no_grad():
        for level in (2, 4):
            feat, pools, _ = getattr(adapter.net, f"e{level}")(x)
            ours = getattr(adapter.net, f"d{level}")(feat, pools)
            torch.testing.assert_close(ours, _OfficialStyleAutoencoder(state, level)(x), rtol=1e-4, atol=1e-4)
            assert ours.shape == x.shape


def _cov(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(1, keepdims=True)
    return centred @ centred.T / (x.shape[1] - 1)


def _sqrtm(m: np.ndarray, power: float, floor: float = 1e-5) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    keep = vals >= floor
    return (vecs[:, keep] * vals[keep] ** power) @ vecs[:, keep].T


def test_photowct_regularises_only_the_content_covariance_which_separates_it_from_wct2():
    from evalkit_methods import _transforms as T

    rng = np.random.default_rng(0)
    fc = rng.standard_normal((16, 400)) * rng.uniform(0.05, 3, (16, 1)) + 2.0
    fs = rng.standard_normal((16, 300)) * rng.uniform(0.05, 3, (16, 1)) - 1.0
    # the official __wct_core: (Cs)^1/2 (Cc + I)^-1/2 (fc - mc) + ms, eigenvalues below 1e-5 dropped
    official = _sqrtm(_cov(fs), 0.5) @ _sqrtm(_cov(fc) + np.eye(16), -0.5) @ (fc - fc.mean(1, keepdims=True))
    official += fs.mean(1, keepdims=True)
    ours = T.wct_flat(torch.from_numpy(fc).float(), torch.from_numpy(fs).float(), T.PHOTOWCT_RULE).double().numpy()
    np.testing.assert_allclose(ours, official, rtol=1e-4, atol=1e-4)
    wct2 = T.wct_flat(torch.from_numpy(fc).float(), torch.from_numpy(fs).float(), T.WCT2_RULE).double().numpy()
    assert np.abs(wct2 - ours).max() > 0.1  # same features, one regulariser apart: clearly different outputs


def test_photowct_segments_that_are_not_valid_keep_their_content_features(tmp_path):
    adapter, _, _ = _photowct(tmp_path, seed=1)
    from evalkit.adapter import Masks

    content = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    style = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    c_lab = torch.zeros(48, 64, dtype=torch.long)
    c_lab[:, 32:] = 1
    s_lab = torch.zeros(40, 40, dtype=torch.long)  # label 1 absent from the style: its half is not transferred
    params = adapter.resolve_params({})
    calls = []
    from evalkit_methods import _photo_wct

    real = _photo_wct.transfer

    def spy(c, s, masks=None, labels=None, **kw):
        calls.append(labels)
        return real(c, s, masks, labels, **kw)

    _photo_wct.transfer = spy
    try:
        with torch.no_grad():
            adapter.stylize(content, style, Masks(c_lab, s_lab), **params)
    finally:
        _photo_wct.transfer = real
    assert calls == [[0]] * 4  # four levels, only label 0 matched


def _official_affinity(img: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """photo_smooth.py ``__compute_laplacian`` (Levin et al.'s affinity), dense, one window at a time."""
    h, w, _ = img.shape
    out = np.zeros((h * w, h * w))
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            idx = [(y + dy) * w + (x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            win = img.reshape(-1, 3)[idx]
            mu = win.mean(0)
            var = win.T @ win / 9 - np.outer(mu, mu)
            proj = (win - mu) @ np.linalg.inv(var + eps / 9 * np.eye(3))
            out[np.ix_(idx, idx)] += (1 + proj @ (win - mu).T) / 9
    return out


def test_exact_smoothing_is_the_closed_form_of_the_official_propagator():
    from evalkit_methods._matting import matting_affinity, propagate

    rng = np.random.default_rng(5)
    content = rng.random((9, 12, 3))
    stylised = np.clip(content[..., ::-1] + 0.1 * rng.standard_normal((9, 12, 3)), 0, 1)
    w = _official_affinity(content)
    np.testing.assert_allclose(matting_affinity(content).toarray(), w, atol=1e-10)
    d = np.diag(w.sum(0) ** -0.5)
    system = np.eye(w.shape[0]) - 0.9999 * d @ w @ d
    reference = (1 - 0.9999) * np.linalg.solve(system, stylised.reshape(-1, 3))
    np.testing.assert_allclose(propagate(stylised, content), reference.reshape(9, 12, 3), atol=1e-9)


def test_exact_smoothing_keeps_the_size_and_runs_out_of_memory_as_a_result(tmp_path, monkeypatch):
    from evalkit_methods._matting import smooth_exact

    from evalkit.results import looks_like_oom

    content = torch.rand(1, 3, 21, 30, generator=torch.Generator().manual_seed(0))
    out = smooth_exact(content.flip(1), content)
    assert out.shape == content.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    monkeypatch.setenv("EVALKIT_MATTING_MAX_BYTES", "1000")
    with pytest.raises(MemoryError) as err:
        smooth_exact(content, content)
    assert looks_like_oom(str(err.value)) and "30x21" in str(err.value)


def test_photowct_post_modes(tmp_path):
    adapter, _, _ = _photowct(tmp_path, seed=2)
    content = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(4))
    out = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(5))
    gif = adapter.postprocess(out, content, **adapter.resolve_params({}))
    exact = adapter.postprocess(out, content, **adapter.resolve_params({"post": "exact"}))
    assert adapter.postprocess(out, content, **adapter.resolve_params({"post": "false"})) is None
    assert gif.shape == exact.shape == out.shape and float((gif - exact).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="post must be one of gif, exact"):
        adapter.resolve_params({"post": "fast"})


# -- PhotoWCT2 --------------------------------------------------------------------------------------------------------
def _photowct2_files(tmp_path: Path, model: str) -> dict[str, Path]:
    files = {}
    for seed, part in enumerate(("encoder", "decoder")):
        index = PW2 / f"ckpts-{model}" / f"{part}.index"
        data = tmp_path / f"{model}-{part}.data-00000-of-00001"
        tf_bundle.write_synthetic_data(index, data, seed=seed)
        files[f"{part}_index"], files[f"{part}_data"] = index, data
    return files


@functools.cache
def _vgg_rows() -> list[dict]:
    with open(PW2 / "vgg_layers.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _nhwc_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A Keras 'valid' Conv2D on NHWC with an HWIO kernel (numpy, sliding windows)."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def _keras_reference(arrays_enc: dict, arrays_dec: dict, image: np.ndarray, model: str) -> np.ndarray:
    """PhotoWCT2's utils/model_<model>.py in NHWC numpy, the encoder built from vgg_layers.csv: encoder blocks 0-3
    then decoder blocks 3-0 with the content's skips (a reconstruction)."""
    outputs = [f"{model}{k}_1" for k in (1, 2, 3, 4)]
    blocks: list[list[dict]] = [[] for _ in range(4)]
    b = 0
    for i, row in enumerate(_vgg_rows()):
        name = "preprocess" if i == 0 else row["name"]
        blocks[b].append({**row, "name": name})
        if name in outputs:
            b += 1
            if b == 4:
                break

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")

    def up(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()

    x, skips = image, []
    for bi, layers in enumerate(blocks):
        conv_i, skip = 0, None
        for row in layers:
            kind = row["_typename"]
            if kind == "nn.SpatialReflectionPadding":
                x = pad(x)
            elif kind == "nn.SpatialConvolution":
                key = f"btnecks/{bi}/layer_with_weights-{conv_i}"
                x = _nhwc_conv(x, arrays_enc[f"{key}/kernel"], arrays_enc[f"{key}/bias"])
                conv_i += 1
            elif kind == "nn.ReLU":
                x = np.maximum(x, 0)
            else:  # AveragePooling2D replaces the max-pooling; the skip is what it discards
                h, w = x.shape[1:3]
                pooled = x[:, : h // 2 * 2, : w // 2 * 2].reshape(1, h // 2, 2, w // 2, 2, -1).mean((2, 4))
                skip = x - up(pooled, (h, w))
                x = pooled
        skips.append(skip)
    for bi in (3, 2, 1, 0):
        n = {0: 1, 1: 2, 2: 2, 3: 4}[bi]
        convs = [
            (
                arrays_dec[f"btnecks/{bi}/layer_with_weights-{i}/kernel"],
                arrays_dec[f"btnecks/{bi}/layer_with_weights-{i}/bias"],
            )
            for i in range(n)
        ]
        if model == "conv":
            x = np.maximum(x, 0)
        if bi == 0:
            x = _nhwc_conv(pad(x), *convs[0])
            break
        x = np.maximum(_nhwc_conv(pad(x), *convs[0]), 0)
        x = up(x, (2 * x.shape[1], 2 * x.shape[2])) + skips[bi]
        for i, conv in enumerate(convs[1:], start=1):
            x = _nhwc_conv(pad(x), *conv)
            if not (model == "conv" and i == n - 1):
                x = np.maximum(x, 0)
    return x


@needs_weights
@mirror
@pytest.mark.parametrize("model", ["relu", "conv"])
def test_photowct2_loads_the_real_index_layout_and_matches_the_keras_model(model, tmp_path, one_thread):
    from evalkit_methods.photowct2 import PhotoWCT2

    files = _photowct2_files(tmp_path, model)
    adapter = PhotoWCT2(model, "cpu", assets=AssetStore(AssetSettings(home=str(tmp_path / "home"))))
    adapter.load(files)
    info = adapter.info()
    # the paper gives 7.05M / 24; the released checkpoints' tensors sum to 7,010,959 (docs/photoreal.md)
    assert (info.parameters, info.layers) == (7_010_959, 24)
    enc = read_tf_checkpoint(files["encoder_index"], files["encoder_data"])
    dec = read_tf_checkpoint(files["decoder_index"], files["decoder_data"])
    np.testing.assert_array_equal(
        adapter.net.enc[3][3].weight.numpy(), enc["btnecks/3/layer_with_weights-3/kernel"].transpose(3, 2, 0, 1)
    )
    image = np.random.default_rng(0).random((1, 16, 24, 3)).astype(np.float64)
    with torch.no_grad():
        net = adapter.net.double()
        ours = net.reconstruct(torch.from_numpy(image).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    reference = _keras_reference(enc, dec, image, model)
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-9 * np.abs(reference).max())


@needs_weights
@mirror
def test_photowct2_pads_to_eight_and_takes_statistics_on_the_valid_region(tmp_path, monkeypatch, one_thread):
    from evalkit_methods import _transforms as T
    from evalkit_methods.photowct2 import PhotoWCT2

    adapter = PhotoWCT2("relu", "cpu", assets=AssetStore(AssetSettings(home=str(tmp_path / "home"))))
    adapter.load(_photowct2_files(tmp_path, "relu"))
    seen = []
    real = T.wct_map

    def spy(content, style, rule, valid=None):
        seen.append((tuple(content.shape[-2:]), valid, rule))
        return real(content, style, rule, valid)

    monkeypatch.setattr(T, "wct_map", spy)
    content = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = adapter.stylize(content, torch.rand(1, 3, 30, 41), **adapter.resolve_params({}))
    assert out.shape == content.shape
    # padded to 40x56; relu4_1 .. relu1_1 maps and the rows/columns of each that cover the 37x50 image
    assert [(s, v) for s, v, _ in seen] == [
        ((5, 7), (5, 7)),
        ((10, 14), (10, 13)),
        ((20, 28), (19, 25)),
        ((40, 56), (37, 50)),
    ]
    assert all(rule == T.PHOTOWCT2_RULE == T.Whitening(1.0, 1.0, False) for *_, rule in seen)


# -- PhotoNAS ---------------------------------------------------------------------------------------------------------
def _photonas(tmp_path):
    from evalkit_methods import _vgg_autoencoders as AE
    from evalkit_methods._vgg_autoencoders import synthetic_state
    from evalkit_methods.photonas import NasDecoder, PhotoNAS

    enc, dec = synthetic_state(AE.build_encoder("official", 5)), synthetic_state(NasDecoder(), seed=1)
    torch.save(enc, tmp_path / "vgg_normalised_conv5_1.pth")
    torch.save(dec, tmp_path / "decoder_epoch_2.pth.tar")
    files = {"encoder": tmp_path / "vgg_normalised_conv5_1.pth", "decoder": tmp_path / "decoder_epoch_2.pth.tar"}
    adapter = PhotoNAS("official", "cpu")
    adapter.load(files)
    return adapter, dec, files


def test_photonas_loads_the_whole_super_network_and_counts_it_as_the_paper(tmp_path):
    from evalkit_methods.photonas import SUPERNET

    adapter, dec, files = _photonas(tmp_path)
    # VGG_with_decoder.py's `decoder`: 16 pyramid 1x1 convs and 19 stage convs, every one in the checkpoint
    assert len(SUPERNET) == 35 and len(dec) == 70
    assert dec["conv_pyramid213.weight"].shape == (512, 1152, 1, 1) and dec["conv27.weight"].shape == (3, 128, 3, 3)
    info = adapter.info()
    assert info.parameters == 40_238_290  # the whole super-network: 12,944,972 (VGG to relu5_1) + 27,293,318
    assert info.extra["parameters_that_run"] == 12_944_972 + 6_140_995
    broken = {k: v for k, v in dec.items() if not k.startswith("conv26.")}
    torch.save(broken, files["decoder"])
    from evalkit_methods.photonas import PhotoNAS

    with pytest.raises(CheckpointError, match=r"lacks key 'conv26\.weight'.*PhotoNAS decoder"):
        PhotoNAS("official").load(files)


def test_photonas_runs_on_any_size_and_normalises_on_the_valid_region(tmp_path):
    from evalkit_methods.photonas import instance_norm

    adapter, _, _ = _photonas(tmp_path)
    x = torch.randn(1, 4, 9, 13, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(instance_norm(x, None), F.instance_norm(x, eps=1e-5))
    padded = F.pad(x, (0, 3, 0, 7), mode="reflect")
    torch.testing.assert_close(instance_norm(padded, (9, 13))[..., :9, :13], F.instance_norm(x, eps=1e-5))
    content = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = adapter.stylize(content, torch.rand(1, 3, 33, 40), **adapter.resolve_params({}))
    assert out.shape == content.shape and torch.isfinite(out).all()


# -- the seed table end to end, on substitute weights ----------------------------------------------------------------
@needs_weights
@mirror
@pytest.mark.slow
def test_speed_protocol_runs_the_seed_systems_on_substitute_weights(tmp_path, monkeypatch):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.store import ResultsStore

    sub = tmp_path / "substitute"
    methods = "photonas,wct2,photowct,photowct2"
    selected = "photonas,wct2[official],wct2[official-sum],photowct,photowct2[relu],photowct2[conv]"
    done = subprocess.run(
        [sys.executable, "scripts/substitute_weights.py", "--out", str(sub), "--methods", methods],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "photowct/photo_wct.pth" in (sub / "SUBSTITUTES.md").read_text()
    root = tmp_path / "results"
    args = ["run", "--protocol", "speed", "--methods", selected, "--res", "96", "--metrics", "", "-r", str(root)]
    args += ["--executor", "local", "--warmup", "0", "--repeats", "1", "--weights-mirror", str(sub), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with ResultsStore.open_reader(root, "test") as store:
        jobs = store.jobs_frame()
        counts = {label: (r["parameters"], r["layers"]) for label, r in store.methods_table().items()}
    assert set(jobs["status"]) == {"ok"} and len(jobs) == 6, jobs[["label", "status", "message"]]
    assert counts["wct2[official]"] == (10_121_871, 24)
    assert counts["photowct[official]"] == (8_349_948, 48)
    assert counts["photowct2[relu]"] == counts["photowct2[conv]"] == (7_010_959, 24)
    assert counts["photonas[official]"][0] == 40_238_290
    assert jobs.set_index("label").loc["photowct[official]", "time_post_s"] > 0  # the GIF, timed as post
    tex = CliRunner().invoke(app, ["speed", "-r", str(root), "--format", "tex"])
    assert tex.exit_code == 0, tex.output
    rows = [line.split(" & ")[0] for line in tex.output.splitlines() if " & " in line][1:]
    assert rows == [
        "photonas[official]",
        "wct2[official]",
        "wct2[official-sum]",
        "photowct[official]",
        "photowct2[conv]",
        "photowct2[relu]",
    ]
    assert r"8.35M & 48 &" in tex.output and r"10.12M & 24 &" in tex.output


@needs_weights
@mirror
@pytest.mark.slow
def test_photoreal_protocol_runs_pca_kd_at_512(tmp_path):
    """``evalkit run --protocol photoreal --methods pca_kd --res 512``: the DPST benchmark on PCA-KD's real weights."""
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.store import ResultsStore

    root = tmp_path / "results"
    args = ["run", "--protocol", "photoreal", "--methods", "pca_kd", "--res", "512", "-r", str(root), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-2000:]
    with ResultsStore.open_reader(root, "test") as store:
        jobs = store.jobs_frame()
        metrics = store.metrics_frame()
    assert len(jobs) == 60 and set(jobs["status"]) == {"ok"} and set(jobs["label"]) == {"pca_kd[vgg]"}
    assert (jobs["time_post_s"] > 0).all()  # the guided filter ran and was timed apart
    values = metrics[metrics["status"] == "ok"].pivot_table(index="pair_id", columns="metric", values="value")
    assert len(values) == 60 and {"ssim", "fsim", "niqe", "brisque", "style_loss", "content_loss"} <= set(values)
    # photorealism: structure kept (SSIM ~0.74 on average; a destroyed output scores ~0.1), values in range
    assert 0.6 < values["ssim"].mean() < 0.9 and values["ssim"].between(0, 1).all()
    assert values["fsim"].mean() > 0.85
