"""Benchmark (not a test): evalkit's metric suite vs the naive way, side by side in one run, and their ratio.

The workload is what a benchmark run scores: N outputs of N/2 methods on two (content, style) pairs, at the
evaluation size. Two ways to score them, interleaved output by output so that both see the same machine load:

- evalkit: one :class:`~evalkit.metrics.MetricSuite`, built once (its build time is counted), then per output one
  VGG-19 pass feeding both losses, content features and style Grams cached per image, pyiqa models built once;
- naive: what a user calling each library metric separately does: per output and per metric, build the metric
  (a fresh VGG-19 for each loss, ``pyiqa.create_metric`` for each IQA metric) and compute it; each loss runs VGG-19
  on the output and on its reference (4 passes per output).

Both ways must give the same numbers (checked, max relative difference printed). Usage:

    python scripts/bench_metrics.py --n 6 --eval-size 384 --threads 1   # needs the weights mirror (NIQE, BRISQUE)

Environment: EVALKIT_WEIGHTS_MIRROR (evalkit's NIQE/BRISQUE files) and TORCH_HOME (where pyiqa, for the naive way,
finds its own copies) as in the README; metrics that are unavailable (NIMA here) are left out of both sides.
"""

from __future__ import annotations

import argparse
import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from evalkit import imaging
from evalkit.assets import AssetStore
from evalkit.metrics import EvalSample, MetricSuite, metric_names
from evalkit.metrics.features import CONTENT_LAYER, STYLE_LAYERS, gram
from evalkit.metrics.losses import content_loss, style_loss
from evalkit.vgg import VGG19Features, load_state

PAIRS = (("astronaut.png", "brick.png"), ("chelsea.png", "gravel.png"))  # (content, style)
CONTENTS = tuple(c for c, _ in PAIRS)
STYLES = tuple(s for _, s in PAIRS)
PYIQA_OPTIONS = {"ssim": {}, "fsim": {}, "niqe": {}, "brisque": {}, "nima": {}}


def skimage_image(name: str, eval_size: int) -> torch.Tensor:
    img = imaging.load_image(Path(str(resources.files("skimage").joinpath(f"data/{name}"))))
    return imaging.to_tensor(imaging.resize(img, imaging.Resolution.parse(str(eval_size))))


def make_outputs(n: int, eval_size: int) -> list[tuple[str, str, torch.Tensor]]:
    """(content, style, output) triples like a run's: output i is 'method' i // 2 on pair i % 2.

    The 'methods' are cheap deterministic stylizations (partial colour transfer + noise): scoring cost does not
    depend on how an output was made.
    """
    gen = torch.Generator().manual_seed(0)
    styles = {s: skimage_image(s, eval_size) for s in STYLES}
    contents = {c: skimage_image(c, eval_size) for c in CONTENTS}
    out = []
    for i in range(n):
        c, s = PAIRS[i % len(PAIRS)]
        content, style = contents[c], styles[s]
        shift = style.mean(dim=(2, 3), keepdim=True) - content.mean(dim=(2, 3), keepdim=True)
        strength = 0.3 + 0.2 * (i // len(PAIRS))
        noise = 0.04 * torch.randn(content.shape, generator=gen)
        out.append((c, s, (content + strength * shift + noise).clamp(0, 1)))
    return out


def naive_scores(
    output: torch.Tensor, content: torch.Tensor, style: torch.Tensor, names: list[str]
) -> dict[str, float]:
    """Each metric built and computed on its own, as separate library calls would be."""
    import pyiqa

    values = {}
    for name in names:
        if name == "content_loss":
            vgg = VGG19Features(load_state("imagenet", AssetStore.from_env()))
            with torch.no_grad():
                fo, fc = vgg(output, (CONTENT_LAYER,)), vgg(content, (CONTENT_LAYER,))
            values[name] = content_loss(fo[CONTENT_LAYER], fc[CONTENT_LAYER])
        elif name == "style_loss":
            vgg = VGG19Features(load_state("imagenet", AssetStore.from_env()))
            with torch.no_grad():
                fo, fs = vgg(output, STYLE_LAYERS), vgg(style, STYLE_LAYERS)
            values[name] = style_loss({k: gram(v) for k, v in fo.items()}, {k: gram(v) for k, v in fs.items()})
        else:
            metric = pyiqa.create_metric(name, device="cpu", **PYIQA_OPTIONS[name])
            with torch.no_grad():
                values[name] = float(metric(output, content) if metric.metric_mode == "FR" else metric(output))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6, help="number of outputs to score")
    parser.add_argument("--eval-size", type=int, default=384, help="short side the images are scored at")
    parser.add_argument("--metrics", default=",".join(metric_names()), help="comma list (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pyiqa  # noqa: F401 - import cost (seconds) paid once here, by neither side

    requested = [m.strip() for m in args.metrics.split(",") if m.strip()]
    outputs = make_outputs(args.n, args.eval_size)
    refs = {name: skimage_image(name, args.eval_size) for name in CONTENTS + STYLES}
    # warm the on-disk dequantised VGG cache so neither side pays the one-off conversion
    load_state("imagenet", AssetStore.from_env())

    start, start_cpu = time.perf_counter(), time.process_time()
    suite = MetricSuite(requested, "cpu", AssetStore.from_env())
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    names = [m for m in requested if m not in suite.unavailable]
    for name, reason in suite.unavailable.items():
        print(f"skipped (unavailable): {name}: {reason[:120]}…")

    suite_s, naive_s, worst = build_s, 0.0, 0.0
    suite_cpu, naive_cpu = build_cpu, 0.0  # CPU seconds: robust to other processes sharing the machine
    per_metric_diff: dict[str, float] = {}
    for i, (c, s, output) in enumerate(outputs):
        sample = EvalSample(output, refs[c], refs[s], f"out{i}", f"img:{c}", f"img:{s}")
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            ours = {v.name: v.value for v in suite.evaluate(sample) if v.status == "ok"}
        t1, c1 = time.perf_counter(), time.process_time()
        theirs = naive_scores(output, refs[c], refs[s], names)
        t2, c2 = time.perf_counter(), time.process_time()
        suite_s += t1 - t0
        naive_s += t2 - t1
        suite_cpu += c1 - c0
        naive_cpu += c2 - c1
        for name in names:
            a, b = ours.get(name, math.nan), theirs[name]
            rel = abs(a - b) / max(abs(b), 1e-12)
            per_metric_diff[name] = max(per_metric_diff.get(name, 0.0), rel)
            worst = max(worst, rel)
        print(f"output {i + 1}/{len(outputs)} ({c} x {s}): evalkit {t1 - t0:6.2f} s   naive {t2 - t1:6.2f} s")

    n = len(outputs)
    print()
    print(
        f"metrics: {', '.join(names)}; {n} outputs at short side {args.eval_size}; "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"evalkit suite : {suite_s:7.2f} s total ({build_s:.2f} s building models once), "
        f"{suite_s / n:.2f} s/output, VGG-19 passes {suite.features.vgg_passes}"
    )
    naive_passes = n * (2 * ("content_loss" in names) + 2 * ("style_loss" in names))
    print(f"naive         : {naive_s:7.2f} s total, {naive_s / n:.2f} s/output, VGG-19 passes {naive_passes}")
    print(f"CPU seconds   : evalkit {suite_cpu:.2f}, naive {naive_cpu:.2f}")
    print(f"speed-up (naive / evalkit): wall {naive_s / suite_s:.2f}x, CPU {naive_cpu / suite_cpu:.2f}x")
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in per_metric_diff.items())
    print(f"same numbers: max relative difference {worst:.1e} ({diffs})")
    if not np.isfinite(worst) or worst > 1e-4:
        raise SystemExit("evalkit and the naive way disagree: the comparison is void")


if __name__ == "__main__":
    main()
