"""Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", ICCV 2017.

Encode content and style with a normalised VGG-19 up to ``relu4_1``, replace the content features' channel mean/std
by the style's (AdaIN), blend with the content features by alpha (``t = alpha*AdaIN(f(c), f(s)) + (1-alpha)*f(c)``,
paper Eq. 14), decode. Options from the paper's Sec. 7.4: colour preservation (the style image is first recoloured
to the content's RGB mean/covariance) and style interpolation (:meth:`AdaIN.stylize_multi`: a convex combination of
AdaIN outputs for several styles; the harness passes one style per job, so it is a Python API, not a parameter).

Weight sets, in the order the harness tries them:

- ``official``: the authors' PyTorch port (naoto0804/pytorch-AdaIN release v0.0.0): ``vgg_normalised.pth`` (the
  complete normalised VGG-19, truncated here at relu4_1) + ``decoder.pth``. Upstream publishes no checksum: the
  resolver pins the sha256 on first download.
- ``cd16x``: the AdaIN transform inside the 16x-compressed relu4_1 autoencoder of Collaborative Distillation (Wang
  et al. CVPR 2020, ``4SE.pth``/``4SD.pth``). That decoder was trained to invert relu4_1 features for WCT, not
  AdaIN-normalised ones; results are labelled ``adain[cd16x]`` so they are never mistaken for the official model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from evalkit_methods import _transforms as T
from evalkit_methods import _vgg_autoencoders as AE
from evalkit_methods._autoencoder_assets import ADAIN_OFFICIAL, cd16x

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.weights import WeightSet

ADAIN_WEIGHT_SETS: dict[str, WeightSet] = {
    "official": WeightSet(
        "official",
        ADAIN_OFFICIAL,
        "naoto0804/pytorch-AdaIN release: normalised VGG-19 + AdaIN decoder (sha256 pinned on first download)",
        official=True,
    ),
    "cd16x": WeightSet(
        "cd16x",
        {("encoder" if k.startswith("encoder") else "decoder"): a for k, a in cd16x(4).items()},
        "Collaborative Distillation 16x relu4_1 autoencoder (4SE/4SD) with the AdaIN transform",
    ),
}

LEVEL = 4  # relu4_1
POOLS = 3  # pooling layers before relu4_1: inputs are padded to a multiple of 2**3


class AdaIN(MethodAdapter):
    name = "adain"
    kind = "artistic"
    version = "1"
    description = "Adaptive instance normalisation at VGG-19 relu4_1 + learned decoder"
    citation = "Huang, Belongie. Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization. ICCV 2017"
    weight_sets = ADAIN_WEIGHT_SETS
    params = {
        "alpha": Param(
            1.0, "content-style trade-off in [0, 1] (1 = full style, 0 = reconstruct the content)", low=0, high=1
        ),
        "preserve_color": Param(
            "none",
            "colour preservation (Sec. 7.4): none, coral (the reference code's, also 'true') or covariance (RGB mean "
            "and covariance matching)",
            check=T.colour_mode,
        ),
    }

    def load(self, files: dict[str, Path]) -> None:
        layout = "official" if self.weight_set in (None, "official") else "cd16x"
        if layout == "official":
            encoder = AE.load_full_vgg(files["vgg"], LEVEL)
        else:
            encoder = AE.load_encoder(files["encoder"], "cd16x", LEVEL)
        decoder = AE.load_decoder(files["decoder"], layout, LEVEL)
        self.encoder = encoder.to(self.device)
        self.decoder = decoder.to(self.device)

    def info(self) -> LoadedInfo:
        modules = torch.nn.ModuleList([self.encoder, self.decoder])
        return LoadedInfo(
            count_parameters(modules),
            count_layers(modules, self.encoder.resampling + self.decoder.resampling),
            {
                "encoder_parameters": count_parameters(self.encoder),
                "decoder_parameters": count_parameters(self.decoder),
            },
        )

    def _encode(self, image: torch.Tensor, pad: bool) -> torch.Tensor:
        """relu4_1 features; the content is padded so the decoder returns its exact size (the style needs not)."""
        return self.encoder(AE.pad_to_multiple(image, 2**POOLS) if pad else image)

    def _decode(self, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.decoder(feat)[..., : size[0], : size[1]].clamp(0, 1)

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        return self.stylize_multi(
            content, [style], [1.0], alpha=float(params["alpha"]), preserve_color=params["preserve_color"]
        )

    def stylize_multi(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        weights: Sequence[float],
        alpha: float = 1.0,
        preserve_color: bool | str = "none",
    ) -> torch.Tensor:
        """Stylise with one or several styles mixed by ``weights`` (normalised to sum 1). The content's statistics
        come from the part of its (padded) feature map that covers the image."""
        mode = T.colour_mode(preserve_color)
        styles = [T.recolour(s, content, mode) for s in styles]
        c_feat = self._encode(content, pad=True)
        s_feats = [self._encode(s, pad=False) for s in styles]
        valid = T.valid_extent(tuple(content.shape[-2:]), 2**POOLS)
        mixed = T.adain_interpolate(c_feat, s_feats, weights, valid=valid)
        return self._decode(T.blend(mixed, c_feat, alpha), tuple(content.shape[-2:]))
