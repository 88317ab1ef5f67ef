"""PCA-distilled photorealistic style transfer: Chiu & Gurari, "PCA-Based Knowledge Distillation Towards
Lightweight and Content-Style Balanced Photorealistic Style Transfer Models", CVPR 2022 (successor of
PhotoWCT2).

A small student encoder (VGG-19 to relu4_1 with widths 10/20/58/64, or MobileNet to conv_dw_6 with widths
10/19/37/54) is distilled onto the PCA eigenbases of the teacher's features; a mirrored decoder with high-frequency
skips (``x - mean3x3(x)`` of each encoder block's input) inverts it. Stylisation follows the authors' demo
(chiutaiyin/PCA-Knowledge-Distillation ``demo.ipynb``): ZCA whitening-colouring (covariance / N, ``+ I``
regulariser) at the bottleneck, then again after every decoder block against the style's features of that level,
output clipped to [0, 1], then OpenCV's guided filter (guide = content, r = 30, eps = (0.02*255)^2 on 0-255 images),
the smoothing the paper's timing table counts separately (``network+smoothing``); here it is :meth:`postprocess`.

Weights: the authors' TF2 checkpoints (``sencoder``/``sdecoder`` ``.index`` + ``.data-00000-of-00001`` at the pinned
commit, sha256 from the upstream files), downloaded or served by the weights mirror, read without TensorFlow
(:mod:`evalkit.tf_bundle`) and converted once into ``$EVALKIT_HOME/derived``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _photo_wct
from evalkit_methods import _transforms as T
from evalkit_methods._keras_convs import Arrays, ConvName, SkipAutoencoder, block_names, load_convs, read_parts
from evalkit_methods._smoothing import gif_params, gif_postprocess

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.assets import Asset
from evalkit.weights import WeightSet

PCA_KD_COMMIT = "658d4a247b1aed87b9b3f19d8f8ae555e29fe31b"
_REPO = f"chiutaiyin/PCA-Knowledge-Distillation@{PCA_KD_COMMIT}"
_RAW = f"https://raw.githubusercontent.com/chiutaiyin/PCA-Knowledge-Distillation/{PCA_KD_COMMIT}"
_FOLDER = {"vgg": "VGG%20backbone", "mobilenet": "MobileNet%20backbone"}  # URL-encoded "VGG backbone"
DATA = "data-00000-of-00001"
# upstream sha256 of every checkpoint file (../shared/weights/SOURCES.md)
SHA256: dict[tuple[str, str], str] = {
    ("vgg", "sencoder.index"): "bf75ea1e263e502df3650616313ab15b2735b47e0cd4d682e9615fc8e370f9a6",
    ("vgg", f"sencoder.{DATA}"): "58622ade9d59acb9c179d2d9b42a32d45bdccc363629f17e50c87c8d8d2018b1",
    ("vgg", "sdecoder.index"): "d419d740b9e2d8226da355e794983849a3f6d202242457e619943e1e6a583d13",
    ("vgg", f"sdecoder.{DATA}"): "b4674b6277ceb87856b2a02ed9324de0be6705ff18441fc549e8e209df043f11",
    ("mobilenet", "sencoder.index"): "e85c43392d569ed90e13ff3d1cb6be7751006516eeaee7ef0f140639dc67e1cd",
    ("mobilenet", f"sencoder.{DATA}"): "4051956140138f9dbe15a37e45355f8aa934168d08b7faf7cfdcd554a1c46bf5",
    ("mobilenet", "sdecoder.index"): "4a8dab4cd0b966b5aa5edee47db1af71f970349e437ea86f60c824332fc9abc4",
    ("mobilenet", f"sdecoder.{DATA}"): "7624fd585e5ef34264c4fc704e5725c3106349e3bf46fbd51495e6fa8e880d5a",
}
SIZES: dict[tuple[str, str], int] = {
    ("vgg", "sencoder.index"): 1742,
    ("vgg", f"sencoder.{DATA}"): 773240,
    ("vgg", "sdecoder.index"): 1381,
    ("vgg", f"sdecoder.{DATA}"): 569293,
    ("mobilenet", "sencoder.index"): 1981,
    ("mobilenet", f"sencoder.{DATA}"): 124432,
    ("mobilenet", "sdecoder.index"): 1098,
    ("mobilenet", f"sdecoder.{DATA}"): 174158,
}


def checkpoint_files(backbone: str) -> dict[str, Asset]:
    """The four upstream files of one student: role (``encoder_index`` ...) -> asset in the mirror's layout."""
    out = {}
    for role, stem in (("encoder", "sencoder"), ("decoder", "sdecoder")):
        for part, suffix in (("index", "index"), ("data", DATA)):
            fname = f"{stem}.{suffix}"
            out[f"{role}_{part}"] = Asset(
                name=f"pca_kd/{backbone}/{fname}",
                sha256=SHA256[(backbone, fname)],
                kind="weights",
                url=f"{_RAW}/{_FOLDER[backbone]}/ckpts/{fname}",
                size=SIZES[(backbone, fname)],
            )
    return out


WEIGHT_SETS: dict[str, WeightSet] = {
    "vgg": WeightSet(
        "vgg",
        checkpoint_files("vgg"),
        f"VGG-19 student (widths 10/20/58/64), {_REPO} 'VGG backbone/ckpts' (TF2 checkpoints)",
        official=True,
    ),
    "mobilenet": WeightSet(
        "mobilenet",
        checkpoint_files("mobilenet"),
        f"MobileNet student (widths 10/19/37/54), {_REPO} 'MobileNet backbone/ckpts' (TF2 checkpoints)",
        official=True,
    ),
}


# -- building blocks
# -------------------------------------------------------------------------------------------
def _pad(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="reflect")


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    """``x - mean3x3(x)`` with TF 'SYMMETRIC' padding (for a 1-pixel pad identical to edge replication)."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _up(x: torch.Tensor) -> torch.Tensor:
    # Keras UpSampling2D(interpolation='bilinear') = tf.image.resize bilinear, half-pixel centres.
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=0, groups=groups)


class Student(SkipAutoencoder):
    """Encoder blocks + decoder blocks with a TF-name map; subclasses define the two architectures."""

    multiple = 8
    resampling = 6  # for the speed table's layer count: VGG: 3 max-poolings + 3 upsamplings
    names: list[ConvName]  # (TF object path, module attribute path, depthwise) per conv, filled by subclasses

    def load_arrays(self, parts: dict[str, tuple[Arrays, str]], what: str) -> None:
        """Copy the checkpoints' tensors in; ``conv_aux/*`` (the distillation projections onto the teacher's
        eigenbases) are unused at inference and left out."""
        load_convs(self, self.names, parts, _part_of, what, ignore=lambda key: key.startswith("conv_aux/"))


def _part_of(attr: str) -> str:
    return "encoder" if attr.startswith("enc") else "decoder"


class VggStudent(Student):
    """VGG-19 student to relu4_1 (chiutaiyin 'VGG backbone/utils/lightweight_model.py', widths
    10/20/58/64)."""

    multiple = 8

    def __init__(self, widths: tuple[int, int, int, int] = (10, 20, 58, 64)) -> None:
        super().__init__()
        a, b, c, d = widths
        self.enc = nn.ModuleList(
            [
                nn.ModuleList([_conv(3, 3, 1), _conv(3, a)]),  # preprocess, conv1_1
                nn.ModuleList([_conv(a, a), _conv(a, b)]),  # conv1_2 | pool | conv2_1
                nn.ModuleList([_conv(b, b), _conv(b, c)]),  # conv2_2 | pool | conv3_1
                nn.ModuleList([_conv(c, c), _conv(c, c), _conv(c, c), _conv(c, d)]),  # conv3_2..3_4 | pool | 4_1
            ]
        )
        self.dec = nn.ModuleList(
            [
                nn.ModuleList([_conv(a + 3, 3)]),
                nn.ModuleList([_conv(b, a), _conv(a, a)]),
                nn.ModuleList([_conv(c, b), _conv(b, b)]),
                nn.ModuleList([_conv(d, c), _conv(c, c), _conv(c, c), _conv(c, c)]),
            ]
        )
        self.names = block_names("enc", self.enc) + block_names("dec", self.dec)

    def encode(self, block: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = high_frequency(x)
        convs = self.enc[block]
        if block == 0:
            x = F.relu(convs[1](_pad(convs[0](x))))
        elif block in (1, 2):
            x = F.max_pool2d(F.relu(convs[0](_pad(x))), 2)
            x = F.relu(convs[1](_pad(x)))
        else:
            for conv in convs[:3]:
                x = F.relu(conv(_pad(x)))
            x = F.relu(convs[3](_pad(F.max_pool2d(x, 2))))
        return x, skip

    def decode(self, block: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        convs = self.dec[block]
        if block == 0:
            return convs[0](_pad(torch.cat([x, skip], 1)))
        x = _up(F.relu(convs[0](_pad(x))))
        for conv in convs[1:-1]:
            x = F.relu(conv(_pad(x)))
        return F.relu(convs[-1](_pad(x + skip)))


class MobileNetStudent(Student):
    """MobileNet-v1 student to conv_dw_6 (chiutaiyin 'MobileNet backbone/utils/lightweight_model.py').

    Keras MobileNet layers in order, BatchNorms dropped, ReLU6 -> ReLU, zero padding -> reflect: conv1 3x3/2,
    then depthwise-separable pairs dw_k (3x3, stride 2 for k = 2, 4, 6, padded bottom/right by one) + pw_k
    (1x1).
    Block outputs: conv1_relu (10, H/2), conv_dw_2_relu (19, H/4), conv_dw_4_relu (37, H/8), conv_dw_6_relu
    (54, H/16).
    """

    multiple = 16
    resampling = 4  # the 4 decoder upsamplings (the encoder downsamples with strided convs)
    DW_STRIDE = {1: 1, 2: 2, 3: 1, 4: 2, 5: 1, 6: 2}

    def __init__(self, widths: tuple[int, int, int, int] = (10, 19, 37, 54)) -> None:
        super().__init__()
        a, b, c, d = widths
        # 12 weight layers in Keras order (layer_with_weights-0..11)
        specs = [
            ("conv1", 3, a, 3, 2, 1),
            ("dw1", a, a, 3, 1, a),
            ("pw1", a, b, 1, 1, 1),
            ("dw2", b, b, 3, 2, b),
            ("pw2", b, c, 1, 1, 1),
            ("dw3", c, c, 3, 1, c),
            ("pw3", c, c, 1, 1, 1),
            ("dw4", c, c, 3, 2, c),
            ("pw4", c, d, 1, 1, 1),
            ("dw5", d, d, 3, 1, d),
            ("pw5", d, d, 1, 1, 1),
            ("dw6", d, d, 3, 2, d),
        ]
        self.enc = nn.ModuleDict({n: _conv(i, o, k, s, g) for n, i, o, k, s, g in specs})
        self.dec = nn.ModuleList(
            [
                nn.ModuleList([_conv(a + 3, 3)]),
                nn.ModuleList([_conv(b, a), _conv(a, a)]),
                nn.ModuleList([_conv(c, b), _conv(b, b)]),
                nn.ModuleList([_conv(d, c), _conv(c, c)]),
            ]
        )
        self.names = [
            (f"se_model/layer_with_weights-{i}", f"enc.{n}", n.startswith("dw")) for i, (n, *_rest) in enumerate(specs)
        ]
        self.names += block_names("dec", self.dec)
        self.blocks = [
            ["conv1"],
            ["dw1", "pw1", "dw2"],
            ["pw2", "dw3", "pw3", "dw4"],
            ["pw4", "dw5", "pw5", "dw6"],
        ]

    def _layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv = self.enc[name]
        if name == "conv1" or conv.stride[0] == 2:
            x = F.pad(x, (0, 1, 0, 1), mode="reflect")  # TF 'same' for stride 2: pad bottom/right only
        elif conv.kernel_size[0] == 3:
            x = _pad(x)
        return F.relu(conv(x))

    def encode(self, block: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = high_frequency(x)
        if block == 0:
            x = x * 2.0 - 1.0  # keras.applications.mobilenet.preprocess_input(x * 255)
        for name in self.blocks[block]:
            x = self._layer(name, x)
        return x, skip

    def decode(self, block: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        convs = self.dec[block]
        x = _up(x)
        if block == 0:
            return convs[0](_pad(torch.cat([x, skip], 1)))
        x = F.relu(convs[0](_pad(x)))
        return F.relu(convs[1](_pad(x + skip)))


def to_multiple(x: torch.Tensor, multiple: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize (1, C, H, W) so both sides are multiples of ``multiple`` (nearest multiple, at least one), as
    the
    authors' ``load_img`` does with cv2.resize; the adapter resizes the result back to the content size."""
    h, w = x.shape[-2:]
    th = max(multiple, int(round(h / multiple)) * multiple)
    tw = max(multiple, int(round(w / multiple)) * multiple)
    if (th, tw) == (h, w):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(th, tw), mode="nearest")
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)


def build_student(weight_set: str) -> Student:
    return MobileNetStudent() if weight_set == "mobilenet" else VggStudent()


class PcaKd(MethodAdapter):
    name = "pca_kd"
    kind = "photorealistic"
    version = "2"  # 2: OpenCV's reflected border in the guided filter
    description = (
        "PCA-distilled lightweight photorealistic WCT (VGG / MobileNet students), "
        "ZCA at every level + guided-filter smoothing"
    )
    citation = (
        "Chiu & Gurari. PCA-Based Knowledge Distillation Towards Lightweight and "
        "Content-Style Balanced Photorealistic Style Transfer Models. CVPR 2022"
    )
    weight_sets = WEIGHT_SETS
    params = {
        "alpha": Param(
            1.0, "content-style trade-off: blend of transformed and content features at every level", low=0, high=1
        ),
        **gif_params(30),
    }

    def load(self, files: dict[str, Path]) -> None:
        ws = self.weight_set or "vgg"
        student = build_student(ws)
        student.load_arrays(read_parts(self.assets, f"pca_kd-{ws}", files), f"PCA-KD {ws} student")
        self.model = student.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def info(self) -> LoadedInfo:
        return LoadedInfo(
            parameters=count_parameters(self.model),
            layers=count_layers(self.model, self.model.resampling),
            extra={"backbone": self.weight_set, "size_multiple": self.model.multiple},
        )

    def stylize(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        masks: Masks | None = None,
        seed: int = 0,
        **params: Any,
    ) -> torch.Tensor:
        alpha = float(params["alpha"])
        m = self.model.multiple
        c = to_multiple(content, m)
        s = to_multiple(style, m)
        c_feats, c_skips = self.model.encode_all(c)
        s_feats, _ = self.model.encode_all(s)
        x = c_feats[3]
        for block in (3, 2, 1, 0):
            x = _photo_wct.transfer(x, s_feats[block], alpha=alpha, rule=T.PCA_KD_RULE)
            x = self.model.decode(block, x, c_skips[block])
        x = x.clamp(0, 1)
        if x.shape[-2:] != content.shape[-2:]:
            x = F.interpolate(x, size=content.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        return x

    def postprocess(self, output: torch.Tensor, content: torch.Tensor, **params: Any) -> torch.Tensor | None:
        return gif_postprocess(output, content, params)
