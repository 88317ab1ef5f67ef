"""Image loading rules (EXIF, alpha, bit depth, palette, corrupt, absurd size) and the resize rule."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evalkit import imaging
from evalkit.errors import ImageError
from evalkit.imaging import Resolution


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    loaded = imaging.load_image(tmp_path / "rot.jpg")
    assert loaded.size == (20, 40)  # width and height swapped
    top = np.asarray(loaded)[:5].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the red half is now on top


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :4, 3] = 255  # left opaque red, right fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(imaging.load_image(tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 7]) == (255, 255, 255)


def test_16bit_greyscale_is_scaled_by_nominal_range(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(imaging.load_image(tmp_path / "g16.png"))
    assert out.shape == (1, 3, 3)
    assert list(out[0, :, 0]) == [0, 128, 255]


def test_palette_image_is_converted(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    out = np.asarray(imaging.load_image(tmp_path / "p.png"))
    assert tuple(out[1, 1]) == (10, 200, 30) and tuple(out[0, 0]) == (0, 0, 0)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match="broken.png.*cannot be decoded"):
        imaging.load_image(bad)
    with pytest.raises(ImageError, match="nothere.png does not exist"):
        imaging.load_image(tmp_path / "nothere.png")


def test_absurd_size_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (200, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(imaging, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="big.png is 200x100"):
        imaging.load_image(tmp_path / "big.png")


@pytest.mark.parametrize(
    "name,size,expected",
    [
        ("1k", (3840, 2160), (1024, 512)),
        ("4k", (1000, 800), (3840, 2160)),
        ("hd", (600, 800), (720, 1280)),
        ("512", (1000, 500), (1024, 512)),
        ("512", (300, 600), (512, 1024)),
    ],
)
def test_resize_rule(name, size, expected):
    out = imaging.resize(Image.new("RGB", size), Resolution.parse(name))
    assert out.size == expected


def test_named_resize_covers_and_centre_crops():
    arr = np.zeros((100, 400, 3), np.uint8)
    arr[:, 150:250] = 255  # a white band in the centre
    out = np.asarray(imaging.resize(Image.fromarray(arr), Resolution.parse("1k")))  # 4:1 -> 2:1 crops the sides
    assert out.shape == (512, 1024, 3)
    assert out[:, 512].mean() > 250 and out[:, 0].mean() < 5


def test_unknown_resolution_message():
    with pytest.raises(ValueError, match="unknown resolution '8k'"):
        Resolution.parse("8k")


def test_mask_colours_map_to_shared_labels():
    a = np.zeros((2, 2, 3), np.uint8)
    a[0, 0] = (255, 0, 0)
    b = np.full((2, 2, 3), 255, np.uint8)
    b[1, 1] = (0, 0, 0)
    la, lb = imaging.colors_to_labels([a, b])
    assert la[0, 1] == lb[1, 1]  # black is the same label in both
    assert la[0, 0] != la[0, 1] and lb[0, 0] not in (la[0, 0], la[0, 1])


def test_antialiased_mask_borders_snap_to_the_dominant_colours():
    mask = np.zeros((100, 100, 3), np.uint8)
    mask[:, 50:] = (0, 0, 255)
    mask[:, 49] = (0, 0, 150)  # a 1-pixel blended border: 1% of pixels...
    mask[10, 49] = (0, 0, 60)  # ...and a rarer shade
    (labels,) = imaging.colors_to_labels([mask], min_fraction=0.02)
    assert len(np.unique(labels)) == 2
    assert labels[0, 49] == labels[0, 50] and labels[10, 49] == labels[0, 0]  # 150 is nearer blue, 60 nearer black


@pytest.mark.skipif(not __import__("os").environ.get("EVALKIT_DATA_MIRROR"), reason="needs EVALKIT_DATA_MIRROR")
def test_dpst_masks_give_a_handful_of_shared_segments():
    from pathlib import Path

    root = Path(__import__("os").environ["EVALKIT_DATA_MIRROR"]) / "dpst" / "segmentation"
    content, style = (imaging.load_mask_colors(root / f"{name}4.png") for name in ("in", "tar"))
    assert len(np.unique(content.reshape(-1, 3), axis=0)) > 1000  # anti-aliased: thousands of raw colours
    lc, ls = imaging.colors_to_labels([content, style])
    assert 2 <= len(np.unique(lc)) <= 9 and set(np.unique(lc)) & set(np.unique(ls))
