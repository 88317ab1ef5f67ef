"""Make a small JPEG contact sheet from a results database: one row per pair, columns content | style | methods.

Why a script and not a committed image: the README's example grid must be *generated* from a real run, and kept
small (a few hundred KB), so it is rebuilt from ``<results>/evalkit.sqlite`` whenever the results change.

    python scripts/thumbnail_sheet.py /tmp/art --out docs/artistic_sheet.jpg --pairs 4 --height 128

Content and style thumbnails are read through the protocol's own image entries (so the data mirror or cache must be
reachable, e.g. ``EVALKIT_DATA_MIRROR``); outputs are the PNGs the run stored. Only ``ok`` jobs are shown; a missing
output is a grey tile with its status, so failures are visible rather than silently dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from evalkit import imaging
from evalkit.assets import AssetStore
from evalkit.store import ResultsStore

LABEL_HEIGHT = 16


def _thumb(img: Image.Image, height: int) -> Image.Image:
    w, h = img.size
    return img.convert("RGB").resize((max(1, round(w * height / h)), height), Image.LANCZOS)


def _placeholder(text: str, height: int) -> Image.Image:
    tile = Image.new("RGB", (height, height), (90, 90, 90))
    ImageDraw.Draw(tile).text((4, height // 2 - 6), text[:20], fill=(255, 255, 255))
    return tile


def build_sheet(
    root: Path, pairs: int, height: int, methods: list[str] | None, resolution: str | None, run: str | None
) -> tuple[Image.Image, list[tuple[str, int, int]]]:
    """The contact sheet (see module docstring) and its columns as ``(name, x, width)``."""
    with ResultsStore.open_reader(root) as store:
        jobs = store.jobs_frame([run] if run else None)
        protocol = store.stored_protocol(run or str(jobs["run_id"].iloc[-1]))[0] if len(jobs) else None
    if jobs.empty or protocol is None:
        raise SystemExit(f"error: no jobs in {root / 'evalkit.sqlite'}: run `evalkit run --results {root}` first")
    if resolution:
        jobs = jobs[jobs["resolution"] == resolution]
    labels = methods or sorted(jobs["label"].unique())
    pair_ids = list(dict.fromkeys(jobs["pair_id"]))[:pairs]
    store_assets = AssetStore.from_env()

    columns = ["content", "style", *labels]
    rows: list[list[Image.Image]] = []
    for pair_id in pair_ids:
        pair = protocol.pair(pair_id)
        row = [
            _thumb(imaging.load_image(store_assets.fetch(protocol.images[image_id])), height)
            for image_id in (pair.content, pair.style)
        ]
        for label in labels:
            match = jobs[(jobs["pair_id"] == pair_id) & (jobs["label"] == label)]
            ok = match[match["status"] == "ok"]
            if not ok.empty and ok["output_path"].iloc[0]:
                row.append(_thumb(Image.open(root / ok["output_path"].iloc[0]), height))
            else:
                row.append(_placeholder(match["status"].iloc[0] if not match.empty else "not run", height))
        rows.append(row)

    widths = [max(row[i].width for row in rows) for i in range(len(columns))]
    sheet = Image.new("RGB", (sum(widths), LABEL_HEIGHT + height * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x, layout = 0, []
    for i, name in enumerate(columns):
        draw.text((x + 3, 2), name, fill=(0, 0, 0))
        for r, row in enumerate(rows):
            sheet.paste(row[i], (x, LABEL_HEIGHT + r * height))
        layout.append((name, x, widths[i]))
        x += widths[i]
    return sheet, layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results root (folder holding evalkit.sqlite)")
    parser.add_argument("--out", type=Path, default=Path("sheet.jpg"), help="output JPEG path")
    parser.add_argument("--pairs", type=int, default=4, help="number of pairs (rows)")
    parser.add_argument("--height", type=int, default=128, help="thumbnail height in pixels")
    parser.add_argument("--methods", help="comma list of labels in column order, e.g. 'adain[cd16x],wct[cd16x]'")
    parser.add_argument("--res", help="only jobs at this resolution")
    parser.add_argument("--run", help="only jobs of this run id")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    args = parser.parse_args(argv)
    if not (args.results / "evalkit.sqlite").is_file():
        print(
            f"error: {args.results / 'evalkit.sqlite'} not found: pass the folder given to `evalkit run --out`",
            file=sys.stderr,
        )
        return 2
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    sheet, _ = build_sheet(args.results, args.pairs, args.height, methods, args.res, args.run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, "JPEG", quality=args.quality, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
