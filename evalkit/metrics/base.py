"""Metric classes that carry their own metadata (as torchmetrics does), and the per-sample inputs they share.

Leaderboards, studies and the CLI read :class:`MetricInfo`; nothing downstream hard-codes a metric's direction,
range or reference type. Metrics come in two stages (``MetricInfo.level``):

- ``image``: :meth:`Metric.compute` gives one value per output, inside the worker that scored the job;
- ``set``: :class:`SetMetric` computes a small per-output *state* in the worker (a feature vector, a statistic) and
  per-reference-image state where it compares with a reference set; the driver stores them and, once a row's jobs
  are finished, reduces the row's states into one value (:mod:`evalkit.metrics.sets`) - FID, KID, a set mean.

Both declare the network features they need (:attr:`Metric.needs`), which the run's
:class:`~evalkit.metrics.features.FeatureProvider` computes once per image and network for all metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from evalkit.assets import AssetStore
from evalkit.metrics.features import FeatureNeed
from evalkit.weights import WeightSet

if TYPE_CHECKING:
    from evalkit.metrics.features import FeatureProvider

Reference = Literal["content", "style", "none"]
Level = Literal["image", "set"]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: ``reference`` says what the output is compared with (``none`` = no-reference)."""

    name: str
    higher_is_better: bool
    reference: Reference
    range: tuple[float | None, float | None]
    description: str
    weights: tuple[str, ...] = ()
    definition: str = ""
    level: Level = "image"  # "set": one value per row from per-output states (see SetMetric)

    @property
    def full_reference(self) -> bool:
        return self.reference != "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "higher_is_better": self.higher_is_better,
            "reference": self.reference,
            "range": list(self.range),
            "description": self.description,
            "weights": list(self.weights),
            "definition": self.definition,
            "level": self.level,
        }


@dataclass
class EvalSample:
    """One job's images at the evaluation size, float32 (1, 3, H, W) in [0, 1], plus cache keys.

    ``content_key`` / ``style_key`` identify the reference images (sha256 + size), so per-image work (VGG features,
    Gram matrices) is computed once per image and reused across methods, seeds and metrics.
    """

    output: torch.Tensor
    content: torch.Tensor
    style: torch.Tensor
    output_key: str
    content_key: str
    style_key: str
    # scratch space of this sample's scoring, shared by its metrics (e.g. artfid reuses lpips's distance)
    cache: dict[Any, Any] = field(default_factory=dict)

    def reference(self, role: Reference) -> tuple[torch.Tensor, str] | None:
        """(image, key) of the reference a metric compares with, ``None`` for no-reference metrics."""
        if role == "content":
            return self.content, self.content_key
        if role == "style":
            return self.style, self.style_key
        return None


class Metric:
    """Base class: subclasses set ``info`` and implement :meth:`compute`; heavy models are built in :meth:`setup`.

    A metric that needs files declares them as ``weight_sets`` exactly as a method adapter does (one set is
    enough; it is labelled ``metric[set]`` in ``evalkit weights``), and reads them with :meth:`files`. Third-party
    metrics register under the ``evalkit.metrics`` entry-point group.
    """

    info: ClassVar[MetricInfo]
    weight_sets: ClassVar[dict[str, WeightSet]] = {}
    needs: ClassVar[tuple[FeatureNeed, ...]] = ()  # network features per image (see features.FeatureNeed)

    def __init__(self, device: str | torch.device = "cpu", assets: AssetStore | None = None) -> None:
        self.device = torch.device(device)
        self.assets = assets if assets is not None else AssetStore.from_env()

    @classmethod
    def weight_set(cls) -> WeightSet | None:
        return next(iter(cls.weight_sets.values()), None)

    def availability(self) -> tuple[bool, str]:
        """(available, reason) without downloading; unavailable metrics are recorded as such, never as a made-up
        number. A downloadable file counts as available (it is fetched on first use, and the reason says so)."""
        ws = self.weight_set()
        if ws is None:
            return True, ""
        state, detail = ws.availability(self.assets)
        if state == "available":
            return True, ""
        if state == "downloadable":
            return True, f"downloads {detail} on first use"
        return False, f"{ws.description}: {detail}"

    def files(self) -> dict[str, Path]:
        """Verified paths of the metric's weight files (downloading when allowed)."""
        ws = self.weight_set()
        return ws.resolve(self.assets) if ws is not None else {}

    def setup(self) -> None:
        """Build models and move them to the device; called once per process by the metric suite."""

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        raise NotImplementedError


class SetMetric(Metric):
    """A metric of a whole row of outputs (one method variant at one resolution and precision), in two stages.

    In the worker, :meth:`image_state` gives each output's state and :meth:`reference_state` the state of the
    reference image it is compared with (``info.reference``; never called for ``none``), both float arrays. On the
    driver, :meth:`reduce` turns a row's states (in pair order) and the states of their reference images (one per
    state, in the same order: a style shared by several pairs appears once per pair, as FID's reference set of "the
    style images of the same pairs" counts it) into the value. States are stored, so a resumed run or a new
    reduction never recomputes a network pass. The row's interval is a bootstrap over its pairs (``bootstrap``
    resamples, evalkit/metrics/sets.py)."""

    bootstrap: ClassVar[int] = 200  # resamples of the row's pairs for the 95 % interval (0: no interval)

    def image_state(self, sample: EvalSample, features: FeatureProvider) -> np.ndarray:
        raise NotImplementedError

    def reference_state(self, image: torch.Tensor, key: str, features: FeatureProvider) -> np.ndarray:
        raise NotImplementedError

    def reduce(self, states: list[np.ndarray], references: list[np.ndarray]) -> float:
        raise NotImplementedError

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        raise TypeError(f"{self.info.name} is a set-level metric: it has no per-image value")
