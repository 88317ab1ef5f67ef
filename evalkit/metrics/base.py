"""Metric classes that carry their own metadata (as torchmetrics does), and the per-sample inputs they share.

Leaderboards, studies and the CLI read :class:`MetricInfo`; nothing downstream hard-codes a metric's direction,
range or reference type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

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
        return {"name": self.name, "higher_is_better": self.higher_is_better, "reference": self.reference,
                "range": list(self.range), "description": self.description, "weights": list(self.weights),
                "definition": self.definition}


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
    """Base class: subclasses set ``info`` and implement :meth:`compute`; heavy models are built in :meth:`setup`."""

    info: ClassVar[MetricInfo]

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def availability(self) -> tuple[bool, str]:
        """(available, reason); unavailable metrics are recorded as such, never as a made-up number."""
        return True, ""

    def setup(self) -> None:
        """Build models and move them to the device; called once per process by the metric suite."""

    def compute(self, sample: EvalSample, features: Any) -> float:
        raise NotImplementedError
