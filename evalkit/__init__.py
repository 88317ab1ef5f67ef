"""evalkit: the benchmark harness for neural style transfer.

``evalkit.evaluate``, ``evalkit.import_outputs`` and ``evalkit.score`` are the Python API (:mod:`evalkit.api`,
docs/python-api.md); they are imported on first use, so ``import evalkit`` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("evaluate", "import_outputs", "score", "Evaluation")


def __getattr__(name: str) -> Any:
    if name in _API:
        from evalkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


__all__ = ["__version__", *_API]
