"""``identity``: returns the content image unchanged.

Why a method that does nothing: it is the benchmark's control (every metric's value for "no stylisation at all",
the floor any method must beat on style and the ceiling on content fidelity) and the catch trial of human studies
(a participant who prefers it as "most stylised" is not paying attention). It needs no weights and runs anywhere.
"""

from __future__ import annotations

from typing import Any

import torch

from evalkit.adapter import Masks, MethodAdapter


class Identity(MethodAdapter):
    name = "identity"
    kind = "artistic"
    version = "1"
    description = "Returns the content image (control condition and catch trial)"
    citation = ""

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        return content.clone()
