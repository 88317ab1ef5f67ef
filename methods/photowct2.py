"""PhotoWCT2: Chiu & Gurari, "PhotoWCT2: Compact Autoencoder for Photorealistic Style Transfer Resulting from
Blockwise Training and Skip Connections of High-Frequency Residuals", WACV 2022 (chiutaiyin/PhotoWCT2).

A VGG-19 encoder to relu4_1 (``relu`` model) or conv4_1 (``conv`` model) whose max-poolings are replaced by average
pooling, each pooling also emitting the high-frequency residual ``x - resize(pool(x))`` as a skip; a decoder trained
block by block, each block inverting one encoder block and adding the skip after its upsampling. Stylisation is the
authors' demo (``relu_demo.ipynb`` / ``conv_demo.ipynb``): ZCA (covariance / N, ``+ I`` for content and style) at the
bottleneck, then again after decoder blocks 3, 2 and 1, i.e. at the reproduced relu3_1/relu2_1/relu1_1 (or
conv3_1/conv2_1/conv1_1) against the style's encoder features of that layer; output clipped to [0, 1]; then the
guided filter of the authors' ``GIFSmoothing(r=50, eps=(0.02*255)**2)``, timed as ``post``.

The two models differ only in where a block ends: ``conv`` blocks end at the convolution, so every encoder block but
the first starts with the previous layer's ReLU, every decoder block starts with a ReLU and its last conv has no
activation (the decoder reproduces pre-activation features).

Where evalkit differs from the demo (docs/photoreal.md): the content is reflection-padded to a multiple of 8 (the demo
resizes it down to one), with every statistic taken over the feature positions that cover the image; the style is
used at its own size (only its encoder features are needed); the guided filter gets the float output, not its 8-bit
truncation.

Weights: ``ckpts/ckpts-{conv,relu}/{encoder,decoder}`` TF2 checkpoints at the pinned commit; the ``.index`` files are
pinned by sha256, the 14 MB data files are pinned on first download (their upstream sha256 is not known here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _transforms as T
from evalkit_methods._keras_convs import ConvName, SkipAutoencoder, block_names, load_convs, read_parts
from evalkit_methods._smoothing import gif_params, gif_postprocess
from evalkit_methods._vgg_autoencoders import pad_to_multiple

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_parameters
from evalkit.assets import Asset
from evalkit.weights import WeightSet

PHOTOWCT2_COMMIT = "834a7701769de1cf0d7b6cee250f583f4cca1e8f"
_RAW = f"https://raw.githubusercontent.com/chiutaiyin/PhotoWCT2/{PHOTOWCT2_COMMIT}/ckpts"
DATA = "data-00000-of-00001"
INDEX_SHA256 = {  # ../shared/weights/SOURCES.md
    ("conv", "encoder"): "79f1640320dc424e368c5ad766cd47f2e4f9a22d06de3a3973a5dbc4b104716e",
    ("conv", "decoder"): "7abb20d5f373053a4eb529f0c6ae5520c376519b0bdd820235cbe3c2fa142314",
    ("relu", "encoder"): "f8c71851236e7e6b24d6695bb4f83a4e210d18eed12a65a07aca7678fa9db639",
    ("relu", "decoder"): "378d29539e198d426cde22de6143953fd8ba215092a779225426b171ccb5666d",
}
DATA_SIZE = {"encoder": 14_022_960, "decoder": 14_020_876}  # what the index files imply
CHANNELS = (64, 128, 256, 512)  # relu1_1 ... relu4_1
MULTIPLE = 8  # three poolings


def checkpoint_files(model: str) -> dict[str, Asset]:
    out = {}
    for part in ("encoder", "decoder"):
        folder = f"ckpts-{model}"
        out[f"{part}_index"] = Asset(
            f"photowct2/{folder}/{part}.index", INDEX_SHA256[(model, part)], url=f"{_RAW}/{folder}/{part}.index"
        )
        out[f"{part}_data"] = Asset(
            f"photowct2/{folder}/{part}.{DATA}", None, url=f"{_RAW}/{folder}/{part}.{DATA}", size=DATA_SIZE[part]
        )
    return out


WEIGHT_SETS: dict[str, WeightSet] = {
    "relu": WeightSet(
        "relu",
        checkpoint_files("relu"),
        f"chiutaiyin/PhotoWCT2@{PHOTOWCT2_COMMIT} ckpts-relu: ZCA at relu4_1..relu1_1 (the paper's model)",
        official=True,
    ),
    "conv": WeightSet(
        "conv",
        checkpoint_files("conv"),
        f"chiutaiyin/PhotoWCT2@{PHOTOWCT2_COMMIT} ckpts-conv: ZCA at conv4_1..conv1_1",
        official=True,
    ),
}


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k)


def _pad(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="reflect")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # tf.image.resize / Keras UpSampling2D(interpolation='bilinear'): half-pixel centres, no antialiasing
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pool_with_residual(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average pooling and the high-frequency residual it discards: ``x - resize(pool(x), size(x))``."""
    pooled = F.avg_pool2d(x, 2)
    return pooled, x - _resize(pooled, (x.shape[-2], x.shape[-1]))


class PhotoWCT2Net(SkipAutoencoder):
    """Encoder (``enc[b]``: VGG-19 block b, its layer table) and blockwise decoder (``dec[b]``) of one model."""

    def __init__(self, model: str) -> None:
        super().__init__()
        if model not in ("conv", "relu"):
            raise ValueError(f"PhotoWCT2 model must be 'conv' or 'relu', got {model!r}")
        self.model = model
        a, b, c, d = CHANNELS
        self.enc = nn.ModuleList(
            [
                nn.ModuleList([_conv(3, 3, 1), _conv(3, a)]),  # preprocess | conv1_1
                nn.ModuleList([_conv(a, a), _conv(a, b)]),  # conv1_2 | pool | conv2_1
                nn.ModuleList([_conv(b, b), _conv(b, c)]),  # conv2_2 | pool | conv3_1
                nn.ModuleList([_conv(c, c), _conv(c, c), _conv(c, c), _conv(c, d)]),  # conv3_2-3_4 | pool | conv4_1
            ]
        )
        self.dec = nn.ModuleList(
            [
                nn.ModuleList([_conv(a, 3)]),
                nn.ModuleList([_conv(b, a), _conv(a, a)]),
                nn.ModuleList([_conv(c, b), _conv(b, b)]),
                nn.ModuleList([_conv(d, c), _conv(c, c), _conv(c, c), _conv(c, c)]),
            ]
        )
        self.names: list[ConvName] = block_names("enc", self.enc) + block_names("dec", self.dec)

    def encode(self, block: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block ``block``'s output and its skip (``None`` for block 0, which has no pooling)."""
        convs = self.enc[block]
        relu_last = self.model == "relu"
        if block == 0:
            x = convs[1](_pad(convs[0](x)))
            return (F.relu(x) if relu_last else x), None
        if not relu_last:  # a conv block starts with the ReLU of the previous block's last conv
            x = F.relu(x)
        for conv in convs[:-1]:
            x = F.relu(conv(_pad(x)))
        x, skip = pool_with_residual(x)
        x = convs[-1](_pad(x))
        return (F.relu(x) if relu_last else x), skip

    def decode(self, block: int, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        convs = self.dec[block]
        conv_model = self.model == "conv"
        if conv_model:
            x = F.relu(x)
        if block == 0:
            return convs[0](_pad(x))
        x = F.relu(convs[0](_pad(x)))
        x = _resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        assert skip is not None
        x = x + skip
        for i, conv in enumerate(convs[1:], start=1):
            x = conv(_pad(x))
            if not (conv_model and i == len(convs) - 1):
                x = F.relu(x)
        return x


def _part_of(attr: str) -> str:
    return "encoder" if attr.startswith("enc") else "decoder"


class PhotoWCT2(MethodAdapter):
    name = "photowct2"
    kind = "photorealistic"
    version = "1"
    description = (
        "PhotoWCT2: blockwise-trained VGG-19 autoencoder with high-frequency residual skips, ZCA at "
        "relu4_1..relu1_1 (or conv4_1..conv1_1) + guided-filter smoothing"
    )
    citation = (
        "Chiu & Gurari. PhotoWCT2: Compact Autoencoder for Photorealistic Style Transfer Resulting from Blockwise "
        "Training and Skip Connections of High-Frequency Residuals. WACV 2022"
    )
    weight_sets = WEIGHT_SETS
    params = {
        "alpha": Param(
            1.0, "blend of transformed and content features at every level (authors: 1, no blend)", low=0, high=1
        ),
        **gif_params(50),
    }

    def load(self, files: dict[str, Path]) -> None:
        model = self.weight_set or "relu"
        net = PhotoWCT2Net(model)
        parts = read_parts(self.assets, f"photowct2-{model}", files)
        load_convs(net, net.names, parts, _part_of, f"PhotoWCT2 {model} model")
        self.net = net.to(self.device).eval().requires_grad_(False)

    def info(self) -> LoadedInfo:
        # the paper's convention (docs/photoreal.md): weight layers without the 1x1 input-normalisation conv, plus
        # the three poolings and three upsamplings; parameters: every tensor of the checkpoints
        convs = sum(1 for m in self.net.modules() if isinstance(m, nn.Conv2d)) - 1
        return LoadedInfo(count_parameters(self.net), convs + 6, {"model": self.net.model, "weight_layers": convs + 1})

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        alpha = float(params["alpha"])
        size = (int(content.shape[-2]), int(content.shape[-1]))
        c_feats, c_skips = self.net.encode_all(pad_to_multiple(content, MULTIPLE))
        s_feats, _ = self.net.encode_all(style)
        x = c_feats[3]
        for block in (3, 2, 1, 0):
            valid = T.valid_extent(size, 2**block)
            x = T.blend(T.wct_map(x, s_feats[block], T.PHOTOWCT2_RULE, valid), x, alpha)
            x = self.net.decode(block, x, c_skips[block])
        return x[..., : size[0], : size[1]].clamp(0, 1)

    def postprocess(self, output: torch.Tensor, content: torch.Tensor, **params: Any) -> torch.Tensor | None:
        return gif_postprocess(output, content, params)
