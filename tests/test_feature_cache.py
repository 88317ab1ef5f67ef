"""Reference images' network products are kept on disk, keyed by image, network weights and products: a new
process (a later job, method or run) reuses them without a network pass, with identical values."""

from __future__ import annotations

import torch

from evalkit.assets import AssetStore
from evalkit.metrics import EvalSample, MetricSuite
from evalkit.metrics.features import FeatureProvider


def test_reference_products_are_reused_from_disk_by_a_new_provider(tmp_path):
    gen = torch.Generator().manual_seed(0)
    content, style, out = (torch.rand(1, 3, 40, 48, generator=gen) for _ in range(3))
    store = AssetStore.from_env()
    first = FeatureProvider("cpu", store, cache_dir=tmp_path)
    grams = first.grams("img:s", style, "style")
    layer = first.features("img:c", content, "content")
    assert first.vgg_passes == 2 and first.disk_hits == 0
    second = FeatureProvider("cpu", store, cache_dir=tmp_path)
    again = second.grams("img:s", style, "style")
    assert second.disk_hits == 1 and second.vgg_passes == 0
    assert all(torch.equal(grams[k], again[k]) for k in grams)
    assert torch.equal(second.features("img:c", content, "content")["conv4_2"], layer["conv4_2"])
    second.grams("out", out, "output")  # outputs are never cached on disk
    assert second.vgg_passes == 1 and len(list(tmp_path.rglob("products.pt"))) == 2


def test_a_suite_with_the_cache_gives_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_HOME", str(tmp_path))
    gen = torch.Generator().manual_seed(1)
    content, style, out = (torch.rand(1, 3, 48, 48, generator=gen) for _ in range(3))
    sample = EvalSample(out, content, style, "o", "img:c", "img:s")
    names = ["content_loss", "style_loss", "style_loss_meanstd"]
    plain = MetricSuite(names, "cpu", AssetStore.from_env()).evaluate(sample)
    MetricSuite(names, "cpu", AssetStore.from_env(), feature_cache=True).evaluate(sample)  # fills the cache
    cached_suite = MetricSuite(names, "cpu", AssetStore.from_env(), feature_cache=True)
    cached = cached_suite.evaluate(sample)
    assert cached_suite.features.disk_hits == 2 and cached_suite.features.vgg_passes == 1
    assert [v.value for v in cached] == [v.value for v in plain]
