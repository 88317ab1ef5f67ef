"""Image loading, normalisation and the resize rule every protocol uses.

Loading accepts what real benchmark folders contain and turns it into 8-bit sRGB, honestly:

- EXIF orientation is applied (a phone photo is stylised the way it is displayed);
- RGBA / LA / palette-with-transparency are composited over white (style transfer has no alpha channel; white
  is what a viewer shows behind a transparent PNG);
- 16-bit and 32-bit greyscale / RGB are scaled to 8 bits by their nominal range (not by their min/max, which would
  change contrast); greyscale is replicated to three channels; CMYK and YCbCr are converted by PIL;
- an unreadable or truncated file, or one larger than ``MAX_PIXELS``, is an :class:`ImageError` naming the file.

Resize rule (documented in docs/protocols.md):

- a named resolution (``1k``=1024x512, ``hd``=1280x720, ``fhd``=1920x1080, ``qhd``=2560x1440, ``4k``=3840x2160) gives an
  exact pixel count: the image is scaled (Lanczos) to *cover* the target, preserving aspect ratio, then centre-cropped.
  A portrait image gets the transposed target (e.g. 512x1024), so the pixel count - what speed depends on - is
  identical for every image at one resolution;
- a number N gives the short side: the image is scaled (Lanczos) so its short side is N, aspect preserved, long side
  rounded to the nearest pixel;
- segmentation masks use the same geometry with nearest-neighbour sampling, so labels are never blended.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from evalkit.errors import ImageError
from evalkit.resolution import Resolution

MAX_PIXELS = 120_000_000  # ~ 11k x 11k: beyond anything a benchmark needs, below what exhausts memory
MAX_UPSCALE = 4.0  # resizing an image up by more than this is recorded on the job as a warning


def _check_pixels(size: tuple[int, int], path: Path) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"image {path} is {w}x{h} ({w * h / 1e6:.0f} MP), above evalkit's limit of "
            f"{MAX_PIXELS / 1e6:.0f} MP: downscale it before benchmarking"
        )


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image, applying the rules in the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist: check the path or the data mirror (EVALKIT_DATA_MIRROR)")
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning: evalkit's limit below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is checked here, by evalkit
            try:
                with Image.open(path) as img:
                    _check_pixels(img.size, path)
                    img.load()
                    return to_rgb8(ImageOps.exif_transpose(img), path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"image {path} cannot be decoded ({type(exc).__name__}: {exc}): the file is corrupt or not an image; "
            f"re-download it or replace it"
        ) from exc


def to_rgb8(img: Image.Image, path: str | Path = "<image>") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha over white, high bit depths scaled by nominal range)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        elif mode == "I":
            peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:
            peak = 65535.0
        grey = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    if mode.startswith("RGB"):  # RGBX, RGB;16 etc.
        arr = np.asarray(img)
        if arr.dtype == np.uint16:
            arr = (arr[..., :3].astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
            return Image.fromarray(arr, "RGB")
        return img.convert("RGB")
    raise ImageError(f"image {path} has unsupported mode {mode}: convert it to 8-bit RGB PNG or JPEG")


def check_min_side(img: Image.Image, path: str | Path, min_side: int) -> None:
    """An image whose short side is below ``min_side`` is an error: a 1x1 image silently upscaled to 512 px is not
    a benchmark input, it is a broken file."""
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError(
            f"image {path} is {w}x{h}, its short side is below the minimum of {min_side} px: supply the "
            f"full-size image, or lower min_image_side in the protocol"
        )


def upscale_factor(source: tuple[int, int], target: tuple[int, int]) -> float:
    """How much the resize rule enlarged an image (1.0 or less when it shrank it)."""
    return max(target[0] / source[0], target[1] / source[1])


def load_rgb_array16(path: str | Path) -> np.ndarray | None:
    """Read a 16-bit-per-channel RGB PNG that PIL would truncate; ``None`` when the file is not one."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[24] != 16 or data[25] not in (2, 6):
        return None
    try:
        import imageio.v3 as iio
    except ImportError:  # pragma: no cover - imageio ships with scikit-image
        return None
    return np.asarray(iio.imread(io.BytesIO(data)))


def resize(img: Image.Image, resolution: Resolution) -> Image.Image:
    """Apply the resize rule (cover + centre-crop for named sizes, short side for numbers), Lanczos."""
    tw, th = resolution.target_size(img.size)
    if resolution.short_side is not None:
        return img if img.size == (tw, th) else img.resize((tw, th), Image.Resampling.LANCZOS)
    return ImageOps.fit(img, (tw, th), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def fit_labels(labels: np.ndarray, resolution: Resolution) -> np.ndarray:
    """Resize an integer label map with the same geometry as :func:`resize`, nearest neighbour."""
    img = Image.fromarray(labels.astype(np.int32), mode="I")
    tw, th = resolution.target_size(img.size)
    if resolution.short_side is not None:
        out = img.resize((tw, th), Image.Resampling.NEAREST)
    else:
        out = ImageOps.fit(img, (tw, th), method=Image.Resampling.NEAREST, centering=(0.5, 0.5))
    return np.asarray(out, dtype=np.int64)


def load_mask_colors(path: str | Path) -> np.ndarray:
    """Read a colour-coded segmentation mask (DPST style) as an (H, W, 3) uint8 array; greyscale is replicated."""
    return np.asarray(load_image(path), dtype=np.uint8)


def colors_to_labels(masks: list[np.ndarray], min_fraction: float = 0.005) -> list[np.ndarray]:
    """Map the colours of several masks to shared integer labels, so label k means the same region everywhere.

    Real segmentation masks (e.g. Deep Photo Style Transfer's) have anti-aliased borders: thousands of blended
    colours along region edges. A colour covering less than ``min_fraction`` of every mask is therefore snapped to
    the nearest (RGB distance) dominant colour, as the official WCT2 code snaps to its palette; otherwise each border
    shade would become a tiny fake segment.
    """
    counts: dict[tuple[int, int, int], float] = {}
    uniques = []
    for mask in masks:
        flat = mask.reshape(-1, 3)
        uniq, inverse, freq = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
        uniques.append((uniq, inverse.reshape(-1)))
        for color, n in zip(map(tuple, uniq.tolist()), freq / len(flat), strict=True):
            counts[color] = max(counts.get(color, 0.0), float(n))
    dominant = sorted(c for c, frac in counts.items() if frac >= min_fraction) or [max(counts, key=lambda c: counts[c])]
    palette = np.array(dominant, dtype=np.int64)
    out = []
    for mask, (uniq, inverse) in zip(masks, uniques, strict=True):
        dist = ((uniq[:, None, :].astype(np.int64) - palette[None, :, :]) ** 2).sum(-1)
        ids = dist.argmin(axis=1)
        out.append(ids[inverse].reshape(mask.shape[:2]))
    return out


def to_tensor(img: Image.Image, device: str | torch.device = "cpu") -> torch.Tensor:
    """PIL RGB -> float32 tensor (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> 8-bit RGB image (clamped, rounded)."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def aspect_matches(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether an image of ``size`` has the aspect ratio of ``target`` up to the resize rule's rounding (one pixel
    of either side at the larger of the two scales)."""
    (w, h), (tw, th) = size, target
    return abs(w * th - tw * h) <= max(w, h, tw, th)


def fit_imported(image: Image.Image, target: tuple[int, int], path: str | Path) -> Image.Image:
    """An output made elsewhere at the content's size (``target``): resized (Lanczos) when its size differs but its
    aspect ratio matches; an :class:`ImageError` naming the file and both sizes when the aspect ratio differs."""
    if image.size == target:
        return image
    if not aspect_matches(image.size, target):
        raise ImageError(
            f"{path} is {image.size[0]}x{image.size[1]} but its content image is {target[0]}x{target[1]} at this "
            f"resolution: the aspect ratios differ; export the output at the content's aspect ratio"
        )
    return image.resize(target, Image.Resampling.LANCZOS)
