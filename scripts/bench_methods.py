#!/usr/bin/env python
"""Benchmark the method core and the metric suite: ratios measured side by side, interleaved, in one run.

    python scripts/bench_methods.py [--sizes 512,1024,4k] [--methods "adain[cd16x],wct[cd16x]"] [--repeats 3]
        [--baseline-tree DIR] [--memory] [--metrics] [--threads 2]

For each method and size it times ``stylize`` (the network time a job records) in these variants:

- ``nchw``: fp32, plain NCHW tensors (the path before channels_last);
- ``channels_last``: fp32, channels_last (evalkit's default exact path);
- ``bf16``: channels_last under bf16 autocast (``--precision bf16``);
- ``baseline``: with ``--baseline-tree DIR``, a checkout of an earlier evalkit (e.g. ``git worktree add /tmp/main
  59c706b``), run on its own code, fp32.

Every variant runs in a long-lived worker process (one per code tree), and the repeats are interleaved (variant A,
B, C, A, B, C, ...), so load changes on a shared machine hit all variants alike. The report gives medians and ratios to
``nchw`` (and to ``baseline``). ``--memory`` also measures each variant's peak RSS in a fresh process per
(variant, method, size). ``--metrics`` times the full metric suite on the same outputs in both trees. Inputs: the
real 3840x2160 photograph of the ``speed`` protocol resized by evalkit's resize rule, and a style image at 512;
WCT² runs on shape-exact synthetic weights (its checkpoints are not obtainable offline; speed does not depend on the
values). Nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "adain": ("adain", "AdaIN"),
    "wct": ("wct", "WCT"),
    "wct2": ("wct2", "WCT2"),
    "pca_kd": ("pca_kd", "PcaKd"),
    "reinhard": ("reinhard", "Reinhard"),
}
DEFAULT_METHODS = "adain[cd16x],wct[cd16x],wct[official-l3],wct2[synthetic],pca_kd[vgg]"
CONTENT = ("uhd/green_park-3840x2160.jpg", "3a12f556827f3965016fffc1fb14b8f8d8236b210141505a39c2b71852616117")
STYLE = ("adain/style/woman_with_hat_matisse.jpg", None)


# -- worker side: runs inside one code tree ------------------------------------------------------------------------
class Worker:
    def __init__(self, legacy: bool, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.legacy = legacy
        self.torch = torch
        self.adapters: dict[str, Any] = {}
        if legacy:
            from evalkit.assets import default_store  # type: ignore[attr-defined]

            self.store = default_store()
        else:
            from evalkit.assets import AssetStore

            self.store = AssetStore.from_env()

    def adapter(self, selector: str, synthetic: str | None):
        if selector in self.adapters:
            return self.adapters[selector]
        name, ws = selector.split("[")[0], selector.split("[")[1].rstrip("]")
        module, cls_name = MODULES[name]
        cls = getattr(importlib.import_module(f"{'methods' if self.legacy else 'evalkit_methods'}.{module}"), cls_name)
        weight_set = "official" if ws == "synthetic" else ws
        try:
            adapter = cls(weight_set, "cpu", assets=self.store)
        except TypeError:
            adapter = cls(weight_set, "cpu")
        if ws == "synthetic":
            assert synthetic is not None
            files = {"encoder": Path(synthetic) / "encoder.pth", "decoder": Path(synthetic) / "decoder.pth"}
        else:
            files = cls.weight_sets[ws].resolve(self.store)
        adapter.load(files)
        self.adapters[selector] = (cls, adapter)
        return cls, adapter

    def layout(self, adapter: Any, channels_last: bool) -> None:
        fmt = self.torch.channels_last if channels_last else self.torch.contiguous_format
        for value in vars(adapter).values():
            if isinstance(value, self.torch.nn.Module):
                value.to(memory_format=fmt)

    def time(self, request: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        cls, adapter = self.adapter(request["method"], request.get("synthetic"))
        mode = request["mode"]
        content = torch.from_numpy(__import__("numpy").load(request["content"]))
        style = torch.from_numpy(__import__("numpy").load(request["style"]))
        channels_last = mode in ("channels_last", "bf16")
        self.layout(adapter, channels_last)
        if channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
            style = style.contiguous(memory_format=torch.channels_last)
        params = cls.resolve_params({})
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else torch.autocast("cpu", enabled=False)
        )
        with torch.no_grad(), autocast:
            start = time.perf_counter()
            out = adapter.stylize(content, style, **params)
            seconds = time.perf_counter() - start
        if request.get("save"):
            __import__("numpy").save(request["save"], out.float().clamp(0, 1).numpy())
        return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    def metrics(self, request: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        torch = self.torch
        from evalkit.metrics import EvalSample, MetricSuite

        names = request["names"]
        suite = MetricSuite(names, "cpu") if self.legacy else MetricSuite(names, "cpu", self.store)
        content = torch.from_numpy(np.load(request["content"]))
        style = torch.from_numpy(np.load(request["style"]))
        outputs = [torch.from_numpy(np.load(p)) for p in request["outputs"]]
        suite.evaluate(EvalSample(outputs[0], content, style, "warm", "c", "s"))  # models built, caches warm
        start = time.perf_counter()
        for i, out in enumerate(outputs):
            values = suite.evaluate(EvalSample(out, content, style, f"o{request['round']}-{i}", "c", "s"))
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "values": {v.name: v.value for v in values}}


def worker_main(legacy: bool, threads: int) -> None:
    worker = Worker(legacy, threads)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = getattr(worker, request["op"])(request)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which prints it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


# -- driver side ---------------------------------------------------------------------------------------------------
class Process:
    """A long-lived worker in one code tree, answering one JSON request per line."""

    def __init__(self, tree: Path, legacy: bool, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(threads)]
            + (["--legacy"] if legacy else []),
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline() or '{"error": "worker died"}')
        if "error" in reply:
            raise SystemExit(f"worker error on {request}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(60)


def prepare_inputs(work: Path, sizes: list[str]) -> dict[str, dict[str, str]]:
    """Content at every size (evalkit's resize rule) and the style at 512, as .npy files both trees read."""
    import numpy as np

    from evalkit import imaging
    from evalkit.assets import Asset, AssetStore

    store = AssetStore.from_env()
    photo = imaging.load_image(store.fetch(Asset(CONTENT[0], CONTENT[1], kind="data")))
    style = imaging.load_image(store.fetch(Asset(STYLE[0], None, kind="data")))
    out: dict[str, dict[str, str]] = {}
    style_path = work / "style.npy"
    np.save(style_path, imaging.to_tensor(imaging.resize(style, imaging.Resolution.parse("512"))).numpy())
    for size in sizes:
        path = work / f"content-{size}.npy"
        np.save(path, imaging.to_tensor(imaging.resize(photo, imaging.Resolution.parse(size))).numpy())
        out[size] = {"content": str(path), "style": str(style_path)}
    return out


def synthetic_wct2(work: Path) -> str:
    import torch
    from evalkit_methods.wct2 import WaveDecoder, WaveEncoder

    folder = work / "wct2-synthetic"
    folder.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for name, net in (("encoder", WaveEncoder("cat5")), ("decoder", WaveDecoder("cat5"))):
        state = {
            k: (v if "pool" in k or "recon" in k else torch.randn(v.shape, generator=gen) * 0.02)
            for k, v in net.state_dict().items()
        }
        torch.save(state, folder / f"{name}.pth")
    return str(folder)


def peak_in_fresh_process(tree: Path, legacy: bool, threads: int, request: dict[str, Any]) -> int:
    proc = Process(tree, legacy, threads)
    try:
        return int(proc.ask({**request, "op": "time"})["peak_rss"])
    finally:
        proc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--legacy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="512,1024,4k")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    parser.add_argument("--memory", action="store_true", help="peak RSS per variant, each in a fresh process")
    parser.add_argument("--metrics", action="store_true", help="time the full metric suite in both trees")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args()
    if args.worker:
        worker_main(args.legacy, args.threads)
        return 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    from evalkit.registry import split_selectors

    methods = split_selectors(args.methods)
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    inputs = prepare_inputs(work, sizes)
    synthetic = synthetic_wct2(work)
    current = Process(ROOT, legacy=False, threads=args.threads)
    baseline = Process(args.baseline_tree, legacy=True, threads=args.threads) if args.baseline_tree else None
    variants: list[tuple[str, Process, str]] = [
        ("nchw", current, "nchw"),
        ("channels_last", current, "channels_last"),
        ("bf16", current, "bf16"),
    ]
    if baseline:
        variants.append(("baseline", baseline, "nchw"))
    results: dict[str, Any] = {"threads": args.threads, "times": {}, "memory": {}, "metrics": {}}
    for method in methods:
        for size in sizes:
            base = {"method": method, "synthetic": synthetic, **inputs[size]}
            for _, proc, mode in variants:  # warm-up: models loaded, allocator and kernels warm
                proc.ask({**base, "op": "time", "mode": mode})
            times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            for _ in range(args.repeats):
                for name, proc, mode in variants:
                    times[name].append(proc.ask({**base, "op": "time", "mode": mode})["seconds"])
            results["times"][f"{method}@{size}"] = times
            med = {k: statistics.median(v) for k, v in times.items()}
            line = "  ".join(f"{k} {v:.3f}s" for k, v in med.items())
            ratios = (
                f"nchw/channels_last {med['nchw'] / med['channels_last']:.2f}x, nchw/bf16 "
                f"{med['nchw'] / med['bf16']:.2f}x"
            )
            if baseline:
                ratios += (
                    f", baseline/channels_last {med['baseline'] / med['channels_last']:.2f}x, baseline/bf16 "
                    f"{med['baseline'] / med['bf16']:.2f}x"
                )
            print(f"{method:20s} {size:>5s}  {line}  |  {ratios}", flush=True)
            if args.memory:
                peaks = {
                    name: peak_in_fresh_process(
                        proc is baseline and args.baseline_tree or ROOT,
                        proc is baseline,
                        args.threads,
                        {**base, "mode": mode},
                    )
                    for name, proc, mode in variants
                }
                results["memory"][f"{method}@{size}"] = peaks
                print(
                    " " * 28 + "peak RSS " + "  ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in peaks.items()), flush=True
                )
    if args.metrics:
        results["metrics"] = bench_metrics(work, inputs, current, baseline, args.repeats)
    for proc in (current, baseline):
        if proc:
            proc.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def bench_metrics(
    work: Path, inputs: dict[str, dict[str, str]], current: Process, baseline: Process | None, repeats: int
) -> dict[str, Any]:
    """The full suite (every available metric) on six outputs at the evaluation size 512, both trees interleaved."""
    import numpy as np

    size = "512" if "512" in inputs else next(iter(inputs))
    content = np.load(inputs[size]["content"])
    rng = np.random.default_rng(0)
    outputs = []
    for i in range(6):
        path = work / f"out-{i}.npy"
        np.save(path, np.clip(content + rng.normal(0, 0.02 * (i + 1), content.shape), 0, 1).astype(np.float32))
        outputs.append(str(path))
    names = ["content_loss", "style_loss", "ssim", "fsim", "niqe", "brisque"]
    request = {
        "op": "metrics",
        "names": names,
        "outputs": outputs,
        "content": inputs[size]["content"],
        "style": inputs[size]["style"],
    }
    times: dict[str, list[float]] = {"current": [], "baseline": []} if baseline else {"current": []}
    values = {}
    for r in range(repeats):
        for name, proc in (("current", current), ("baseline", baseline)):
            if proc is None:
                continue
            reply = proc.ask({**request, "round": r})
            times[name].append(reply["seconds"])
            values[name] = reply["values"]
    med = {k: statistics.median(v) for k, v in times.items()}
    text = f"metric suite (6 outputs at {size}): " + "  ".join(f"{k} {v:.2f}s" for k, v in med.items())
    if baseline:
        text += f"  |  baseline/current {med['baseline'] / med['current']:.2f}x"
        worst = max(
            abs(values["current"][m] - values["baseline"][m]) / max(abs(values["baseline"][m]), 1e-12)
            for m in names
            if values["baseline"].get(m) is not None
        )
        text += f"; largest relative difference of the last sample's values {worst:.1e}"
    print(text, flush=True)
    return {"times": times, "values": values}


if __name__ == "__main__":
    sys.exit(main())
