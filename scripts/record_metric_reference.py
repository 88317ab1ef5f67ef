"""Record every metric's value on fixed samples of the quick and artistic protocols, as a regression reference.

The samples are built exactly the way a job scores its output (content at the job resolution, then every image at
the protocol's evaluation size), with an output that is a deterministic integer blend of content and style (0.6 / 0.4,
rounded in uint8), so the reference does not depend on any method's floating-point behaviour. The values written by
this script from a known-good commit are what ``tests/test_metric_reference.py`` holds every later commit to:
making the metric suite faster must not change what it computes.

    python scripts/record_metric_reference.py --out tests/data/metric_reference.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalkit import imaging
from evalkit.assets import AssetStore
from evalkit.imaging import Resolution
from evalkit.metrics import EvalSample, MetricSuite

try:
    from evalkit.protocol import load_protocol
except ImportError:  # checkouts from before the protocol module (scripts/bench_scoring.py runs them too)
    from evalkit.specs import load_protocol  # type: ignore[no-redef]

METRICS = [
    "content_loss",
    "style_loss",
    "ssim",
    "fsim",
    "niqe",
    "brisque",
    "style_loss_meanstd",
    "content_loss_mse",
    "cfsd",
    "cfsd_caffe",
]
SAMPLES = {"quick": 5, "artistic": 3}  # pairs per protocol (the first N, in protocol order)


def blend(content: Image.Image, style: Image.Image) -> Image.Image:
    """0.6 content + 0.4 style (the style resized to the content's size), rounded: exact on every machine."""
    s = np.asarray(style.resize(content.size, Image.Resampling.BILINEAR), dtype=np.uint16)
    c = np.asarray(content, dtype=np.uint16)
    return Image.fromarray(((6 * c + 4 * s + 5) // 10).astype(np.uint8))


def samples(protocol_name: str, store: AssetStore, count: int):
    protocol = load_protocol(protocol_name)
    res = Resolution.parse(protocol.resolutions[0])
    eval_res = Resolution.parse(str(protocol.eval_size))
    for pair in protocol.pairs[:count]:
        content_img = imaging.resize(imaging.load_image(store.fetch(protocol.images[pair.content])), res)
        style_src = imaging.load_image(store.fetch(protocol.images[pair.style]))
        output = blend(content_img, imaging.resize(style_src, Resolution.parse(str(protocol.style_size))))
        sample = EvalSample(
            output=imaging.to_tensor(imaging.resize(output, eval_res), "cpu"),
            content=imaging.to_tensor(imaging.resize(content_img, eval_res), "cpu"),
            style=imaging.to_tensor(imaging.resize(style_src, eval_res), "cpu"),
            output_key=f"out:{protocol_name}:{pair.id}",
            content_key=f"content:{protocol_name}:{pair.id}",
            style_key=f"style:{protocol_name}:{pair.id}",
        )
        yield pair.id, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/metric_reference.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = AssetStore.from_env()
    suite = MetricSuite(METRICS, "cpu", store)
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, count in SAMPLES.items():
        for pair_id, sample in samples(name, store, count):
            with torch.no_grad():
                scored = suite.evaluate(sample)
            values.setdefault(name, {})[pair_id] = {v.name: v.value for v in scored}
            print(name, pair_id, {v.name: v.value for v in scored})
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps({"recorded_at": rev, "metrics": METRICS, "values": values}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
