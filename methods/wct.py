"""Li, Fang, Yang, Wang, Lu, Yang, "Universal Style Transfer via Feature Transforms", NeurIPS 2017.

Multi-level coarse-to-fine stylisation (paper Fig. 3c): for level k = 5 .. 1, encode the current image and the style
with the normalised VGG-19 to relu{k}_1, whiten the content features and colour them with the style covariance
(eigendecompositions in float64, see ``methods/_transforms.py``), blend with the content features by alpha (Eq. 5),
and decode with that level's decoder; the result feeds the next, finer level. The first level starts from the
content image. With segmentation masks (``use_masks``), each content segment takes the statistics of the same
segment of the style (labels the style lacks fall back to the global transform).

Weight sets, in the order the harness tries them:

- ``official``: the 5 normalised-VGG encoder/decoder pairs of the paper (PyTorch conversions of the Torch7 release,
  as committed in pietrocarbo/deep-transfer). Levels 4-5 are downloaded (not obtainable on the project's machines).
- ``official-l3``: the same official models, levels relu3_1..relu1_1 only - what the project's mirror holds. It is
  *not* the paper's method (the coarse relu4_1/relu5_1 passes that transfer large-scale structure are missing), so
  its results carry their own label.
- ``cd16x``: the 5 levels of Collaborative Distillation's 16x-compressed students (Wang et al. CVPR 2020), which
  the authors trained as a drop-in replacement for WCT's autoencoders. Fully offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from evalkit_methods import _transforms as T
from evalkit_methods import _vgg_autoencoders as AE
from evalkit_methods._autoencoder_assets import cd16x, wct_official

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.weights import WeightSet


def _files(factory, levels: range) -> dict:
    out: dict = {}
    for level in levels:
        out.update(factory(level))
    return out


WCT_WEIGHT_SETS: dict[str, WeightSet] = {
    "official": WeightSet(
        "official",
        _files(wct_official, range(1, 6)),
        "official WCT normalised VGG-19 autoencoders, relu5_1..relu1_1 (levels 4-5 downloaded, pinned on first use)",
        official=True,
    ),
    "official-l3": WeightSet(
        "official-l3",
        _files(wct_official, range(1, 4)),
        "official WCT autoencoders relu3_1..relu1_1 only (the levels the offline mirror holds)",
        official=True,
    ),
    "cd16x": WeightSet(
        "cd16x",
        _files(cd16x, range(1, 6)),
        "Collaborative Distillation 16x-compressed WCT autoencoders, relu5_1..relu1_1",
    ),
}


def _eig_floor(value: object) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    floor = float(value)  # type: ignore[arg-type]
    if not floor > 0:
        raise ValueError(f"eig_floor must be 'auto' or a positive number, got {value!r}")
    return floor


class WCT(MethodAdapter):
    name = "wct"
    kind = "artistic"
    version = "1"
    description = "Whitening-colouring transforms, coarse-to-fine over VGG-19 relu5_1..relu1_1"
    citation = "Li et al. Universal Style Transfer via Feature Transforms. NeurIPS 2017"
    weight_sets = WCT_WEIGHT_SETS
    uses_masks = True
    params = {
        "alpha": Param(1.0, "content-style trade-off in [0, 1] at every level (Eq. 5; 1 = full style)"),
        "use_masks": Param(True, "segment-wise transfer when the protocol provides masks"),
        "eig_floor": Param(
            "auto",
            "eigenvalues below this are dropped; auto = the weight set's official code (1e-5 for official WCT, 1e-100 "
            "for Collaborative Distillation's cd16x)",
            check=_eig_floor,
        ),
    }

    def load(self, files: dict[str, Path]) -> None:
        layout = "cd16x" if self.weight_set == "cd16x" else "official"
        self.default_floor = T.CD16X_EIG_FLOOR if layout == "cd16x" else T.EIG_FLOOR
        self.levels = sorted(
            (int(role[len("encoder") :]) for role in files if role.startswith("encoder")), reverse=True
        )
        if not self.levels:
            raise ValueError(f"weight set '{self.weight_set}' resolved no encoder files")
        self.encoders = torch.nn.ModuleDict()
        self.decoders = torch.nn.ModuleDict()
        for level in self.levels:
            self.encoders[str(level)] = AE.load_encoder(files[f"encoder{level}"], layout, level).to(self.device)
            self.decoders[str(level)] = AE.load_decoder(files[f"decoder{level}"], layout, level).to(self.device)
        deepest = self.encoders[str(self.levels[0])]
        self.shared_encoder = all(self.encoders[str(k)].is_prefix_of(deepest) for k in self.levels[1:])

    def _style_features(self, style: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every level's style features from one pass of the deepest encoder, when the shallower encoders are its
        prefixes with the same weights (the official WCT encoders); ``{}`` otherwise (the cd16x students differ)."""
        if not self.shared_encoder:
            return {}
        deepest = self.encoders[str(self.levels[0])]
        taps = {level: len(self.encoders[str(level)].plan) for level in self.levels}
        out = deepest.forward_taps(style, list(taps.values()))
        return {level: out[step] for level, step in taps.items()}

    def info(self) -> LoadedInfo:
        modules = torch.nn.ModuleList([self.encoders, self.decoders])
        resampling = sum(net.resampling for nets in (self.encoders, self.decoders) for net in nets.values())
        return LoadedInfo(count_parameters(modules), count_layers(modules, resampling), {"levels": list(self.levels)})

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        alpha = float(params["alpha"])
        eig_floor = self.default_floor if params["eig_floor"] == "auto" else float(params["eig_floor"])
        use_masks = masks is not None and bool(params["use_masks"])
        size = (int(content.shape[-2]), int(content.shape[-1]))
        image = content
        style_feats = self._style_features(style)
        for level in self.levels:
            multiple = 2 ** (level - 1)
            padded = AE.pad_to_multiple(image, multiple)
            valid = T.valid_extent(size, multiple)  # statistics never see the padding
            # style first, as the Collaborative Distillation code does; one pass when the encoders share a VGG
            s_feat = style_feats[level] if style_feats else self.encoders[str(level)](style)
            c_feat = self.encoders[str(level)](padded)
            if use_masks:
                assert masks is not None
                c_labels = AE.pad_to_multiple(masks.content[None, None].double(), multiple)[0, 0].round().long()
                feat = T.wct_masked(c_feat, s_feat, c_labels, masks.style, alpha, eig_floor, valid=valid)
            else:
                feat = T.wct(c_feat, s_feat, alpha, eig_floor, valid=valid)
            image = self.decoders[str(level)](feat)[..., : size[0], : size[1]]
        return image.clamp(0, 1)
