"""Thumbnails for the leaderboard's image grid, written under ``<results>/thumbs/`` so the page and its images
can be copied or published together. Names are content-addressed (source path, size and mtime), so rebuilding a
page reuses existing thumbnails and a changed output gets a new one.

Input images (content/style) live in a cache or mirror outside the results root; a page that links there would
break when published, so their full-size view is a JPEG copy under ``thumbs/inputs/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from evalkit import imaging

THUMB_SIDE = 200
FULL_INPUT_SIDE = 2048


@dataclass(frozen=True)
class Thumb:
    """A thumbnail and the full-size image it opens, as paths relative to the page."""

    src: str
    full: str
    width: int
    height: int


def _key(path: Path, side: int) -> str:
    st = path.stat()
    blob = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{side}"
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _write_jpeg(src: Path, dest: Path, side: int, quality: int) -> tuple[int, int]:
    if dest.is_file():
        with Image.open(dest) as cached:
            return cached.size
    img = imaging.load_image(src)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".part{os.getpid()}")
    img.save(tmp, "JPEG", quality=quality, optimize=True)
    os.replace(tmp, dest)
    return img.size


class ThumbMaker:
    """Makes thumbnails under ``root/thumbs`` with links relative to the page at ``page``."""

    def __init__(self, root: Path, page: Path, side: int = THUMB_SIDE) -> None:
        self.root = Path(root)
        self.dir = self.root / "thumbs"
        self.page_dir = Path(page).resolve().parent
        self.side = side

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.page_dir)).as_posix()

    def thumb(self, src: Path, full: Path | None = None) -> Thumb:
        """Thumbnail of ``src`` opening ``full`` (default ``src`` itself, which must lie under the results root)."""
        dest = self.dir / f"{_key(src, self.side)}.jpg"
        width, height = _write_jpeg(src, dest, self.side, 85)
        return Thumb(self.rel(dest), self.rel(full or src), width, height)

    def input_thumb(self, src: Path) -> Thumb:
        """Thumbnail of an input image outside the results root, with a full-size copy inside it."""
        full = self.dir / "inputs" / f"{_key(src, FULL_INPUT_SIDE)}.jpg"
        _write_jpeg(src, full, FULL_INPUT_SIDE, 92)
        return self.thumb(src, full)
