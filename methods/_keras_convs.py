"""Loading Keras conv layers from TF2 checkpoints into torch convs: the shared step of chiutaiyin's models
(PhotoWCT2 and the PCA-distilled students), whose checkpoints name every conv by its Keras object path
(``btnecks/<block>/layer_with_weights-<i>/kernel``).

A model lists its convs as :data:`ConvName` triples ``(TF object path, torch attribute path, depthwise)``; the arrays
come from :func:`read_checkpoint` (the TF bundle parsed once and cached), are checked key-by-key and shape-by-shape
against the model (one line naming the file, key and shapes on a mismatch), and copied in torch's layout: HWIO
kernels -> OIHW, depthwise ``(kh, kw, C, 1)`` -> ``(C, 1, kh, kw)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from evalkit.assets import AssetStore
from evalkit.checkpoints import cached_conversion, check_layout, read_tf_checkpoint

ConvName = tuple[str, str, bool]  # (TF object path, torch attribute path, depthwise)
Arrays = dict[str, np.ndarray]


def expected_layout(module: nn.Module, names: list[ConvName], part_of: Callable[[str], str]) -> dict[str, dict]:
    """``part -> {TF key: shape}`` the checkpoints of ``module`` must hold (``part_of(attr)`` names the file)."""
    out: dict[str, dict] = {}
    for key, attr, depthwise in names:
        conv = module.get_submodule(attr)
        assert isinstance(conv, nn.Conv2d)
        o, i, kh, kw = conv.weight.shape
        target = out.setdefault(part_of(attr), {})
        if depthwise:
            target[f"{key}/depthwise_kernel"] = (kh, kw, o, 1)
        else:
            target[f"{key}/kernel"] = (kh, kw, i, o)
        target[f"{key}/bias"] = (o,)
    return out


def load_convs(
    module: nn.Module,
    names: list[ConvName],
    parts: dict[str, tuple[Arrays, str]],
    part_of: Callable[[str], str],
    what: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Copy TF tensors into ``module``'s convs after a strict layout check; ``parts`` maps a part name (``encoder``,
    ``decoder``) to (arrays by TF object path, the file they came from)."""
    for part, expected in expected_layout(module, names, part_of).items():
        data, source = parts[part]
        check_layout({k: v.shape for k, v in data.items()}, expected, source, f"{what} {part}", ignore=ignore)
    for key, attr, depthwise in names:
        data = parts[part_of(attr)][0]
        conv = module.get_submodule(attr)
        assert isinstance(conv, nn.Conv2d)
        if depthwise:
            w = data[f"{key}/depthwise_kernel"].transpose(2, 3, 0, 1)
        else:
            w = data[f"{key}/kernel"].transpose(3, 2, 0, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(data[f"{key}/bias"]))


def read_checkpoint(store: AssetStore, label: str, index: Path, data: Path) -> tuple[Arrays, str]:
    """A checkpoint's arrays (converted once into the cache) and its index file's path, for error messages."""
    arrays = cached_conversion(store, label, [index, data], lambda: read_tf_checkpoint(index, data))
    return arrays, str(index)


def read_parts(store: AssetStore, label: str, files: dict[str, Path]) -> dict[str, tuple[Arrays, str]]:
    """:func:`read_checkpoint` of the ``encoder`` and ``decoder`` of a weight set whose roles are
    ``<part>_index`` / ``<part>_data``; the cache file is ``<label>-<part>-<digest>.npz``."""
    return {
        part: read_checkpoint(store, f"{label}-{part}", files[f"{part}_index"], files[f"{part}_data"])
        for part in ("encoder", "decoder")
    }


def block_names(attr: str, blocks: nn.ModuleList) -> list[ConvName]:
    """Names of ``blocks[b][i]`` as Keras saved them: ``btnecks/<b>/layer_with_weights-<i>``."""
    return [
        (f"btnecks/{b}/layer_with_weights-{i}", f"{attr}.{b}.{i}", False)
        for b, convs in enumerate(blocks)
        for i in range(len(convs))  # type: ignore[arg-type]
    ]


class SkipAutoencoder(nn.Module):
    """The four-block encoder/decoder with per-block skips that PhotoWCT2 and the PCA-KD students share: subclasses
    implement ``encode(block, x) -> (features, skip)`` and ``decode(block, x, skip)``."""

    def encode(self, block: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def decode(self, block: int, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def encode_all(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Every block's features (block 3 is the bottleneck) and skip of ``image``."""
        feats: list[torch.Tensor] = []
        skips: list[torch.Tensor | None] = []
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
