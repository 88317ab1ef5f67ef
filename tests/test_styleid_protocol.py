"""protocols/styleid.toml: StyleID's 20 contents x 40 styles, all 800 pairs, pinned to the released commit."""

from __future__ import annotations

import itertools
import re

import pytest

from evalkit.assets import AssetStore
from evalkit.metrics import metric_names
from evalkit.protocol import load_protocol
from tests.conftest import needs_data, needs_weights

COMMIT = "35436fc75bbc9176259f3f5ce33853eb9f95a8ad"
CONTENTS = [f"c{i:02d}" for i in range(20)]
STYLES = [f"s{i:02d}" for i in range(40)]


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("styleid")


def test_settings(protocol):
    assert protocol.name == "styleid"
    assert protocol.resolutions == ["512"] and protocol.style_size == 512 and protocol.eval_size == 512
    assert protocol.methods == ["adain[cd16x]", "wct[cd16x]", "microast", "efdm[cd16x]"]
    # StyleID's table first, in its column order (ArtFID, FID on the art Inception, LPIPS, CFSD, histogram loss)
    assert protocol.metrics[:5] == ["artfid", "fid_art", "lpips", "cfsd", "hist_loss"]
    assert {"fid", "content_loss", "style_loss", "cfsd_caffe"} <= set(protocol.metrics)
    assert set(protocol.metrics) <= set(metric_names())


def test_every_content_with_every_style_exactly_once(protocol):
    assert sorted(k for k in protocol.images if k.startswith("c")) == CONTENTS
    assert sorted(k for k in protocol.images if k.startswith("s")) == STYLES
    assert len(protocol.images) == 60 and len(protocol.pairs) == 800
    combos = [(p.content, p.style) for p in protocol.pairs]
    assert sorted(combos) == sorted(itertools.product(CONTENTS, STYLES))
    assert all(p.id == f"{p.content}-{p.style}" for p in protocol.pairs)
    assert all(p.content_mask is None and p.style_mask is None for p in protocol.pairs)


def test_images_are_pinned_to_the_released_commit(protocol):
    for image_id, asset in protocol.images.items():
        kind, stem = ("cnt" if image_id.startswith("c") else "sty"), image_id[1:]
        assert asset.kind == "data" and asset.name == f"styleid/{kind}/{stem}.png", image_id
        assert asset.url == f"https://raw.githubusercontent.com/jiwoogit/StyleID/{COMMIT}/data/{kind}/{stem}.png"
        assert asset.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", asset.sha256), image_id
    assert len({a.sha256 for a in protocol.images.values()}) == 60  # 60 distinct files


@needs_weights
@pytest.mark.mirror
def test_plans_every_method_on_every_pair(protocol):
    from evalkit.planner import PlanRequest, plan_jobs

    plan = plan_jobs(protocol, PlanRequest(), AssetStore.from_env())
    assert plan.errors == []
    assert list(plan.methods) == ["adain[cd16x]", "wct[cd16x]", "microast[official]", "efdm[cd16x]"]
    assert len(plan.jobs) == 4 * 800 and {(j.resolution, j.eval_size) for j in plan.jobs} == {("512", 512)}


@needs_data
@pytest.mark.mirror
def test_every_image_resolves_through_the_data_mirror_with_its_sha256(protocol, tmp_path):
    """``locate`` checks the sha256 of the mirror copy (a wrong file raises); an empty home means the mirror's copy
    is the one found and verified, not a cached one."""
    store = AssetStore.from_env(home=str(tmp_path / "home"), allow_download=False)
    for image_id, asset in protocol.images.items():
        found = store.locate(asset)
        assert found is not None and found.source == "mirror", image_id
        assert store.digest(found.path) == asset.sha256
