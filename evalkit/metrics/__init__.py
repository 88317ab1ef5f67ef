"""Metric registry and the suite that computes a run's metrics with shared work.

Each metric lives in its own module and declares its :class:`~evalkit.metrics.base.MetricInfo`. Add a metric by
writing a :class:`~evalkit.metrics.base.Metric` subclass and listing it in ``_BUILTIN``.
"""

from __future__ import annotations

import importlib
import traceback

import torch

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import SharedFeatures
from evalkit.store import MetricValue

_BUILTIN = {
    "content_loss": "evalkit.metrics.losses:ContentLoss",
    "style_loss": "evalkit.metrics.losses:StyleLoss",
    "ssim": "evalkit.metrics.ssim:SSIM",
    "fsim": "evalkit.metrics.fsim:FSIM",
    "niqe": "evalkit.metrics.niqe:NIQE",
    "brisque": "evalkit.metrics.brisque:BRISQUE",
    "nima": "evalkit.metrics.nima:NIMA",
}


def metric_names() -> list[str]:
    return list(_BUILTIN)


def get_metric_class(name: str) -> type[Metric]:
    if name not in _BUILTIN:
        raise ValueError(f"unknown metric '{name}': known metrics are {', '.join(_BUILTIN)}")
    module, cls = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), cls)


def metric_info(name: str) -> MetricInfo:
    return get_metric_class(name).info


class MetricSuite:
    """Builds each requested metric once per process and evaluates them all on a sample, never raising.

    A metric that cannot run (missing weights) yields ``unavailable`` with the reason; one that fails on a sample
    yields ``error`` with the exception; a run never fails because of a metric.
    """

    def __init__(self, names: list[str], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.features = SharedFeatures(self.device)
        self.metrics: dict[str, Metric] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            metric = get_metric_class(name)(self.device)
            ok, reason = metric.availability()
            if not ok:
                self.unavailable[name] = reason
                continue
            try:
                metric.setup()
            except Exception as exc:  # noqa: BLE001 - any setup failure makes the metric unavailable
                self.unavailable[name] = f"setup failed: {type(exc).__name__}: {exc}"
                continue
            self.metrics[name] = metric
        self.names = list(names)

    def evaluate(self, sample: EvalSample) -> list[MetricValue]:
        values = []
        for name in self.names:
            if name in self.unavailable:
                values.append(MetricValue(name, None, "unavailable", self.unavailable[name]))
                continue
            try:
                value = float(self.metrics[name].compute(sample, self.features))
                if value != value or value in (float("inf"), float("-inf")):
                    values.append(MetricValue(name, None, "error", "metric returned NaN/Inf"))
                else:
                    values.append(MetricValue(name, value))
            except Exception as exc:  # noqa: BLE001
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                values.append(MetricValue(name, None, "error", tb))
        return values


__all__ = ["EvalSample", "Metric", "MetricInfo", "MetricSuite", "get_metric_class", "metric_info", "metric_names"]
