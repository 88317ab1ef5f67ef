"""Resolutions: the named pixel-count targets (``1k`` … ``4k``) and short-side lengths every protocol uses.

Pure data, no imaging library: protocol parsing validates resolutions without importing torch or PIL.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMED_RESOLUTIONS: dict[str, tuple[int, int]] = {
    "1k": (1024, 512),
    "hd": (1280, 720),
    "fhd": (1920, 1080),
    "qhd": (2560, 1440),
    "4k": (3840, 2160),
}


@dataclass(frozen=True)
class Resolution:
    """Either an exact (width, height) target or a short-side length."""

    name: str
    width: int | None = None
    height: int | None = None
    short_side: int | None = None

    @classmethod
    def parse(cls, text: str | int) -> Resolution:
        key = str(text).strip().lower()
        if key in NAMED_RESOLUTIONS:
            w, h = NAMED_RESOLUTIONS[key]
            return cls(key, width=w, height=h)
        if key.isdigit() and 16 <= int(key) <= 16384:
            return cls(key, short_side=int(key))
        names = ", ".join(NAMED_RESOLUTIONS)
        raise ValueError(
            f"unknown resolution '{text}': use one of {names}, or a short side from 16 to 16384 pixels (e.g. 512)"
        )

    @property
    def pixels(self) -> int | None:
        return self.width * self.height if self.width and self.height else None

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output (width, height) for an image of ``size`` = (width, height)."""
        w, h = size
        if self.short_side is not None:
            scale = self.short_side / min(w, h)
            if w <= h:
                return self.short_side, max(1, round(h * scale))
            return max(1, round(w * scale)), self.short_side
        tw, th = self.width or 0, self.height or 0
        if h > w:  # portrait image: transpose the target so that the pixel count stays the same
            tw, th = th, tw
        return tw, th
