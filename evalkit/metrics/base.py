"""Metric classes that carry their own metadata (as torchmetrics does), and the per-sample inputs they share.

Leaderboards, studies and the CLI read :class:`MetricInfo`; nothing downstream hard-codes a metric's direction,
range or reference type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from evalkit.assets import AssetStore
from evalkit.weights import WeightSet

Reference = Literal["content", "style", "none"]


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
    cache: dict[Any, Any] = field(default_factory=dict)


class Metric:
    """Base class: subclasses set ``info`` and implement :meth:`compute`; heavy models are built in :meth:`setup`.

    A metric that needs files declares them as ``weight_sets`` exactly as a method adapter does (one set is
    enough; it is labelled ``metric[set]`` in ``evalkit weights``), and reads them with :meth:`files`. Third-party
    metrics register under the ``evalkit.metrics`` entry-point group.
    """

    info: ClassVar[MetricInfo]
    weight_sets: ClassVar[dict[str, WeightSet]] = {}

    def __init__(self, device: str | torch.device = "cpu", store: AssetStore | None = None) -> None:
        self.device = torch.device(device)
        self.store = store if store is not None else AssetStore.from_env()

    @classmethod
    def weight_set(cls) -> WeightSet | None:
        return next(iter(cls.weight_sets.values()), None)

    def availability(self) -> tuple[bool, str]:
        """(available, reason) without downloading; unavailable metrics are recorded as such, never as a made-up
        number. A downloadable file counts as available (it is fetched on first use, and the reason says so)."""
        ws = self.weight_set()
        if ws is None:
            return True, ""
        state, detail = ws.availability(self.store)
        if state == "available":
            return True, ""
        if state == "downloadable":
            return True, f"downloads {detail} on first use"
        return False, f"{ws.description}: {detail}"

    def files(self) -> dict[str, Path]:
        """Verified paths of the metric's weight files (downloading when allowed)."""
        ws = self.weight_set()
        return ws.resolve(self.store) if ws is not None else {}

    def setup(self) -> None:
        """Build models and move them to the device; called once per process by the metric suite."""

    def compute(self, sample: EvalSample, features: Any) -> float:
        raise NotImplementedError
