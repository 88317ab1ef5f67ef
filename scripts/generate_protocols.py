"""Regenerate protocols/artistic.toml, photoreal.toml and speed.toml from a data mirror's SOURCES.md.

SOURCES.md lists every image with its sha256 and the upstream repository, commit and path, from which the
download URL (raw file at a pinned commit) follows. Usage: python scripts/generate_protocols.py ../shared/data
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROW = re.compile(
    r"^\| `data/(?P<path>[^`]+)` \| (?P<bytes>\d+) \| `(?P<sha>[0-9a-f]{64})` \| (?P<repo>[^ ]+) @ "
    r"`(?P<commit>[0-9a-f]{40})` \| `(?P<upath>[^`]+?)(?: \(.*\))?` \|"
)


def read_sources(mirror: Path) -> dict[str, dict[str, str]]:
    rows = {}
    for line in (mirror / "SOURCES.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match["path"]] = match.groupdict()
    return rows


def image_block(image_id: str, row: dict[str, str]) -> str:
    url = f"https://raw.githubusercontent.com/{row['repo']}/{row['commit']}/{row['upath']}"
    return f'[images.{image_id}]\nmirror = "{row["path"]}"\nurl = "{url}"\nsha256 = "{row["sha"]}"\n'


def artistic(rows: dict[str, dict[str, str]]) -> str:
    contents = sorted(p for p in rows if p.startswith("adain/content/"))
    styles = sorted(p for p in rows if p.startswith("adain/style/"))
    out = [
        "# artistic: the AdaIN example set (xunhuang1995/AdaIN-style input/), 11 contents x 20 styles.",
        "# Pairing: content i with styles 2i and 2i+1 (mod 20) -> 22 pairs covering every content and every style.",
        'name = "artistic"',
        'description = "AdaIN example set: 11 contents, 20 artworks, 22 pairs covering every image"',
        'resolutions = ["512"]',
        "style_size = 512",
        "eval_size = 512",
        "seeds = 1",
        'methods = ["adain", "wct", "gatys"]',
        'metrics = ["content_loss", "style_loss", "ssim", "fsim", "niqe", "brisque", "nima"]',
        "",
    ]
    ids = {}
    for path in contents + styles:
        stem = Path(path).stem
        ids[path] = ("c_" if "/content/" in path else "s_") + stem
        out.append(image_block(ids[path], rows[path]))
    for i, c in enumerate(contents):
        for s in (styles[(2 * i) % len(styles)], styles[(2 * i + 1) % len(styles)]):
            out.append(f'[[pairs]]\nid = "{Path(c).stem}--{Path(s).stem}"\ncontent = "{ids[c]}"\nstyle = "{ids[s]}"\n')
    return "\n".join(out)


def photoreal(rows: dict[str, dict[str, str]]) -> str:
    out = [
        "# photoreal: the complete Deep Photo Style Transfer benchmark (Luan et al. 2017), 60 pairs with their",
        "# colour-coded segmentation masks (pair i = in_i + tar_i). Academic, non-commercial use.",
        'name = "photoreal"',
        'description = "Deep Photo Style Transfer benchmark: 60 photo pairs with segmentation masks"',
        'resolutions = ["512"]',
        "style_size = 512",
        "eval_size = 512",
        "seeds = 1",
        'methods = ["wct2", "reinhard", "identity"]',
        'metrics = ["content_loss", "style_loss", "ssim", "fsim", "niqe", "brisque", "nima"]',
        "",
    ]
    for i in range(1, 61):
        for image_id, path in (
            (f"in{i}", f"dpst/input/in{i}.png"),
            (f"tar{i}", f"dpst/style/tar{i}.png"),
            (f"in{i}_mask", f"dpst/segmentation/in{i}.png"),
            (f"tar{i}_mask", f"dpst/segmentation/tar{i}.png"),
        ):
            out.append(image_block(image_id, rows[path]))
    for i in range(1, 61):
        out.append(
            f'[[pairs]]\nid = "dpst{i:02d}"\ncontent = "in{i}"\nstyle = "tar{i}"\n'
            f'content_mask = "in{i}_mask"\nstyle_mask = "tar{i}_mask"\n'
        )
    return "\n".join(out)


def speed(rows: dict[str, dict[str, str]]) -> str:
    out = [
        "# speed: the PhotoWCT2 speed table (Chiu & Gurari, WACV 2022): seconds per image, 1024x512 to 3840x2160.",
        "# Content: a real 3840x2160 photograph (so 4K is never an upscale); style: a PhotoWCT2 demo style image.",
        'name = "speed"',
        'description = "Speed/memory/OOM at 1k, hd, fhd, qhd, 4k on a true 4K photograph"',
        'resolutions = ["1k", "hd", "fhd", "qhd", "4k"]',
        "style_size = 512",
        "eval_size = 512",
        "seeds = 1",
        'methods = ["adain", "wct", "reinhard"]',
        "metrics = []",
        "",
        "[timing]",
        "warmup = 1",
        "repeats = 3",
        "",
    ]
    out.append(image_block("green_park", rows["uhd/green_park-3840x2160.jpg"]))
    out.append(image_block("style0", rows["photowct2_examples/style/0.jpeg"]))
    out.append('[[pairs]]\nid = "green_park--style0"\ncontent = "green_park"\nstyle = "style0"\n')
    return "\n".join(out)


def main() -> None:
    mirror = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    rows = read_sources(mirror)
    target = Path(__file__).resolve().parents[1] / "protocols"
    for name, build in (("artistic", artistic), ("photoreal", photoreal), ("speed", speed)):
        (target / f"{name}.toml").write_text(build(rows))
        print(f"wrote {target / name}.toml")


if __name__ == "__main__":
    main()
