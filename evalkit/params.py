"""Declared, validated options: a method's parameters and an executor's options are both :class:`Param` tables.

Torch-free, so that executors and protocol tooling can declare and check options without importing a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """A method parameter or executor option with its default, type and help text (shown by ``evalkit methods``)."""

    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], Any] | None = None  # normalises and validates a value (raises ValueError)

    def coerce(self, value: Any) -> Any:
        """Parse CLI/TOML values into the default's type, so ``iterations=50`` from the shell is an int."""
        if self.check is not None:
            return self.check(value)
        kind = type(self.default)
        if isinstance(value, str) and kind is not str:
            if kind is bool:
                value = value.strip().lower() in ("1", "true", "yes", "on")
            elif kind in (int, float):
                value = kind(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"value {value!r} not in {self.choices}")
        return value


def resolve(owner: str, declared: dict[str, Param], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with overrides, each coerced by its :class:`Param`; an unknown name or a bad value raises
    ``ValueError`` naming ``owner`` (e.g. ``method 'adain'``), the name and the valid names."""
    merged = {key: p.default for key, p in declared.items()}
    for key, value in (overrides or {}).items():
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise ValueError(f"{owner} has no parameter '{key}' (parameters: {valid})")
        try:
            merged[key] = declared[key].coerce(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{owner} parameter '{key}': {exc}") from exc
    return merged
