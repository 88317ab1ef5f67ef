"""Metric discovery through the ``evalkit.metrics`` entry-point group, and the suite that computes a run's metrics
with shared work.

Each metric is a :class:`~evalkit.metrics.base.Metric` subclass carrying its :class:`~evalkit.metrics.base.MetricInfo`
(name, direction, reference, range, definition). evalkit's own metrics register exactly as a third-party package
does, in ``pyproject.toml``::

    [project.entry-points."evalkit.metrics"]
    my_metric = "my_package.my_module:MyMetric"
"""

from __future__ import annotations

import io
import traceback

import numpy as np
import torch

from evalkit import plugins
from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError, WeightsUnavailable
from evalkit.metrics.base import EvalSample, Metric, MetricInfo, SetMetric
from evalkit.metrics.features import FeatureProvider
from evalkit.results import MetricState, MetricValue

GROUP = plugins.METRICS

_loaded: dict[str, type[Metric]] = {}


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin in a running process, e.g. in tests)."""
    plugins.refresh()
    _loaded.clear()


# evalkit's own metrics are listed in this order (losses, full-reference, no-reference); plug-ins follow by name
PRESENTATION_ORDER = (
    "content_loss",
    "style_loss",
    "ssim",
    "fsim",
    "lpips",
    "niqe",
    "brisque",
    "nima",
    "hist_loss",
    "artfid",
    "fid_art",
    "fid",
    "kid",
)


def metric_names() -> list[str]:
    order = {name: i for i, name in enumerate(PRESENTATION_ORDER)}
    return sorted(plugins.group(GROUP), key=lambda name: (order.get(name, len(order)), name))


def get_metric_class(name: str) -> type[Metric]:
    """The metric class registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name in _loaded:
        return _loaded[name]
    eps = plugins.group(GROUP)
    if name not in eps:
        raise ValueError(f"unknown metric '{name}': known metrics are {', '.join(eps) or 'none installed'}")
    cls = plugins.load(GROUP, name, "metric")
    if not (isinstance(cls, type) and issubclass(cls, Metric)) or cls.info.name != name:
        raise EvalkitError(
            f"entry point '{name}' of group {GROUP} does not point at a Metric subclass whose "
            f"info.name is '{name}' ({cls!r})"
        )
    _loaded[name] = cls
    return cls


def metric_info(name: str) -> MetricInfo:
    return get_metric_class(name).info


def pack_state(array: np.ndarray) -> bytes:
    """A set-level state as ``numpy.save`` bytes (read back without pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class MetricSuite:
    """Builds each requested metric once per process and evaluates them all on a sample, never raising.

    A metric that cannot run (missing weights) yields ``unavailable`` with the reason; one that fails on a sample
    yields ``error`` with the exception; a run never fails because of a metric. Image-level metrics give values,
    set-level ones states (:class:`~evalkit.results.MetricState`); every metric's network features come from one
    :class:`~evalkit.metrics.features.FeatureProvider` holding the union of their needs."""

    def __init__(
        self, names: list[str], device: str | torch.device, assets: AssetStore, feature_cache: bool = False
    ) -> None:
        self.device = torch.device(device)
        self.metrics: dict[str, Metric] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            metric = get_metric_class(name)(self.device, assets)
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
        needs = [n for m in self.metrics.values() for n in m.needs]
        cache_dir = assets.home / "features" if feature_cache else None
        self.features = FeatureProvider(self.device, assets, needs, cache_dir=cache_dir)
        self._reference_states: dict[tuple[str, str], bytes] = {}  # (metric, image key) -> state, per process

    def evaluate(self, sample: EvalSample) -> list[MetricValue]:
        """Values of the image-level metrics (set-level ones: see :meth:`score`)."""
        return self.score(sample)[0]

    def score(self, sample: EvalSample, names: list[str] | None = None) -> tuple[list[MetricValue], list[MetricState]]:
        """Values of image-level and states of set-level metrics (``names``: a subset of the suite's, in its order)."""
        values: list[MetricValue] = []
        states: list[MetricState] = []
        for name in self.names if names is None else [n for n in self.names if n in names]:
            if name in self.unavailable:
                if get_metric_class(name).info.level == "set":
                    states.append(MetricState(name, None, "unavailable", self.unavailable[name]))
                else:
                    values.append(MetricValue(name, None, "unavailable", self.unavailable[name]))
                continue
            metric = self.metrics[name]
            if isinstance(metric, SetMetric):
                states.append(self._state(metric, sample))
            else:
                values.append(self._value(metric, sample))
        self.features.forget(sample.output_key)
        return values, states

    def _value(self, metric: Metric, sample: EvalSample) -> MetricValue:
        name = metric.info.name
        try:
            value = float(metric.compute(sample, self.features))
        except WeightsUnavailable as exc:  # a network's files could not be fetched: unavailable from now on
            self.unavailable[name] = str(exc)
            return MetricValue(name, None, "unavailable", str(exc))
        except Exception as exc:  # noqa: BLE001
            return MetricValue(name, None, "error", _error(exc))
        if value != value or value in (float("inf"), float("-inf")):
            return MetricValue(name, None, "error", "metric returned NaN/Inf")
        return MetricValue(name, value)

    def _state(self, metric: SetMetric, sample: EvalSample) -> MetricState:
        name = metric.info.name
        try:
            state = np.asarray(metric.image_state(sample, self.features), dtype=np.float64)
            reference = sample.reference(metric.info.reference)
            ref_key, ref_state = None, None
            if reference is not None:
                ref_key = reference[1]
                cached = self._reference_states.get((name, ref_key))
                if cached is None:
                    array = np.asarray(metric.reference_state(reference[0], ref_key, self.features), dtype=np.float64)
                    cached = self._reference_states[(name, ref_key)] = pack_state(array)
                ref_state = cached
        except WeightsUnavailable as exc:
            self.unavailable[name] = str(exc)
            return MetricState(name, None, "unavailable", str(exc))
        except Exception as exc:  # noqa: BLE001
            return MetricState(name, None, "error", _error(exc))
        if not np.isfinite(state).all():
            return MetricState(name, None, "error", "metric state has NaN/Inf")
        return MetricState(name, pack_state(state), reference_key=ref_key, reference_state=ref_state)


__all__ = [
    "EvalSample",
    "Metric",
    "MetricInfo",
    "MetricSuite",
    "SetMetric",
    "get_metric_class",
    "metric_info",
    "metric_names",
    "pack_state",
    "refresh",
    "unpack_state",
]
