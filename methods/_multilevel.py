"""The coarse-to-fine VGG autoencoder pipeline of Li et al. 2017 (Fig. 3c), with the feature transform as a seam.

For each level k of the weight set (deepest first), encode the current image and the style to relu{k}_1, transform
the content features towards the style's (a function from :data:`_transforms.FEATURE_TRANSFORMS`), blend with the
content features by alpha, decode with that level's decoder; the result feeds the next level. ``wct``, ``efdm`` and
``styleswap`` are this class with a different transform, so they can be compared on the same autoencoders - the
comparison of the "transformation types" slide. A new transform is one registered function and a five-line adapter.

The content is padded to the level's stride so each decoder returns the exact size; statistics see only the valid
region (``valid``), never the padding. ``levels`` runs a subset of the weight set's levels (e.g. ``3`` alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from evalkit_methods import _transforms as T
from evalkit_methods import _vgg_autoencoders as AE
from evalkit_methods._autoencoder_assets import cd16x, wct_official

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, count_layers, count_parameters
from evalkit.weights import WeightSet


def _files(factory: Any, levels: range | list[int]) -> dict:
    out: dict = {}
    for level in levels:
        out.update(factory(level))
    return out


def autoencoder_weight_sets(levels: list[int] | None = None) -> dict[str, WeightSet]:
    """The VGG-19 autoencoder sets (official WCT, its offline 3-level subset, cd16x), restricted to ``levels``."""
    wanted = levels or [1, 2, 3, 4, 5]
    offline = [k for k in wanted if k <= 3]
    sets = {
        "official": WeightSet(
            "official",
            _files(wct_official, wanted),
            f"official WCT normalised VGG-19 autoencoders, relu{max(wanted)}_1..relu{min(wanted)}_1 "
            "(levels 4-5 downloaded, pinned on first use)",
            official=True,
        ),
        "official-l3": WeightSet(
            "official-l3",
            _files(wct_official, offline),
            "official WCT autoencoders relu3_1..relu1_1 only (the levels the offline mirror holds)",
            official=True,
        ),
        "cd16x": WeightSet(
            "cd16x",
            _files(cd16x, wanted),
            f"Collaborative Distillation 16x-compressed WCT autoencoders, relu{max(wanted)}_1..relu{min(wanted)}_1",
        ),
    }
    if offline == wanted:  # nothing beyond relu3_1: official is already offline, no separate subset
        del sets["official-l3"]
    return sets


def parse_levels(value: Any) -> str:
    """``levels`` as ``all`` or a comma list of distinct levels in 1..5, deepest first (``"3"``, ``"5,4,3"``)."""
    text = str(value).strip().lower()
    if text in ("", "all"):
        return "all"
    try:
        levels = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError as exc:
        raise ValueError(
            f"levels must be 'all' or a comma list of levels 1-5 such as '3' or '5,4,3', got {value!r}"
        ) from exc
    if any(k not in range(1, 6) for k in levels) or len(set(levels)) != len(levels):
        raise ValueError(f"levels must be distinct integers in 1-5, got {value!r}")
    return ",".join(str(k) for k in sorted(levels, reverse=True))


class MultiLevelTransfer(MethodAdapter):
    """Subclasses set ``transform`` (a registered name) or override :meth:`transform_level`."""

    transform: ClassVar[str] = "wct"

    def load(self, files: dict[str, Path]) -> None:
        layout = "cd16x" if self.weight_set == "cd16x" else "official"
        self.layout = layout
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

    def info(self) -> LoadedInfo:
        modules = torch.nn.ModuleList([self.encoders, self.decoders])
        resampling = sum(net.resampling for nets in (self.encoders, self.decoders) for net in nets.values())
        return LoadedInfo(count_parameters(modules), count_layers(modules, resampling), {"levels": list(self.levels)})

    def selected_levels(self, value: str) -> list[int]:
        if value == "all":
            return list(self.levels)
        wanted = [int(k) for k in value.split(",")]
        missing = [k for k in wanted if k not in self.levels]
        if missing:
            have = ",".join(map(str, self.levels))
            raise ValueError(
                f"levels={value}: weight set '{self.weight_set}' has no relu{missing[0]}_1 autoencoder (it has "
                f"{have}); choose levels from those or another weight set"
            )
        return wanted

    def _style_features(self, style: torch.Tensor, levels: list[int]) -> dict[int, torch.Tensor]:
        """Every level's style features from one pass of the deepest encoder, when the shallower encoders are its
        prefixes with the same weights (the official WCT encoders); ``{}`` otherwise (the cd16x students differ)."""
        if not self.shared_encoder or len(levels) < 2:
            return {}
        deepest = self.encoders[str(self.levels[0])]
        taps = {level: len(self.encoders[str(level)].plan) for level in levels}
        out = deepest.forward_taps(style, list(taps.values()))
        return {level: out[step] for level, step in taps.items()}

    def transform_level(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        valid: tuple[int, int],
        params: dict[str, Any],
        masks: Masks | None,
        multiple: int,
    ) -> torch.Tensor:
        """The transformed, alpha-blended features of one level."""
        stylised = T.feature_transform(self.transform)(content, style, valid)
        return T.blend(stylised, content, float(params["alpha"]))

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        size = (int(content.shape[-2]), int(content.shape[-1]))
        levels = self.selected_levels(str(params.get("levels", "all")))
        image = content
        style_feats = self._style_features(style, levels)
        for level in levels:
            multiple = 2 ** (level - 1)
            padded = AE.pad_to_multiple(image, multiple)
            valid = T.valid_extent(size, multiple)  # statistics never see the padding
            # style first, as the Collaborative Distillation code does; one pass when the encoders share a VGG
            s_feat = style_feats[level] if style_feats else self.encoders[str(level)](style)
            c_feat = self.encoders[str(level)](padded)
            feat = self.transform_level(c_feat, s_feat, valid, params, masks, multiple)
            image = self.decoders[str(level)](feat)[..., : size[0], : size[1]]
        return image.clamp(0, 1)
