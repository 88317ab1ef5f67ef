"""Method discovery through the ``evalkit.methods`` entry-point group, and parsing of method selectors.

Built-in adapters (package ``methods``) and third-party ones register the same way, in their ``pyproject.toml``::

    [project.entry-points."evalkit.methods"]
    mymethod = "my_package.my_module:MyAdapter"

A selector names a method and optionally a weight set: ``adain``, ``adain[cd16x]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evalkit import method_files, plugins
from evalkit.adapter import MethodAdapter
from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError, UnknownMethodError

GROUP = plugins.METHODS
_SELECTOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[\s*([A-Za-z0-9_.\-]+)\s*\])?\s*$")


def refresh() -> None:
    """Forget discovered entry points (after installing a plugin in a running process, e.g. in tests)."""
    plugins.refresh()
    _loaded.clear()


_loaded: dict[str, type[MethodAdapter]] = {}


def available_methods() -> list[str]:
    return sorted(plugins.group(GROUP))


def get_method(name: str) -> type[MethodAdapter]:
    """The adapter class registered as ``name`` (an entry point, or a method loaded from a file or given in Python);
    a clear error listing the known names otherwise."""
    if name in _loaded:
        return _loaded[name]
    from_file = method_files.registered(name)
    if from_file is not None:
        return from_file
    eps = plugins.group(GROUP)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise UnknownMethodError(
            f"unknown method '{name}': installed methods are {known}; check the spelling or install the package "
            f"that registers it under the '{GROUP}' entry-point group"
        )
    cls = plugins.load(GROUP, name, "method")
    if not (isinstance(cls, type) and issubclass(cls, MethodAdapter)):
        raise EvalkitError(f"entry point '{name}' does not point at a MethodAdapter subclass ({cls!r})")
    _loaded[name] = cls
    return cls


@dataclass(frozen=True)
class MethodSelector:
    name: str
    weight_set: str | None = None

    @classmethod
    def parse(cls, text: str) -> MethodSelector:
        match = _SELECTOR.match(text)
        if not match:
            raise UnknownMethodError(f"cannot parse method selector '{text}': write NAME or NAME[WEIGHTSET]")
        return cls(match.group(1), match.group(2))


def split_selectors(text: str) -> list[str]:
    """Split ``"adain[cd16x],wct"`` on commas that are not inside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def choose_weight_set(cls: type[MethodAdapter], requested: str | None, store: AssetStore) -> tuple[str | None, str]:
    """The weight set to use and why: the requested one, else the first available in declared order.

    Returns ``(name, reason)``; ``name`` is ``None`` only for methods that declare no weights.
    """
    if not cls.weight_sets:
        if requested:
            raise EvalkitError(f"method '{cls.name}' uses no weights; drop '[{requested}]'")
        return None, "no weights"
    if requested:
        if requested not in cls.weight_sets:
            raise EvalkitError(
                f"method '{cls.name}' has no weight set '{requested}' (sets: {', '.join(cls.weight_sets)})"
            )
        return requested, "requested"
    statuses = []
    for name, ws in cls.weight_sets.items():
        status, _ = ws.availability(store)
        statuses.append(f"{name}:{status}")
        if status == "available":
            return name, f"first available of {', '.join(cls.weight_sets)}"
    first = next(iter(cls.weight_sets))
    return first, f"none available ({'; '.join(statuses)}); using '{first}'"
