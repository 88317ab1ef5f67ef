"""PhotoNAS: An, Xiong, Huan & Luo, "Ultrafast Photorealistic Style Transfer via Neural Architecture Search",
AAAI 2020 (pkuanjie/StyleNAS: ``PhotoNAS/photo_transfer.py``,
``models/models_photorealistic_nas/VGG_with_decoder.py``).

The encoder is the normalised VGG-19 to relu5_1 of WCT (the same Torch7 model, here its PyTorch conversion); the
decoder is the architecture the search selected, written in the authors' code as the switch string
``01010000000100000000000000001111`` over one super-network. Decoded, that string is:

- bottleneck: relu5_1 concatenated with max-pooled, instance-normalised relu4_1 (x2) and relu2_1 (x8), a 1x1 conv
  (``conv_pyramid213``, 1152 -> 512);
- upsample, concatenate relu4_1, 3x3 conv (``conv17``) and a 1x1 conv (``conv19_2``) to 256; upsample, 3x3
  ``conv21_2``, 1x1 ``conv23_2`` to 128; upsample, 3x3 ``conv25_2`` to 64; upsample;
- WCT of those features against the style's decoded the same way, then concatenation with the instance-normalised,
  WCT-stylised relu1_1 and the 3x3 ``conv27`` to RGB.

So only two whitening-colourings run, both at relu1_1 resolution; their content covariance is the authors'
``1.5 C + diag(C)`` (``wct.py``), eigenvalues below 1e-6 dropped. The checkpoint is the whole super-network's state
dict (every candidate conv, trained or not); the loader checks all of it and the forward uses the selected ones.

Differences from the authors' script (docs/photoreal.md): they resize both images to 768x512; evalkit keeps the
content's size, reflection-padded to a multiple of 16 with statistics (instance norms, WCT) over the valid region,
and the style at its own size, padded the same way. No post-processing (the paper has none).

Weights: the decoder ``decoder_epoch_2.pth.tar`` is published only in a Google Drive folder (no direct address), so
it must be supplied through the weights mirror; the encoder is WCT's ``vgg_normalised_conv5_1.pth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _transforms as T
from evalkit_methods import _vgg_autoencoders as AE
from evalkit_methods._autoencoder_assets import wct_official

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, count_parameters
from evalkit.assets import Asset
from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.weights import WeightSet

STYLENAS_COMMIT = "466422cfc9eb0cd09834f3557c8c91e4a40c672f"
DRIVE = "https://drive.google.com/open?id=15PP0K55jH2tBeWfLAYG7r0LuW0RZvmKd"
MULTIPLE = 16  # four poolings, and the decoder concatenates maps pooled to relu5_1's size

WEIGHT_SETS: dict[str, WeightSet] = {
    "official": WeightSet(
        "official",
        {
            "encoder": wct_official(5)["encoder5"],
            "decoder": Asset("photonas/decoder_epoch_2.pth.tar", None, manual=DRIVE),
        },
        f"pkuanjie/StyleNAS@{STYLENAS_COMMIT} trained_models_aaai/decoder_epoch_2.pth.tar (Google Drive) + WCT's "
        "vgg_normalised_conv5_1",
        official=True,
    )
}

# every conv of the authors' ``decoder`` super-network: name -> (in, out, kernel); the checkpoint holds all of them
_PYRAMID = {
    "0": 0,
    "11": 512,
    "12": 256,
    "13": 128,
    "14": 64,
    "212": 512 + 256,
    "213": 512 + 128,
    "214": 512 + 64,
    "223": 256 + 128,
    "224": 256 + 64,
    "234": 128 + 64,
    "3234": 256 + 128 + 64,
    "3134": 512 + 128 + 64,
    "3124": 512 + 256 + 64,
    "3123": 512 + 256 + 128,
    "4": 960,
}
SUPERNET: dict[str, tuple[int, int, int]] = {f"conv_pyramid{k}": (512 + extra, 512, 1) for k, extra in _PYRAMID.items()}
SUPERNET.update(
    {
        "conv15": (512, 512, 3),
        "conv16": (512, 512, 3),
        "conv17": (1024, 512, 3),
        "conv17_2": (512, 512, 3),
        "conv18": (512, 512, 3),
        "conv19": (512, 256, 3),
        "conv19_2": (512, 256, 1),
        "conv20": (256, 256, 3),
        "conv21": (512, 256, 3),
        "conv21_2": (256, 256, 3),
        "conv22": (256, 256, 3),
        "conv23": (256, 128, 3),
        "conv23_2": (256, 128, 1),
        "conv24": (128, 128, 3),
        "conv25": (256, 64, 3),
        "conv25_2": (128, 64, 3),
        "conv26": (64, 64, 3),
        "conv27": (128, 3, 3),
        "conv27_2": (64, 3, 3),
    }
)
SELECTED = ("conv_pyramid213", "conv17", "conv19_2", "conv21_2", "conv23_2", "conv25_2", "conv27")


def _conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    if conv.kernel_size[0] == 3:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return conv(x)


def instance_norm(x: torch.Tensor, valid: T.Valid) -> torch.Tensor:
    """``nn.InstanceNorm2d`` (no affine, eps 1e-5, biased variance) with statistics over the ``valid`` region."""
    region = x if valid is None else x[..., : valid[0], : valid[1]]
    mean = region.mean(dim=(2, 3), keepdim=True)
    var = region.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class NasDecoder(nn.Module):
    """The authors' ``decoder`` super-network (all candidate convs, the checkpoint's keys) run along the searched
    architecture. ``forward`` stops before the final WCT point; :meth:`finish` is the last stage."""

    def __init__(self) -> None:
        super().__init__()
        for name, (cin, cout, k) in SUPERNET.items():
            self.add_module(name, nn.Conv2d(cin, cout, k))

    def forward(self, feats: dict[str, torch.Tensor], sizes: dict[str, T.Valid]) -> torch.Tensor:
        relu5, relu4, relu2 = feats["relu5_1"], feats["relu4_1"], feats["relu2_1"]
        mid1 = F.max_pool2d(instance_norm(relu4, sizes["relu4_1"]), 2)
        mid3 = F.max_pool2d(instance_norm(relu2, sizes["relu2_1"]), 8)
        x = _conv(torch.cat([relu5, mid1, mid3], 1), self.conv_pyramid213)
        x = _up(x)
        x = F.relu(_conv(torch.cat([x, relu4], 1), self.conv17))
        x = F.relu(_conv(x, self.conv19_2))
        x = _up(x)
        x = F.relu(_conv(x, self.conv21_2))
        x = F.relu(_conv(x, self.conv23_2))
        x = _up(x)
        x = F.relu(_conv(x, self.conv25_2))
        return _up(x)

    def finish(self, x: torch.Tensor, relu1: torch.Tensor, valid: T.Valid) -> torch.Tensor:
        return _conv(torch.cat([x, instance_norm(relu1, valid)], 1), self.conv27)


_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _tap_steps(encoder: AE.PlanNet) -> dict[int, str]:
    """Plan steps after which relu1_1 ... relu5_1 are available (the first 3x3 conv of each block)."""
    steps, block, first = {}, 0, True
    for step, op in enumerate(encoder.plan, start=1):
        if op.kind == "pool":
            first = True
        elif op.kind == "conv" and op.ksize == 3 and first:
            steps[step] = _TAPS[block]
            block, first = block + 1, False
    return steps


class PhotoNAS(MethodAdapter):
    name = "photonas"
    kind = "photorealistic"
    version = "1"
    description = (
        "PhotoNAS: searched decoder on VGG-19 relu5_1 with pooled multi-level skips, two WCTs at relu1_1 scale, "
        "no post-processing"
    )
    citation = "An, Xiong, Huan, Luo. Ultrafast Photorealistic Style Transfer via Neural Architecture Search. AAAI 2020"
    weight_sets = WEIGHT_SETS

    def load(self, files: dict[str, Path]) -> None:
        self.encoder = AE.load_encoder(files["encoder"], "official", 5).to(self.device)
        decoder = NasDecoder()
        load_checked(decoder, read_torch_state(files["decoder"]), files["decoder"], "PhotoNAS decoder super-network")
        self.decoder = decoder.to(self.device).eval().requires_grad_(False)
        self.taps = _tap_steps(self.encoder)

    def info(self) -> LoadedInfo:
        # the speed table's convention (docs/photoreal.md): every parameter of the loaded checkpoints (here the
        # whole super-network, 40.24M; the 19.09M that run are in ``extra``); layers that run: 13 encoder convs
        # without the 1x1 normalisation, 7 decoder convs, 4 poolings, 2 skip poolings and 4 upsamplings
        used = sum(p.numel() for n in SELECTED for p in getattr(self.decoder, n).parameters())
        encoder = count_parameters(self.encoder)
        return LoadedInfo(
            encoder + count_parameters(self.decoder),
            13 + len(SELECTED) + 4 + 2 + 4,
            {"parameters_that_run": encoder + used},
        )

    def _encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.encoder.forward_taps(image, list(self.taps))
        return {self.taps[step]: feat for step, feat in out.items()}

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        size = (int(content.shape[-2]), int(content.shape[-1]))
        s_size = (int(style.shape[-2]), int(style.shape[-1]))
        c_feats = self._encode(AE.pad_to_multiple(content, MULTIPLE))
        s_feats = self._encode(AE.pad_to_multiple(style, MULTIPLE))
        c_valid = {name: T.valid_extent(size, 2**i) for i, name in enumerate(_TAPS)}
        s_valid = {name: T.valid_extent(s_size, 2**i) for i, name in enumerate(_TAPS)}

        def wct(c: torch.Tensor, s: torch.Tensor, valid: T.Valid, s_v: T.Valid) -> torch.Tensor:
            return T.wct_map(c, s[..., : s_v[0], : s_v[1]], T.PHOTONAS_RULE, valid)  # type: ignore[index]

        relu1 = wct(c_feats["relu1_1"], s_feats["relu1_1"], c_valid["relu1_1"], s_valid["relu1_1"])
        x = self.decoder(c_feats, c_valid)
        s_x = self.decoder(s_feats, s_valid)
        x = wct(x, s_x, c_valid["relu1_1"], s_valid["relu1_1"])
        out = self.decoder.finish(x, relu1, c_valid["relu1_1"])
        return out[..., : size[0], : size[1]].clamp(0, 1)
