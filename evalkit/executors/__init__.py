"""Executors move planned jobs to where they run and their results back; the driver alone writes the store.

An executor is a class registered under the ``evalkit.executors`` entry-point group (see
:mod:`evalkit.executors.base` for the contract). evalkit's own:

- ``local``: jobs in this process (models loaded once per run);
- ``isolated``: a fresh worker process per (method, weight set, resolution), with timeouts and memory budgets;
- ``ray``: Ray actors on a cluster, kept for the whole run.

Ordering, skip-after-OOM, retries and failing the rest are the :mod:`evalkit.scheduler`'s, the same for every
executor. :func:`choose` validates an executor's options once, before anything is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalkit import plugins
from evalkit.errors import EvalkitError
from evalkit.executors.base import Executor, ExecutorBase
from evalkit.params import resolve

GROUP = plugins.EXECUTORS

_loaded: dict[str, type[ExecutorBase]] = {}


def executor_names() -> list[str]:
    return plugins.names(GROUP)


def get_executor_class(name: str) -> type[ExecutorBase]:
    """The executor class registered as ``name``; one line naming the known ones otherwise."""
    if name in _loaded:
        return _loaded[name]
    eps = plugins.group(GROUP)
    if name not in eps:
        raise EvalkitError(f"unknown executor '{name}': available executors are {', '.join(sorted(eps))}")
    cls = plugins.load(GROUP, name, "executor")
    if not (isinstance(cls, type) and issubclass(cls, ExecutorBase)) or getattr(cls, "name", None) != name:
        raise EvalkitError(f"entry point '{name}' of group {GROUP} is not an ExecutorBase subclass named '{name}'")
    _loaded[name] = cls
    return cls


@dataclass(frozen=True)
class ExecutorChoice:
    """Which executor and its validated options: chosen once per run by :func:`choose`."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Executor:
        executor: Executor = get_executor_class(self.name)(**self.options)  # type: ignore[assignment]
        return executor


def choose(name: str, options: dict[str, Any], device: str) -> ExecutorChoice:
    """Validate ``options`` (``None`` values are unset) for executor ``name`` on ``device``: one-line errors naming
    the option; an option that belongs to another executor says which to choose."""
    cls = get_executor_class(name)
    resolved = check_options(name, options)
    try:
        cls.check(resolved, device)
    except ValueError as exc:
        raise EvalkitError(str(exc)) from None
    return ExecutorChoice(name, resolved)


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of executor ``name`` resolved by its :class:`~evalkit.params.Param` table, without the checks
    that need the run (used for every ``[executor.NAME]`` table of a protocol, chosen or not)."""
    cls = get_executor_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in cls.options:
            owners = [n for n in executor_names() if n != name and key in get_executor_class(n).options]
            hint = f": it is an option of --executor {owners[0]}" if owners else ""
            valid = ", ".join(cls.options) or "none"
            raise EvalkitError(f"executor '{name}' has no option '{key}' (options: {valid}){hint}")
    try:
        return resolve(f"executor '{name}'", cls.options, given)
    except ValueError as exc:
        raise EvalkitError(str(exc)) from None


__all__ = [
    "GROUP",
    "Executor",
    "ExecutorBase",
    "ExecutorChoice",
    "check_options",
    "choose",
    "executor_names",
    "get_executor_class",
]
