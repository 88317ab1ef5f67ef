"""Protocol parsing, job keys, method selectors, and the torchvision VGG-19 layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evalkit.errors import ProtocolError
from evalkit.protocol import list_protocols, load_protocol, parse_protocol
from evalkit.registry import MethodSelector, split_selectors
from evalkit.specs import JobSpec
from evalkit.vgg import CONV_NAMES, torchvision_state


def _spec(**kw) -> JobSpec:
    base = dict(
        method="m",
        weight_set="w",
        params={"a": 1},
        pair_id="p",
        resolution="512",
        seed=0,
        content="c",
        style="s",
        content_mask=None,
        style_mask=None,
        style_size=512,
        eval_size=512,
        method_version="1",
        weight_digests={"net": "aa"},
        image_digests={"content": "bb", "style": "cc"},
    )
    base.update(kw)
    return JobSpec(**base).with_key()


def test_job_key_is_stable_and_sensitive_to_what_determines_the_output():
    key = _spec().key
    assert _spec().key == key
    for change in (
        {"params": {"a": 2}},
        {"weight_digests": {"net": "ab"}},
        {"image_digests": {"content": "bx"}},
        {"resolution": "1k"},
        {"seed": 1},
        {"method_version": "2"},
        {"weight_set": "v"},
    ):
        assert _spec(**change).key != key, change
    assert _spec(eval_size=256).key == key  # scoring at another size must not re-stylize
    assert JobSpec.from_dict(dataclasses.asdict(_spec())) == _spec()


def test_shipped_protocols_parse_and_pin_every_image():
    names = list_protocols()
    assert {"quick", "artistic", "photoreal", "speed"} <= set(names)
    photoreal = load_protocol("photoreal")
    assert len(photoreal.pairs) == 60 and all(p.content_mask and p.style_mask for p in photoreal.pairs)
    artistic = load_protocol("artistic")
    assert {p.content for p in artistic.pairs} == {k for k in artistic.images if k.startswith("c_")}
    assert {p.style for p in artistic.pairs} == {k for k in artistic.images if k.startswith("s_")}
    assert load_protocol("speed").resolutions == ["1k", "hd", "fhd", "qhd", "4k"]
    for proto in map(load_protocol, names):
        assert all(len(a.sha256 or "") == 64 for a in proto.images.values()), proto.name


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"images": {"a": {"mirror": "x"}}}, "has no sha256"),
        ({"images": {"a": {"sha256": "0" * 64}}}, "nowhere to get it"),
        ({"images": {}, "pairs": [{"id": "p", "content": "a", "style": "b"}]}, "unknown image 'a'"),
        ({"resolutions": ["8k"]}, "unknown resolution"),
    ],
)
def test_malformed_protocols_are_clear_errors(raw, message):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(raw, source="bad.toml")


def test_method_selectors():
    assert MethodSelector.parse("adain[cd16x]") == MethodSelector("adain", "cd16x")
    assert MethodSelector.parse(" wct ") == MethodSelector("wct", None)
    assert split_selectors("gatys,adain[cd16x], wct[official-l3]") == ["gatys", "adain[cd16x]", "wct[official-l3]"]


def test_torchvision_vgg19_layout_is_mapped(tmp_path):
    """A synthetic state dict with exactly torchvision's vgg19 `features.N` keys and shapes maps onto conv names."""
    indices = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    channels = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    state = {}
    for idx, (cin, cout) in zip(indices, channels, strict=True):
        state[f"features.{idx}.weight"] = torch.full((cout, cin, 3, 3), float(idx))
        state[f"features.{idx}.bias"] = torch.full((cout,), float(idx))
    state["classifier.0.weight"] = torch.zeros(4096, 25088)
    torch.save(state, tmp_path / "vgg19.pth")
    mapped = torchvision_state(tmp_path / "vgg19.pth")
    assert [float(mapped[f"{n}.weight"][0, 0, 0, 0]) for n in CONV_NAMES] == [float(i) for i in indices]
