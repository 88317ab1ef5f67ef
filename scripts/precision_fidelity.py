#!/usr/bin/env python
"""How much a lower precision changes each method's output: PSNR of every bf16 (or fp16, tf32) output against the
fp32 output of the same job, from a results root that holds both.

    evalkit run --protocol artistic --methods adain,wct,pca_kd --res 512 -r R
    evalkit run --protocol artistic --methods adain,wct,pca_kd --res 512 -r R --precision bf16
    python scripts/precision_fidelity.py -r R [--against bf16] [--flag 35] [--format md]

One row per method label: pairs compared, mean / median / minimum PSNR (dB, on the stored 8-bit PNGs), and a flag
when the mean is below ``--flag`` dB (35 by default). Outputs that are bit-identical count as 99 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from evalkit.store import ResultsStore

IDENTICAL_DB = 99.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return IDENTICAL_DB if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fidelity(root: Path, against: str) -> list[dict]:
    with ResultsStore.open_reader(root) as store:
        jobs = store.jobs_frame()
    jobs = jobs[(jobs["status"] == "ok") & jobs["output_path"].notna()]
    key = ["label", "params", "pair_id", "resolution", "seed"]
    ref = jobs[jobs["precision"] == "fp32"].set_index(key)["output_path"]
    low = jobs[jobs["precision"] == against].set_index(key)["output_path"]
    rows: dict[str, list[float]] = {}
    for index, path in low.items():
        if index in ref.index:
            a = np.asarray(Image.open(root / ref.loc[index]).convert("RGB"))
            b = np.asarray(Image.open(root / path).convert("RGB"))
            rows.setdefault(index[0], []).append(psnr(a, b))
    return [
        {
            "method": label,
            "pairs": len(v),
            "mean_db": float(np.mean(v)),
            "median_db": float(np.median(v)),
            "min_db": float(np.min(v)),
        }
        for label, v in sorted(rows.items())
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--results", type=Path, default=Path("results"))
    parser.add_argument("--against", default="bf16", help="the precision compared with fp32")
    parser.add_argument("--flag", type=float, default=35.0, help="flag methods whose mean PSNR is below this (dB)")
    parser.add_argument("--format", choices=("md", "json"), default="md")
    args = parser.parse_args()
    rows = fidelity(args.results, args.against)
    if not rows:
        print(f"error: no job of {args.results} has both an fp32 and a {args.against} output", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    print(f"| method | pairs | mean PSNR {args.against} vs fp32 (dB) | median | min | below {args.flag:g} dB |")
    print("|:---|---:|---:|---:|---:|:---:|")
    for r in rows:
        flag = "**yes**" if r["mean_db"] < args.flag else ""
        print(
            f"| {r['method']} | {r['pairs']} | {r['mean_db']:.1f} | {r['median_db']:.1f} | {r['min_db']:.1f} | {flag} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
