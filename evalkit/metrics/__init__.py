"""Metric discovery through the ``evalkit.metrics`` entry-point group, and the suite that computes a run's metrics
with shared work.

Each metric is a :class:`~evalkit.metrics.base.Metric` subclass carrying its :class:`~evalkit.metrics.base.MetricInfo`
(name, direction, reference, range, definition). evalkit's own metrics register exactly as a third-party package
does, in ``pyproject.toml``::

    [project.entry-points."evalkit.metrics"]
    my_metric = "my_package.my_module:MyMetric"
"""

from __future__ import annotations

import traceback
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

import torch

from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import SharedFeatures
from evalkit.results import MetricValue

GROUP = "evalkit.metrics"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


_loaded: dict[str, type[Metric]] = {}


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin in a running process, e.g. in tests)."""
    _entry_points.cache_clear()
    _loaded.clear()


# evalkit's own metrics are listed in this order (losses, full-reference, no-reference); plug-ins follow by name
PRESENTATION_ORDER = ("content_loss", "style_loss", "ssim", "fsim", "niqe", "brisque", "nima")


def metric_names() -> list[str]:
    order = {name: i for i, name in enumerate(PRESENTATION_ORDER)}
    return sorted(_entry_points(), key=lambda name: (order.get(name, len(order)), name))


def get_metric_class(name: str) -> type[Metric]:
    """The metric class registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name in _loaded:
        return _loaded[name]
    eps = _entry_points()
    if name not in eps:
        raise ValueError(f"unknown metric '{name}': known metrics are {', '.join(eps) or 'none installed'}")
    try:
        cls = eps[name].load()
    except Exception as exc:
        raise EvalkitError(
            f"metric '{name}' failed to import ({type(exc).__name__}: {exc}): reinstall its package"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Metric)) or cls.info.name != name:
        raise EvalkitError(
            f"entry point '{name}' of group {GROUP} does not point at a Metric subclass whose "
            f"info.name is '{name}' ({cls!r})"
        )
    _loaded[name] = cls
    return cls


def metric_info(name: str) -> MetricInfo:
    return get_metric_class(name).info


class MetricSuite:
    """Builds each requested metric once per process and evaluates them all on a sample, never raising.

    A metric that cannot run (missing weights) yields ``unavailable`` with the reason; one that fails on a sample
    yields ``error`` with the exception; a run never fails because of a metric.
    """

    def __init__(self, names: list[str], device: str | torch.device, store: AssetStore) -> None:
        self.device = torch.device(device)
        self.features = SharedFeatures(self.device, store)
        self.metrics: dict[str, Metric] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            metric = get_metric_class(name)(self.device, store)
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


__all__ = [
    "EvalSample",
    "Metric",
    "MetricInfo",
    "MetricSuite",
    "get_metric_class",
    "metric_info",
    "metric_names",
    "refresh",
]
