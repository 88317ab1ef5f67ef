"""PCA-distilled photorealistic style transfer: Chiu & Gurari, "PCA-Based Knowledge Distillation Towards
Lightweight and Content-Style Balanced Photorealistic Style Transfer Models", CVPR 2022 (successor of
PhotoWCT2).

A small student encoder (VGG-19 to relu4_1 with widths 10/20/58/64, or MobileNet to conv_dw_6 with widths
10/19/37/54) is distilled onto the PCA eigenbases of the teacher's features; a mirrored decoder with
high-frequency
skips (``x - mean3x3(x)`` of each encoder block's input) inverts it. Stylisation follows the authors' demo
(chiutaiyin/PCA-Knowledge-Distillation ``demo.ipynb``): ZCA whitening-colouring (covariance / N, ``+ I``
regulariser) at the bottleneck, then again after every decoder block against the style's features of that
level,
output clipped to [0, 1], then He et al.'s guided filter (guide = content, r = 30, eps = 0.02^2) -- the
smoothing
the paper's timing table counts separately (``network+smoothing``); here it is :meth:`postprocess`.

Weights: the authors' TF2 checkpoints, converted tensor-for-tensor to ``*_tf_hwio.npz`` (TF HWIO kernels; see
``../shared/weights/SOURCES.md``), served from the weights mirror and verified by sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _photo_wct
from evalkit_methods._guided_filter import guided_filter

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.assets import Asset
from evalkit.checkpoints import check_layout, read_npz
from evalkit.weights import WeightSet

_REPO = "chiutaiyin/PCA-Knowledge-Distillation@658d4a247b1aed87b9b3f19d8f8ae555e29fe31b"


def _asset(backbone: str, part: str, sha256: str, size: int) -> Asset:
    # DERIVED files (TF checkpoint -> npz): no upstream URL serves them, hence mirror/cache only.
    return Asset(name=f"pca_kd/{backbone}/{part}_tf_hwio.npz", sha256=sha256, kind="weights", size=size)


WEIGHT_SETS: dict[str, WeightSet] = {
    "vgg": WeightSet(
        "vgg",
        {
            "encoder": _asset(
                "vgg", "sencoder", "5977b4a2340ba6f80ef02438206e583d44e4284da3fb6cdef581a2792762853f", 776830
            ),
            "decoder": _asset(
                "vgg", "sdecoder", "2441f242d85d4c72cdbcf7df870d8ceb3508e79869b819a1a57c3a150867cd2a", 571982
            ),
        },
        f"VGG-19 student (widths 10/20/58/64), {_REPO} 'VGG backbone/ckpts' converted to npz",
    ),
    "mobilenet": WeightSet(
        "mobilenet",
        {
            "encoder": _asset(
                "mobilenet",
                "sencoder",
                "20722eb3fdcc956821d6111f88cf8baa3258c6b2f7d9148e8a2d50aedaf59de5",
                127858,
            ),
            "decoder": _asset(
                "mobilenet",
                "sdecoder",
                "bf722be80a73b776253eb5a27fb95cb788f50d8c8a45041956f018e9f66f0eeb",
                176178,
            ),
        },
        f"MobileNet student (widths 10/19/37/54), {_REPO} 'MobileNet backbone/ckpts' converted to npz",
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


class Student(nn.Module):
    """Encoder blocks + decoder blocks with a TF-name map; subclasses define the two architectures."""

    multiple = 8
    # (npz key prefix, module attribute path) per conv, filled by subclasses
    names: list[tuple[str, str, bool]]

    def encode(self, block: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, block: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_all(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, skips = [], []
        x = image
        for block in range(4):
            x, skip = self.encode(block, x)
            feats.append(x)
            skips.append(skip)
        return feats, skips

    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        feats, skips = self.encode_all(image)
        x = feats[3]
        for block in (3, 2, 1, 0):
            x = self.decode(block, x, skips[block])
        return x

    # -- loading from the converted TF checkpoints ----------------------------------------------------------
    def expected(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        enc, dec = {}, {}
        for key, attr, depthwise in self.names:
            conv: nn.Conv2d = self.get_submodule(attr)
            o, i, kh, kw = conv.weight.shape
            kernel = (kh, kw, o, 1) if depthwise else (kh, kw, i, o)
            target = enc if attr.startswith("enc") else dec
            target[f"{key}/{'depthwise_kernel' if depthwise else 'kernel'}"] = kernel
            target[f"{key}/bias"] = (o,)
        return enc, dec

    def load_npz(self, encoder_path: Path, decoder_path: Path, what: str) -> None:
        enc_exp, dec_exp = self.expected()
        arrays = {}
        for path, exp, part in ((encoder_path, enc_exp, "encoder"), (decoder_path, dec_exp, "decoder")):
            data = read_npz(path)
            # conv_aux/* are the distillation projections onto the teacher's eigenbases: unused at inference
            check_layout(
                {k: v.shape for k, v in data.items()},
                exp,
                path,
                f"{what} {part}",
                ignore=lambda key: key.startswith("conv_aux/"),
            )
            arrays[part] = data
        for key, attr, depthwise in self.names:
            data = arrays["encoder" if attr.startswith("enc") else "decoder"]
            conv: nn.Conv2d = self.get_submodule(attr)
            if depthwise:  # (kh, kw, C, 1) -> (C, 1, kh, kw)
                w = data[f"{key}/depthwise_kernel"].transpose(2, 3, 0, 1)
            else:  # HWIO -> OIHW
                w = data[f"{key}/kernel"].transpose(3, 2, 0, 1)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                conv.bias.copy_(torch.from_numpy(data[f"{key}/bias"]))


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
        self.names = []
        for part, blocks in (("enc", self.enc), ("dec", self.dec)):
            for bi, convs in enumerate(blocks):
                for li in range(len(convs)):
                    self.names.append((f"btnecks/{bi}/layer_with_weights-{li}", f"{part}.{bi}.{li}", False))

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
        for bi, convs in enumerate(self.dec):
            for li in range(len(convs)):
                self.names.append((f"btnecks/{bi}/layer_with_weights-{li}", f"dec.{bi}.{li}", False))
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
    version = "1"
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
        "alpha": Param(1.0, "content-style trade-off: blend of transformed and content features at every level"),
        "smooth": Param(True, "guided-filter smoothing post-process (timed separately, as the paper's +smoothing)"),
        "gf_radius": Param(30, "guided filter radius in pixels (authors: 30)"),
        "gf_eps": Param(0.0004, "guided filter eps on [0,1] images (authors: (0.02*255)^2 on 0-255 = 0.02^2)"),
    }

    def load(self, files: dict[str, Path]) -> None:
        ws = self.weight_set or "vgg"
        student = build_student(ws)
        student.load_npz(files["encoder"], files["decoder"], f"PCA-KD {ws} student")
        self.model = student.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def info(self) -> LoadedInfo:
        return LoadedInfo(
            parameters=count_parameters(self.model),
            layers=count_layers(self.model),
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
            x = _photo_wct.transfer(x, s_feats[block], alpha=alpha, reg=1.0, unbiased=False)
            x = self.model.decode(block, x, c_skips[block])
        x = x.clamp(0, 1)
        if x.shape[-2:] != content.shape[-2:]:
            x = F.interpolate(x, size=content.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        return x

    def postprocess(self, output: torch.Tensor, content: torch.Tensor, **params: Any) -> torch.Tensor | None:
        if not params["smooth"]:
            return None
        guide = content
        if guide.shape[-2:] != output.shape[-2:]:
            guide = F.interpolate(guide, size=output.shape[-2:], mode="bilinear", align_corners=False)
        return guided_filter(output, guide, int(params["gf_radius"]), float(params["gf_eps"])).clamp(0, 1)
