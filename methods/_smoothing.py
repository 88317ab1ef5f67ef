"""The photorealistic family's post-processing step, shared by its adapters: how ``post`` is parsed and how the
guided-filter smoothing (GIF) is called.

Every official code of the family smooths the decoder output with the content photo as guide, and every paper's
speed table times that step separately (``network+post``), which is why it is :meth:`MethodAdapter.postprocess`.
The radius and eps are the authors' (given on 0-255 images, as OpenCV takes them; converted here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from evalkit_methods._guided_filter import guided_filter


def post_mode(*choices: str) -> Callable[[Any], str]:
    """A :class:`~evalkit.adapter.Param` check for ``post``: one of ``choices`` (``true`` means the first, the
    authors' default, and ``false`` means ``none``)."""

    def check(value: Any) -> str:
        if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1")):
            return choices[0]
        if value is False or (isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0")):
            return "none"
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"post must be one of {', '.join(choices)}, got {value!r}")

    return check


def gif(output: torch.Tensor, content: torch.Tensor, radius: int, eps_255: float) -> torch.Tensor:
    """``cv2.ximgproc.guidedFilter(guide=content, src=output, radius, eps_255)`` on [0, 1] images: OpenCV's eps is in
    units of the 8-bit guide, hence ``eps_255 / 255**2``; a guide of another size is resized bilinearly, as the
    authors' ``cv2.resize``."""
    guide = content
    if guide.shape[-2:] != output.shape[-2:]:
        guide = F.interpolate(guide, size=output.shape[-2:], mode="bilinear", align_corners=False)
    return guided_filter(output, guide, int(radius), float(eps_255) / 255.0**2).clamp(0, 1)
