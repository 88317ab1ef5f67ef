"""FID, KID, fid_art and ArtFID: distances against independent implementations (pytorch-fid, torch-fidelity), the
Inception loaders on synthetic files of the official layouts (the real files cannot be downloaded here), and the
set-level path end to end: values from stored features, `unavailable` without weights, a resume that reduces again
from the stored features without any network."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.assets import AssetSettings
from evalkit.errors import CheckpointError
from evalkit.metrics import unpack_state
from evalkit.metrics.fid import frechet_distance, frechet_from_statistics, kernel_distance, statistics
from evalkit.metrics.inception import art_inception, fid_inception, load_art_inception, load_fid_inception, pool3
from evalkit.runner import RunRequest, run_benchmark
from tests.test_runner import _gradient, _save, write_protocol


@pytest.mark.parametrize("n1,n2,d", [(40, 30, 64), (300, 250, 16), (12, 12, 2048)])
def test_frechet_distance_equals_pytorch_fid(n1, n2, d):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n1 + d)
    x = rng.normal(size=(n1, d)) + 0.3
    y = rng.normal(size=(n2, d)) * 1.5
    expected = calculate_frechet_distance(*statistics(x), *statistics(y))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_from_statistics(*statistics(x), *statistics(y)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n1,n2", [(60, 45), (30, 30)])
def test_kernel_distance_equals_torch_fidelity(n1, n2):
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(n1)
    x, y = rng.normal(size=(n1, 32)), rng.normal(size=(n2, 32)) + 0.2
    m = min(n1, n2)
    expected = kid_features_to_metric(
        torch.from_numpy(x), torch.from_numpy(y), kid_subsets=100, kid_subset_size=m, rng_seed=2020, verbose=False
    )["kernel_inception_distance_mean"]
    assert kernel_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_the_inception_loaders_read_the_official_layouts_and_refuse_others(tmp_path):
    torch.manual_seed(0)
    fid_file = tmp_path / "pt_inception.pth"
    torch.save(fid_inception().state_dict(), fid_file)
    net = load_fid_inception(fid_file)
    assert pool3(net, torch.rand(1, 3, 299, 299)).shape == (1, 2048)

    art = art_inception().state_dict()  # ArtFID's file: torchvision's layout with two heads of each kind
    heads = {
        f"fc{i}.{p}": torch.zeros(1000, 2048) if p == "weight" else torch.zeros(1000)
        for i in (1, 2)
        for p in ("weight", "bias")
    }
    art_file = tmp_path / "art_inception.pth"
    torch.save({**art, **heads, "AuxLogits1.fc.weight": torch.zeros(1000, 768)}, art_file)
    assert pool3(load_art_inception(art_file), torch.rand(1, 3, 320, 280)).shape == (1, 2048)

    broken = {k: v for k, v in art.items() if not k.startswith("Mixed_7c")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as caught:
        load_art_inception(tmp_path / "broken.pth")
    assert "Mixed_7c" in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture
def small(tmp_path):
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    images = {
        s: _save(mirror / "t" / f"{s}.img", _gradient(40, 40).rotate(a), format="PNG")
        for s, a in (("s0", 30), ("s1", 120))
    }
    for i in range(5):
        images[f"c{i}"] = _save(mirror / "t" / f"c{i}.img", _gradient().rotate(i * 60), format="PNG")
    protocol = write_protocol(tmp_path, images, [(f"p{i}", f"c{i}", f"s{i % 2}") for i in range(5)])
    return protocol, mirror


def _set_rows(root: Path) -> dict[str, tuple]:
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        rows = conn.execute("SELECT metric, status, value, lower, upper, message, computed FROM set_metrics")
        return {r[0]: r[1:] for r in rows}


def test_fid_and_kid_end_to_end_from_stored_features(small, tmp_path):
    protocol, mirror = small
    weights = tmp_path / "weights"
    (weights / "inception").mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(fid_inception().state_dict(), weights / "inception" / "pt_inception-2015-12-05-6726825d.pth")
    out = tmp_path / "results"
    home = os.environ["EVALKIT_HOME"]

    def run(weights_mirror: Path | None):
        return run_benchmark(
            RunRequest(
                protocol=str(protocol),
                methods=["reinhard", "identity"],
                out=out,
                metrics=["fid", "kid"],
                progress=False,
                assets=AssetSettings(home=home, data_mirror=str(mirror), weights_mirror=str(weights_mirror or "")),
            )
        )

    run(weights)
    rows = _set_rows(out)
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        label_rows = conn.execute("SELECT label, metric, value FROM set_metrics").fetchall()
        states = conn.execute(
            "SELECT j.label, j.style, s.state FROM metric_states s JOIN jobs j USING(job_key) WHERE s.metric='fid'"
        ).fetchall()
    assert {status for status, *_ in rows.values()} == {"ok"} and len(label_rows) == 4
    from pytorch_fid.fid_score import calculate_frechet_distance

    for label in ("reinhard", "identity"):
        x = np.stack([unpack_state(s) for lab, _, s in states if lab == label])
        style_of = {lab_style for lab, lab_style, _ in states if lab == label}
        assert len(x) == 5 and style_of == {"s0", "s1"}
        y = np.stack([unpack_state(v) for v in _style_refs(out, label)])
        want = calculate_frechet_distance(*statistics(x), *statistics(y))
        got = next(v for lab, m, v in label_rows if lab == label and m == "fid")
        assert got == pytest.approx(want, rel=1e-6)
        value, lower, upper = next(r for lab, m, *r in _all(out) if lab == label and m == "fid")
        assert lower is not None and lower <= value <= upper

    # the set-level value is rebuilt from stored features alone: no network (no weights) is needed to reduce again
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        conn.execute("DELETE FROM set_metrics")
    run(None)
    again = _set_rows(out)
    assert {m: r[1] for m, r in again.items()} == {m: r[1] for m, r in rows.items()}


def _style_refs(root: Path, label: str) -> list[bytes]:
    """The style image state of each of the label's jobs, one per job (FID's reference set of the same pairs)."""
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        jobs = conn.execute("SELECT spec FROM jobs WHERE label=? ORDER BY pair_id", (label,)).fetchall()
        refs = dict(conn.execute("SELECT image_key, state FROM reference_states WHERE metric='fid'").fetchall())
    import json

    from evalkit.specs import JobSpec

    return [refs[JobSpec.from_dict(json.loads(spec)).reference_key("style")] for (spec,) in jobs]


def _all(root: Path) -> list[tuple]:
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        return conn.execute("SELECT label, metric, value, lower, upper FROM set_metrics").fetchall()


def test_without_weights_fid_is_recorded_unavailable_never_made_up(small, tmp_path):
    protocol, mirror = small
    out = tmp_path / "results"
    summary = run_benchmark(
        RunRequest(
            protocol=str(protocol),
            methods=["identity"],
            out=out,
            metrics=["fid", "fid_art", "content_loss"],
            progress=False,
            assets=AssetSettings(
                home=os.environ["EVALKIT_HOME"],
                data_mirror=str(mirror),
                weights_mirror=str(tmp_path / "none"),
                allow_download=False,
            ),
        )
    )
    assert summary.counts == {"ok": 5}
    rows = _set_rows(out)
    assert {m: r[0] for m, r in rows.items()} == {"fid": "unavailable", "fid_art": "unavailable"}
    assert all(r[1] is None for r in rows.values())
    assert "pt_inception" in rows["fid"][4] and "art_inception" in rows["fid_art"][4]


def test_artfid_combines_mean_lpips_and_the_art_fid_as_wright_and_ommer_define_it():
    from evalkit.metrics.fid import ArtFID

    rng = np.random.default_rng(3)
    features, styles = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 0.5
    lpips = rng.uniform(0.2, 0.6, size=30)
    states = [np.concatenate([f, [d]]) for f, d in zip(features, lpips, strict=True)]
    metric = ArtFID("cpu")
    expected = (1 + lpips.mean()) * (1 + frechet_distance(features, styles))
    assert metric.reduce(states, list(styles)) == pytest.approx(expected, rel=1e-12)
    assert metric.info.level == "set" and not metric.info.higher_is_better
