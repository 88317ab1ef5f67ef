"""Declared, validated options: a method's parameters and an executor's options are both :class:`Param` tables.

Torch-free, so that executors and protocol tooling can declare and check options without importing a network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    """A method parameter or executor option with its default, type and help text (shown by ``evalkit methods``).

    ``low``/``high`` bound a number (inclusive; ``high`` is also the cost limit of e.g. iterations, so a typo of
    ``1000000000000`` is refused instead of running for a year); numbers must be finite; booleans accept only
    true/false/yes/no/on/off/1/0; ``choices`` lists the allowed values. The same checks apply to evalkit's adapters
    and to every third-party one, before the first job."""

    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], Any] | None = None  # normalises and validates a value (raises ValueError)
    low: float | None = None
    high: float | None = None

    def coerce(self, value: Any) -> Any:
        """Parse CLI/TOML values into the default's type, so ``iterations=50`` from the shell is an int."""
        if self.check is not None:
            return self.check(value)
        kind = type(self.default)
        if kind is bool:
            value = _boolean(value)
        elif kind in (int, float):
            value = _number(value, kind)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"value {value!r} not in {self.choices}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.low is not None and value < self.low:
                raise ValueError(f"value {value!r} is below the minimum {self.low:g}")
            if self.high is not None and value > self.high:
                raise ValueError(f"value {value!r} is above the maximum {self.high:g}")
        return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"value {value!r} is not a boolean: write true or false")


def _number(value: Any, kind: type) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"value {value!r} is not a number")
    try:
        number = kind(value.strip()) if isinstance(value, str) else kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"value {value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is int and isinstance(value, float) and value != int(value):
        raise ValueError(f"value {value!r} is not an integer")
    if not math.isfinite(number):
        raise ValueError(f"value {value!r} is not finite")
    return number


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
