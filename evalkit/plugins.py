"""Entry-point discovery shared by every plug-in group (methods, metrics, executors), without importing any plug-in.

Listing names reads package metadata only, so protocol validation and ``--help`` never import torch; a plug-in's
module is imported the first time its class is asked for.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from evalkit.errors import EvalkitError

METHODS = "evalkit.methods"
METRICS = "evalkit.metrics"
EXECUTORS = "evalkit.executors"


@cache
def group(name: str) -> dict[str, EntryPoint]:
    """``entry-point name -> EntryPoint`` of one group (cached; :func:`refresh` forgets it)."""
    return {ep.name: ep for ep in entry_points(group=name)}


def names(name: str) -> list[str]:
    return sorted(group(name))


def load(group_name: str, name: str, noun: str) -> object:
    """The object entry point ``name`` of a group points at; one line naming the plug-in when its module fails to
    import (the caller has checked that ``name`` exists and checks what it got)."""
    try:
        return group(group_name)[name].load()
    except Exception as exc:
        raise EvalkitError(
            f"{noun} '{name}' failed to import ({type(exc).__name__}: {exc}): reinstall its package"
        ) from exc


def refresh() -> None:
    """Forget discovered entry points (after installing a plug-in in a running process, e.g. in tests)."""
    group.cache_clear()
