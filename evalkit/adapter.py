"""The method adapter interface: everything a style-transfer method must say about itself, and nothing more.

An adapter declares its name, kind, weight sets, parameters and how to stylize. The harness owns devices, timing,
memory, error handling, storage and metrics. See docs/writing-an-adapter.md.

Contract of :meth:`MethodAdapter.stylize`: inputs are float32 tensors ``(1, 3, H, W)`` in [0, 1] on the adapter's
device (content at the benchmark resolution, style at the protocol's style size); masks, when the protocol has them,
are ``(H, W)`` int64 label maps whose labels mean the same region in content and style. It returns a
``(1, 3, H', W')`` tensor in [0, 1]; the harness resizes it back to the content size if a network changed it by a
few pixels, clamps it, and rejects NaN/Inf as an ``error`` result. :meth:`postprocess` (optional) is timed
separately, as a paper's ``network+post`` column.

A method that learns something of a style image once before it can stylize with it (InST's textual inversion of the
style into a word embedding) implements :meth:`MethodAdapter.fit_style`: the harness runs it once per (weights, style
image, style size, ``fit_params``), times it apart (the speed table's ``fit`` column), keeps its tensors on disk
(:mod:`evalkit.fits`) and hands them to every :meth:`~MethodAdapter.stylize` of that style as ``fitted=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from evalkit.assets import AssetStore
from evalkit.params import Param, resolve
from evalkit.weights import WeightSet

Kind = Literal["artistic", "photorealistic"]


@dataclass
class Masks:
    """Segmentation label maps for segment-wise transfer (same label = same semantic region)."""

    content: torch.Tensor
    style: torch.Tensor


@dataclass
class LoadedInfo:
    """What a loaded model reports about itself: parameters and layers as a paper's speed table counts them, and
    ``extra`` counts that explain them (per-part parameters, layers that run): the tests check those against the
    papers; the harness stores only ``parameters`` and ``layers``."""

    parameters: int
    layers: int
    extra: dict[str, Any] = field(default_factory=dict)


class MethodAdapter:
    """Base class for a style-transfer method. Subclass, set the class attributes, implement :meth:`stylize`."""

    name: ClassVar[str]
    kind: ClassVar[Kind] = "artistic"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    weight_sets: ClassVar[dict[str, WeightSet]] = {}
    params: ClassVar[dict[str, Param]] = {}
    deterministic: ClassVar[bool] = True  # False: the seed changes the output (e.g. Gatys from noise)
    uses_masks: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False  # True for optimisation methods; others run under torch.no_grad()
    extra: ClassVar[str | None] = None  # the pip extra of evalkit it needs (`evalkit methods` shows it), if any
    # parameters that change what fit_style learns (part of the fit's cache key); the others only change inference
    fit_params: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, weight_set: str | None = None, device: str | torch.device = "cpu", assets: AssetStore | None = None
    ) -> None:
        self.weight_set = weight_set
        self.device = torch.device(device)
        # Where derived files (a dequantised or converted checkpoint) are cached: the run's own asset store.
        self.assets = assets if assets is not None else AssetStore.from_env()

    # -- lifecycle (the harness times load() separately from stylize()) -----------------------------------------
    def load(self, files: dict[str, Path]) -> None:
        """Build the model from resolved weight files (empty for methods without weights) on ``self.device``."""

    def info(self) -> LoadedInfo:
        """Parameter and layer counts of the loaded model, as speed tables count them (see :func:`count_layers`)."""
        return LoadedInfo(0, 0)

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        raise NotImplementedError

    def fit_style(self, style: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
        """Learn what stylizing with ``style`` needs, once per style image (e.g. InST's style embedding).

        Optional: only methods with a per-style learning phase implement it. Runs with gradients enabled, before the
        timed runs and outside their timers; ``params`` are the job's resolved parameters (only :attr:`fit_params`
        may change the result: they are the cache key). Returns tensors; :meth:`stylize` receives them (on this
        adapter's device) as the keyword ``fitted``. Randomness must come from a parameter (e.g. ``fit_seed``), not
        the job's seed: one fit serves every seed and content of its style."""
        raise NotImplementedError

    @classmethod
    def fits_style(cls) -> bool:
        """Whether this method has a per-style learning phase (:meth:`fit_style` implemented)."""
        return cls.fit_style is not MethodAdapter.fit_style

    def postprocess(self, output: torch.Tensor, content: torch.Tensor, **params: Any) -> torch.Tensor | None:
        """Optional post-processing (e.g. smoothing); return ``None`` when the method has none."""
        return None

    # -- helpers for the harness ------------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with overrides, validated: an unknown parameter is an error, not silently ignored."""
        return resolve(f"method '{cls.name}'", cls.params, overrides)


def count_layers(module: torch.nn.Module, resampling: int = 0) -> int:
    """Layers as the PhotoWCT2 speed table counts them (docs/photoreal.md, "Counting convention"): weight layers
    (conv, transposed conv, linear) except a fixed 1x1 RGB-to-RGB input conv (the VGG-19 ports' normalisation), plus
    the ``resampling`` layers (poolings, unpoolings, upsamplings), which functional code must state."""
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)

    def normalisation(m: torch.nn.Module) -> bool:
        return (
            isinstance(m, torch.nn.Conv2d)
            and m.kernel_size == (1, 1)
            and m.in_channels == m.out_channels == 3
            and m.groups == 1
        )

    return sum(1 for m in module.modules() if isinstance(m, kinds) and not normalisation(m)) + resampling


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
