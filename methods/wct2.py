"""WCT²: Yoo, Uh, Chun, Kang & Ha, "Photorealistic Style Transfer via Wavelet Transforms", ICCV 2019.

The VGG-19 (to relu4_1) autoencoder of WCT with every max-pooling replaced by Haar wavelet pooling: the LL
band
goes on through the encoder, the high-frequency bands LH, HL, HH are carried by skip connections to the
decoder's
wavelet unpooling (transposed Haar filters), which together reconstruct the signal exactly. Stylisation is
progressive: whitening-colouring at every encoder level, on every skipped high-frequency component, and at
every
decoder level (clovaai/WCT2 ``transfer.py``, ``transfer_at = encoder, skip, decoder``), each segment of the
DPST
masks matched with the same segment of the style (segments that are tiny or too unbalanced keep their
content).
The WCT variant is the repository's (``utils/core.py``): covariance / (N-1) + I, result clamped to the content
feature range. ``cat5`` (weight set ``official``) concatenates the four unpooled bands with the encoder
feature
before the decoder conv; ``sum`` (``official-sum``) adds them.

Weights: ``model_checkpoints/wave_{encoder,decoder}_{cat5,sum}_l4.pth`` of clovaai/WCT2, downloaded from
GitHub
and pinned by sha256 on first download (upstream publishes no checksum). They are not obtainable on this
machine;
the loader is tested with synthetic state dicts of exactly the official keys and shapes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from evalkit_methods import _photo_wct
from evalkit_methods import _transforms as T

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.assets import Asset
from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.weights import WeightSet

WCT2_COMMIT = "22b16df7e6c30b5cf11c022235286ce565201241"
_BASE = f"https://raw.githubusercontent.com/clovaai/WCT2/{WCT2_COMMIT}/model_checkpoints"


def _asset(part: str, option: str) -> Asset:
    fname = f"wave_{part}_{option}_l4.pth"
    # sha256 None: upstream publishes none; evalkit pins it on first download (see evalkit.assets).
    return Asset(name=f"wct2/{fname}", sha256=None, kind="weights", url=f"{_BASE}/{fname}")


WEIGHT_SETS: dict[str, WeightSet] = {
    "official": WeightSet(
        "official",
        {"encoder": _asset("encoder", "cat5"), "decoder": _asset("decoder", "cat5")},
        "clovaai/WCT2 cat5 checkpoints (the repository's default model)",
        official=True,
    ),
    "official-sum": WeightSet(
        "official-sum",
        {"encoder": _asset("encoder", "sum"), "decoder": _asset("decoder", "sum")},
        "clovaai/WCT2 sum checkpoints (component-wise stylisation model)",
        official=True,
    ),
}
OPTION = {"official": "cat5", "official-sum": "sum"}


# -- Haar wavelet pooling ------------------------------------------------------------------------------------
def haar_filters() -> dict[str, torch.Tensor]:
    """The four 2x2 orthonormal Haar filters: L = (1, 1)/sqrt2, H = (-1, 1)/sqrt2, band XY = X^T Y."""
    low = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)
    high = torch.tensor([[-1.0, 1.0]]) / math.sqrt(2)
    return {"LL": low.T @ low, "LH": low.T @ high, "HL": high.T @ low, "HH": high.T @ high}


class _HaarBank(nn.Module):
    """Four depthwise 2x2/stride-2 Haar convs (pool) or transposed convs (unpool), weights (C, 1, 2, 2).

    The weights are fixed (they are in the official checkpoints too, and loaded from them); registering them
    as
    parameters keeps the official state-dict keys (``pool1.LL.weight`` ...).
    """

    def __init__(self, channels: int, pool: bool) -> None:
        super().__init__()
        layer = nn.Conv2d if pool else nn.ConvTranspose2d
        for band, filt in haar_filters().items():
            conv = layer(channels, channels, kernel_size=2, stride=2, padding=0, bias=False, groups=channels)
            conv.weight.data.copy_(filt.expand(channels, 1, 2, 2))
            conv.weight.requires_grad_(False)
            setattr(self, band, conv)


class WavePool(_HaarBank):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, pool=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.LL(x), self.LH(x), self.HL(x), self.HH(x)


class WaveUnpool(_HaarBank):
    def __init__(self, channels: int, option: str) -> None:
        super().__init__(channels, pool=False)
        self.option = option

    def forward(self, ll, lh, hl, hh, original: torch.Tensor | None = None) -> torch.Tensor:
        if self.option == "sum":
            return self.LL(ll) + self.LH(lh) + self.HL(hl) + self.HH(hh)
        if original is None:
            raise ValueError("cat5 unpooling needs the encoder feature of the same level")
        return torch.cat([self.LL(ll), self.LH(lh), self.HL(hl), self.HH(hh), original], dim=1)


# -- encoder / decoder with the official attribute names ----------------------------------------------------
def _c(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, 1, 0)


def _pr(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.relu(conv(F.pad(x, (1, 1, 1, 1), mode="reflect")))


class WaveEncoder(nn.Module):
    def __init__(self, option: str) -> None:
        super().__init__()
        self.option = option
        self.conv0 = _c(3, 3, 1)
        self.conv1_1, self.conv1_2 = _c(3, 64), _c(64, 64)
        self.pool1 = WavePool(64)
        self.conv2_1, self.conv2_2 = _c(64, 128), _c(128, 128)
        self.pool2 = WavePool(128)
        self.conv3_1, self.conv3_2, self.conv3_3, self.conv3_4 = (
            _c(128, 256),
            _c(256, 256),
            _c(256, 256),
            _c(256, 256),
        )
        self.pool3 = WavePool(256)
        self.conv4_1 = _c(256, 512)

    def _pool(self, x: torch.Tensor, skips: dict, level: int) -> torch.Tensor:
        name = {1: "conv1_2", 2: "conv2_2", 3: "conv3_4"}[level]
        skips[name] = x
        ll, lh, hl, hh = getattr(self, f"pool{level}")(x)
        skips[f"pool{level}"] = [lh, hl, hh]
        return ll

    def encode(self, x: torch.Tensor, skips: dict, level: int) -> torch.Tensor:
        """One level, exactly the official split of the network into levels 1-4 (it differs by option)."""
        if self.option == "sum":
            if level == 1:
                x = _pr(self.conv1_2, _pr(self.conv1_1, self.conv0(x)))
                return self._pool(x, skips, 1)
            if level == 2:
                return self._pool(_pr(self.conv2_2, _pr(self.conv2_1, x)), skips, 2)
            if level == 3:
                for conv in (self.conv3_1, self.conv3_2, self.conv3_3, self.conv3_4):
                    x = _pr(conv, x)
                return self._pool(x, skips, 3)
            return _pr(self.conv4_1, x)
        if level == 1:
            return _pr(self.conv1_1, self.conv0(x))
        if level == 2:
            return _pr(self.conv2_1, self._pool(_pr(self.conv1_2, x), skips, 1))
        if level == 3:
            return _pr(self.conv3_1, self._pool(_pr(self.conv2_2, x), skips, 2))
        for conv in (self.conv3_2, self.conv3_3, self.conv3_4):
            x = _pr(conv, x)
        return _pr(self.conv4_1, self._pool(x, skips, 3))


class WaveDecoder(nn.Module):
    def __init__(self, option: str) -> None:
        super().__init__()
        self.option = option
        mult = 5 if option == "cat5" else 1
        suffix = "_2" if option == "cat5" else ""
        self.conv4_1 = _c(512, 256)
        self.recon_block3 = WaveUnpool(256, option)
        setattr(self, f"conv3_4{suffix}", _c(256 * mult, 256))
        self.conv3_3, self.conv3_2, self.conv3_1 = _c(256, 256), _c(256, 256), _c(256, 128)
        self.recon_block2 = WaveUnpool(128, option)
        setattr(self, f"conv2_2{suffix}", _c(128 * mult, 128))
        self.conv2_1 = _c(128, 64)
        self.recon_block1 = WaveUnpool(64, option)
        setattr(self, f"conv1_2{suffix}", _c(64 * mult, 64))
        self.conv1_1 = _c(64, 3)
        self.suffix = suffix

    def _unpool(self, x: torch.Tensor, skips: dict, level: int) -> torch.Tensor:
        lh, hl, hh = skips[f"pool{level}"]
        original = skips.get({1: "conv1_2", 2: "conv2_2", 3: "conv3_4"}[level])
        return getattr(self, f"recon_block{level}")(x, lh, hl, hh, original)

    def decode(self, x: torch.Tensor, skips: dict, level: int) -> torch.Tensor:
        if level == 4:
            x = self._unpool(_pr(self.conv4_1, x), skips, 3)
            x = _pr(getattr(self, f"conv3_4{self.suffix}"), x)
            return _pr(self.conv3_2, _pr(self.conv3_3, x))
        if level == 3:
            x = self._unpool(_pr(self.conv3_1, x), skips, 2)
            return _pr(getattr(self, f"conv2_2{self.suffix}"), x)
        if level == 2:
            x = self._unpool(_pr(self.conv2_1, x), skips, 1)
            return _pr(getattr(self, f"conv1_2{self.suffix}"), x)
        return self.conv1_1(F.pad(x, (1, 1, 1, 1), mode="reflect"))


def official_layout(option: str) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Exact (key -> shape) of the official encoder and decoder checkpoints of ``option`` (cat5 | sum)."""
    enc = {k: tuple(v.shape) for k, v in WaveEncoder(option).state_dict().items()}
    dec = {k: tuple(v.shape) for k, v in WaveDecoder(option).state_dict().items()}
    return enc, dec


# -- the method
# ------------------------------------------------------------------------------------------------
class WCT2(MethodAdapter):
    name = "wct2"
    kind = "photorealistic"
    version = "1"
    description = (
        "Wavelet-corrected WCT: Haar pooling/unpooling VGG-19 autoencoder, progressive "
        "segment-wise WCT at encoder, high-frequency skips and decoder"
    )
    citation = "Yoo, Uh, Chun, Kang, Ha. Photorealistic Style Transfer via Wavelet Transforms. ICCV 2019"
    weight_sets = WEIGHT_SETS
    uses_masks = True
    params = {
        "alpha": Param(1.0, "blend of stylised and content features at every transfer point", low=0, high=1),
        "transfer_at": Param(
            "encoder,skip,decoder",
            "comma list of encoder|skip|decoder: where WCT is applied (official default: all)",
        ),
    }
    multiple = 8  # three Haar poolings: sides must be multiples of 8

    def load(self, files: dict[str, Path]) -> None:
        option = OPTION.get(self.weight_set or "official", "cat5")
        self.option = option
        self.encoder, self.decoder = build(option, files["encoder"], files["decoder"], self.device)

    def info(self) -> LoadedInfo:
        # The paper's convention (docs/photoreal.md), which gives its 10.12M / 24: every parameter of the
        # checkpoints, the fixed Haar filters included; layers: the 18 convs without the 1x1 input normalisation,
        # plus the 3 wavelet poolings and 3 unpoolings (one layer each, though each is 4 fixed depthwise convs).
        learned = [
            p
            for m in (self.encoder, self.decoder)
            for n, p in m.named_parameters()
            if not n.startswith(("pool", "recon_block"))
        ]
        convs = count_layers(self.encoder) + count_layers(self.decoder) - 4 * 6  # the Haar banks' 24 convs
        return LoadedInfo(
            parameters=count_parameters(self.encoder) + count_parameters(self.decoder),
            layers=convs + 6,
            extra={
                "option_unpool": self.option,
                "haar_layers": 4 * 6,
                "learned_parameters": sum(p.numel() for p in learned),
            },
        )

    def stylize(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        masks: Masks | None = None,
        seed: int = 0,
        **params: Any,
    ) -> torch.Tensor:
        at = {p.strip() for p in str(params["transfer_at"]).split(",") if p.strip()}
        if not at or at - {"encoder", "skip", "decoder"}:
            raise ValueError(f"wct2 transfer_at must be a comma list of encoder, skip, decoder; got {at}")
        return run_wct2(
            self.encoder,
            self.decoder,
            content,
            style,
            masks,
            at,
            float(params["alpha"]),
            self.multiple,
        )


def build(
    option: str, encoder_path: Path, decoder_path: Path, device: torch.device | str = "cpu"
) -> tuple[WaveEncoder, WaveDecoder]:
    """Encoder and decoder of ``option`` with the checkpoints loaded after a strict layout check."""
    encoder, decoder = WaveEncoder(option), WaveDecoder(option)
    for path, module, part in ((encoder_path, encoder, "encoder"), (decoder_path, decoder, "decoder")):
        load_checked(module, read_torch_state(path), path, f"WCT2 {option} {part}")
    for module in (encoder, decoder):
        module.to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
    return encoder, decoder


def _resize_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)
    if (th, tw) == (h, w):
        return x
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)


def run_wct2(
    encoder: WaveEncoder,
    decoder: WaveDecoder,
    content: torch.Tensor,
    style: torch.Tensor,
    masks: Masks | None,
    transfer_at: set[str],
    alpha: float = 1.0,
    multiple: int = 8,
) -> torch.Tensor:
    """The official ``WCT2.transfer`` procedure on (1, 3, H, W) images in [0, 1]; returns the content's
    size."""
    c = _resize_to_multiple(content, multiple)
    s = _resize_to_multiple(style, multiple)
    if masks is not None:
        masks = Masks(_photo_wct.clean_labels(masks.content), _photo_wct.clean_labels(masks.style))
    labels = _photo_wct.valid_labels(masks.content, masks.style) if masks is not None else None

    def wct(fc: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        return _photo_wct.transfer(fc, fs, masks=masks, labels=labels, alpha=alpha, rule=T.WCT2_RULE)

    # style features: encoder levels 1-4, then the decoder run on the style's own skips (levels 3, 2, 1)
    s_skips: dict = {}
    s_enc, s_dec = {}, {}
    x = s
    for level in (1, 2, 3, 4):
        x = encoder.encode(x, s_skips, level)
        s_enc[level] = x
    for level in (4, 3, 2):
        x = decoder.decode(x, s_skips, level)
        s_dec[level - 1] = x
    if "encoder" not in transfer_at:  # official quirk: then the decoder also transfers at level 4
        s_dec[4] = s_enc[4]

    c_skips: dict = {}
    x = c
    for level in (1, 2, 3, 4):
        x = encoder.encode(x, c_skips, level)
        if "encoder" in transfer_at:
            x = wct(x, s_enc[level])
    if "skip" in transfer_at:
        for name in ("pool1", "pool2", "pool3"):
            c_skips[name] = [wct(fc, fs) for fc, fs in zip(c_skips[name], s_skips[name], strict=False)]
    for level in (4, 3, 2, 1):
        if "decoder" in transfer_at and level in s_dec:
            x = wct(x, s_dec[level])
        x = decoder.decode(x, c_skips, level)
    if x.shape[-2:] != content.shape[-2:]:
        x = F.interpolate(x, size=content.shape[-2:], mode="bilinear", align_corners=False)
    return x.clamp(0, 1)
