"""Time evalkit's scoring per output against another checkout of evalkit, side by side in one run.

Each side runs in its own process (``PYTHONPATH`` points at the checkout), alternately, on the same outputs: the
first ``--outputs`` pairs of a protocol with the blended outputs of scripts/record_metric_reference.py, every metric
of the protocol. Two figures per side: seconds per output when each pair's content and style are new to the process
("first method") and when they were seen before ("second method on the same root": references reused).

    git worktree add /tmp/evalkit-base a1490fe
    python scripts/bench_scoring.py --base /tmp/evalkit-base --protocol artistic --outputs 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import importlib.util, json, sys, time, torch
sys.path.insert(0, {checkout!r})
from evalkit.assets import AssetStore
from evalkit.metrics import MetricSuite
spec = importlib.util.spec_from_file_location("rec", {recorder!r})
rec = importlib.util.module_from_spec(spec); spec.loader.exec_module(rec)
try:
    from evalkit.protocol import load_protocol
except ImportError:
    from evalkit.specs import load_protocol
torch.set_num_threads({threads})
store = AssetStore.from_env()
names = [m for m in load_protocol({protocol!r}).metrics if m != "nima"]
suite = MetricSuite(names, "cpu", store)
samples = [s for _, s in rec.samples({protocol!r}, store, {outputs})]
suite.evaluate(samples[0])  # models built, first-call costs paid
def run(tag):
    out = []
    for i, s in enumerate(samples):
        s.output_key = f"{{tag}}:{{i}}"
        start = time.perf_counter(); suite.evaluate(s); out.append(time.perf_counter() - start)
    return out
fresh = []
for i, s in enumerate(samples):  # new references: a new key per pass, so nothing is reused
    s.content_key, s.style_key = f"c{{i}}:fresh", f"s{{i}}:fresh"
fresh = run("a")
second = run("b")  # the same references again: what a second method on the same root pays
print(json.dumps({{"fresh": fresh, "second": second, "metrics": names}}))
"""


def measure(checkout: Path, args: argparse.Namespace) -> dict:
    code = CHILD.format(
        checkout=str(checkout),
        recorder=str(Path(__file__).resolve().parent / "record_metric_reference.py"),
        protocol=args.protocol,
        outputs=args.outputs,
        threads=args.threads,
    )
    env = {**os.environ, "PYTHONPATH": str(checkout), "EVALKIT_HOME": str(Path(args.home) / checkout.name)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. a git worktree of main)")
    parser.add_argument("--head", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--protocol", default="artistic")
    parser.add_argument("--outputs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--home", default="/tmp/bench-scoring-home")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {
        "base": {"fresh": [], "second": []},
        "head": {"fresh": [], "second": []},
    }
    for _ in range(args.rounds):
        for side, checkout in (("base", args.base), ("head", args.head)):
            got = measure(checkout, args)
            for kind in ("fresh", "second"):
                results[side][kind] += got[kind]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    amx = "amx_bf16" in open("/proc/cpuinfo").read()
    print(
        f"CPU: {cpu} (AMX-BF16: {'yes' if amx else 'no'}), {args.threads} threads; protocol {args.protocol}, "
        f"{args.outputs} outputs x {args.rounds} rounds, metrics: {', '.join(got['metrics'])}"
    )
    for kind, what in (("fresh", "new references"), ("second", "references seen before")):
        base = statistics.median(results["base"][kind])
        head = statistics.median(results["head"][kind])
        print(
            f"{what}: base {base:.2f} s/output, head {head:.2f} s/output, ratio {base / head:.2f}x "
            f"(min/max head {min(results['head'][kind]):.2f}/{max(results['head'][kind]):.2f})"
        )


if __name__ == "__main__":
    main()
