"""Planning: a protocol and a request become a typed :class:`Plan` of frozen job specs, with no side effects.

The planner prints nothing and writes nothing: selectors that cannot be planned become ``errors`` (the other methods
go on), and what the console should say (e.g. which weight set was chosen) becomes ``notes``. The runner shows both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from evalkit import method_files
from evalkit.adapter import MethodAdapter
from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError
from evalkit.protocol import PairSpec, Protocol
from evalkit.registry import MethodSelector, choose_weight_set, get_method
from evalkit.specs import JobSpec
from evalkit.weights import weight_label


@dataclass(frozen=True)
class PlannedMethod:
    """A method selector resolved to its adapter class and weight set (``label`` is its weight label); ``cls`` is
    ``None`` for outputs imported under ``name`` (evalkit import)."""

    cls: type[MethodAdapter] | None
    weight_set: str | None
    digests: dict[str, str | None]
    name: str = ""

    @property
    def method(self) -> str:
        return self.cls.name if self.cls is not None else self.name

    @property
    def label(self) -> str:
        return weight_label(self.method, self.weight_set)


@dataclass
class Plan:
    """Every job of a run in plan order, the methods they use (by weight label), and what could not be planned."""

    jobs: list[JobSpec] = field(default_factory=list)
    methods: dict[str, PlannedMethod] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # an imported folder is the whole row of its label: jobs of that label in the protocol that this plan does not
    # hold (an earlier version of a changed file) are replaced
    replaces: str | None = None


@dataclass(frozen=True)
class PlanRequest:
    """What the planner needs of a run request (``None``: the protocol's value)."""

    selectors: list[Any] | None = None  # selector strings, or (from Python) adapter classes and functions
    resolutions: list[str] | None = None
    seeds: int | None = None
    precision: str = "fp32"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


def _sweep_for(method: str, label: str, *sweeps: dict[str, dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """The sweep grid of one method selector: its method name's and its label's tables, later sources winning
    per parameter (the protocol's ``[sweep.adain]``, then ``--sweep adain.alpha=...``)."""
    grid: dict[str, list[Any]] = {}
    for sweep in sweeps:
        for key in (method, label):
            grid.update(sweep.get(key, {}))
    return grid


def sweep_variants(
    cls: type[MethodAdapter], overrides: dict[str, Any], grid: dict[str, list[Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """``(variant, resolved params)`` for every point of ``grid`` (the product of its value lists; one point with
    variant ``""`` when there is no sweep). Points are validated like ``--param`` values; duplicates are dropped."""
    if not grid:
        return [("", cls.resolve_params(overrides))]
    names = list(grid)
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for values in itertools.product(*(grid[n] for n in names)):
        params = cls.resolve_params({**overrides, **dict(zip(names, values, strict=True))})
        variant = " ".join(f"{n}={_show(params[n])}" for n in names)
        if variant not in seen:
            seen.add(variant)
            out.append((variant, params))
    return out


def _show(value: Any) -> str:
    """A parameter value as a label writes it: ``0.5``, ``1e+03``, ``conv4_2``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def image_digests(protocol: Protocol, pair: PairSpec) -> dict[str, str | None]:
    refs = (
        ("content", pair.content),
        ("style", pair.style),
        ("content_mask", pair.content_mask),
        ("style_mask", pair.style_mask),
    )
    return {role: protocol.images[ref].sha256 for role, ref in refs if ref}


def _jobs(
    protocol: Protocol, method: PlannedMethod, variants: Iterable[tuple[str, dict[str, Any]]], request: PlanRequest
) -> Iterable[JobSpec]:
    cls = method.cls
    assert cls is not None
    resolutions = request.resolutions or list(protocol.resolutions)
    seeds = range(1) if cls.deterministic else range(request.seeds if request.seeds is not None else protocol.seeds)
    for variant, params in variants:
        for pair in protocol.pairs:
            for res in resolutions:
                for seed in seeds:
                    yield JobSpec(
                        method=cls.name,
                        weight_set=method.weight_set,
                        params=params,
                        pair_id=pair.id,
                        resolution=res,
                        seed=seed,
                        content=pair.content,
                        style=pair.style,
                        content_mask=pair.content_mask if cls.uses_masks else None,
                        style_mask=pair.style_mask if cls.uses_masks else None,
                        style_size=protocol.style_size,
                        eval_size=protocol.eval_size,
                        method_version=cls.version,
                        weight_digests=method.digests,
                        precision=request.precision,
                        image_digests=image_digests(protocol, pair),
                        variant=variant,
                    ).with_key()


def _method(selector: str | type[MethodAdapter] | Callable[..., Any]) -> tuple[type[MethodAdapter], str | None]:
    """A selector's adapter class and requested weight set: ``adain[cd16x]``, ``./file.py:NAME[set]``, or (from
    Python) an adapter class or a function."""
    if not isinstance(selector, str):
        return method_files.register_object(selector), None
    if method_files.is_file_selector(selector):
        return method_files.load_selector(selector)
    parsed = MethodSelector.parse(selector)
    return get_method(parsed.name), parsed.weight_set


def plan_jobs(protocol: Protocol, request: PlanRequest, store: AssetStore) -> Plan:
    """Jobs for every valid method selector; invalid selectors become plan errors (other methods go on)."""
    selectors = request.selectors or protocol.methods
    if not selectors:
        raise EvalkitError(f"protocol '{protocol.name}' names no default methods: pass --methods")
    plan = Plan()
    for text in selectors:
        try:
            cls, requested = _method(text)
            weight_set, reason = choose_weight_set(cls, requested, store)
            method = PlannedMethod(cls, weight_set, cls.weight_sets[weight_set].digests() if weight_set else {})
            overrides = {
                **protocol.params.get(cls.name, {}),
                **protocol.params.get(method.label, {}),
                **request.params.get(cls.name, {}),
                **request.params.get(method.label, {}),
            }
            variants = sweep_variants(cls, overrides, _sweep_for(cls.name, method.label, protocol.sweep, request.sweep))
        except (EvalkitError, ValueError) as exc:
            plan.errors.append(str(exc))
            continue
        if cls.weight_sets and not requested:
            plan.notes.append(f"{cls.name}: using weight set {weight_set} ({reason})")
        plan.methods[method.label] = method
        plan.jobs.extend(_jobs(protocol, method, variants, request))
    return plan
