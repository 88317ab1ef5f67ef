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

from evalkit.adapter import Param


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


def gif_params(radius: int, eps_255: float = 26.01) -> dict[str, Param]:
    """The ``post`` / ``gf_radius`` / ``gf_eps`` parameters of the PhotoWCT2 authors' systems (guided filter or
    none), with their published radius; eps on the 0-255 scale, as OpenCV takes it."""
    return {
        "post": Param("gif", "post-processing: gif (the authors' guided filter) or none", check=post_mode("gif")),
        "gf_radius": Param(radius, f"guided filter radius in pixels (authors: {radius})", low=1, high=1000),
        "gf_eps": Param(
            eps_255,
            "guided filter eps on 0-255 images, as OpenCV takes it (authors: (0.02*255)**2 = 26.01)",
            low=1e-12,
            high=1e9,
        ),
    }


def gif_postprocess(output: torch.Tensor, content: torch.Tensor, params: dict[str, Any]) -> torch.Tensor | None:
    """The ``postprocess`` of the :func:`gif_params` methods: the guided filter, or ``None`` for ``post=none``."""
    if params["post"] == "none":
        return None
    return gif(output, content, int(params["gf_radius"]), float(params["gf_eps"]))
