"""The reliability probe: bad inputs, CLI mistakes and malformed protocols, each run through ``evalkit`` as a user
would, counted by outcome.

Every case states what a correct evalkit does with it: ``error`` (a one-line ``error:`` naming the file or field, a
non-zero exit, nothing recorded) or ``result`` (the run goes on; the bad pair is a job with a failure status and a
one-line message, the good pair is ``ok``). Each run case writes into a copy of a results root that already holds
finished jobs, so a lost row or PNG shows. Prints one line per case and the totals the reliability issue asks for:
cases, one-line errors, correct results, tracebacks (must be 0), rows lost (must be 0).

    python scripts/probe_zoo.py [--only bad-input|cli|protocol] [--keep DIR]

Needs no weights: methods and metrics are weight-free (reinhard, identity; ssim).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_PAIR = ("good", "c0", "style")


@dataclass
class Case:
    zoo: str
    name: str
    expect: str  # "error" | "result"
    args: list[str]
    prepare: Callable[[Path], None] | None = None  # writes the files the case needs into the probe folder
    uses_root: bool = True  # a copy of the base root with finished jobs


@dataclass
class Outcome:
    case: Case
    code: int
    kind: str  # one-line error | result | traceback | usage error | other
    line: str
    lost: int = 0
    notes: list[str] = field(default_factory=list)


# -- images and protocols ------------------------------------------------------------------------------------------
def _png(path: Path, img: Image.Image, **kw) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _picture(seed: int, size: int = 64, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return img.convert(mode) if mode != "RGB" else img


def protocol_text(images: dict[str, str], pairs: list[tuple[str, str, str]], extra: str = "") -> str:
    lines = [
        'name = "zoo"',
        'resolutions = ["64"]',
        "style_size = 64",
        "eval_size = 64",
        'methods = ["reinhard"]',
        'metrics = ["ssim"]',
        extra,
    ]
    for image_id, sha in images.items():
        lines += [f"[images.{image_id}]", f'mirror = "zoo/{image_id}.img"', f'sha256 = "{sha}"']
    for pair_id, content, style in pairs:
        lines += ["[[pairs]]", f'id = "{pair_id}"', f'content = "{content}"', f'style = "{style}"']
    return "\n".join(lines) + "\n"


def base_images(mirror: Path) -> dict[str, str]:
    return {
        "style": _png(mirror / "zoo" / "style.img", _picture(1), format="PNG"),
        "c0": _png(mirror / "zoo" / "c0.img", _picture(2), format="PNG"),
    }


def image_case(name: str, make: Callable[[Path], str], expect: str = "result") -> Case:
    """A protocol whose pair ``bad`` uses the image ``make`` writes (returning the sha256 to pin)."""

    def prepare(folder: Path) -> None:
        mirror = folder / "data"
        images = base_images(mirror)
        images["bad"] = make(mirror / "zoo" / "bad.img")
        pairs = [GOOD_PAIR, ("bad-pair", "bad", "style")]
        (folder / "case.toml").write_text(protocol_text(images, pairs))

    return Case("bad-input", name, expect, ["run", "-p", "{folder}/case.toml", "--out", "{root}"], prepare)


def protocol_case(name: str, mutate: Callable[[str], str], expect: str = "error") -> Case:
    def prepare(folder: Path) -> None:
        images = base_images(folder / "data")
        (folder / "case.toml").write_text(mutate(protocol_text(images, [GOOD_PAIR])))

    return Case("protocol", name, expect, ["run", "-p", "{folder}/case.toml", "--out", "{root}"], prepare)


def _exif_rotated(path: Path) -> str:
    img = _picture(5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    return _png(path, img, format="JPEG", exif=exif)


def _huge(path: Path) -> str:
    return _png(path, Image.new("1", (11_000, 11_000)), format="PNG")


def cases() -> list[Case]:
    run = ["run", "-p", "{folder}/base.toml", "--out", "{root}"]
    bad_input = [
        image_case("missing file", lambda p: "0" * 64),
        image_case("corrupt bytes", lambda p: _raw(p, os.urandom(5000))),
        image_case("0-byte file", lambda p: _raw(p, b"")),
        image_case("text named .png", lambda p: _raw(p, b"this is not an image\n" * 50)),
        image_case("truncated PNG", lambda p: _raw(p, _png(p, _picture(3), format="PNG") and p.read_bytes()[:900])),
        image_case("wrong sha256", lambda p: (_png(p, _picture(3), format="PNG"), "f" * 64)[1]),
        image_case(
            "16-bit greyscale", lambda p: _png(p, Image.fromarray(np.full((64, 64), 40000, np.uint16)), format="PNG")
        ),
        image_case("CMYK JPEG", lambda p: _png(p, _picture(4, mode="CMYK"), format="JPEG")),
        image_case("palette + transparency", lambda p: _png(p, _picture(4).convert("P"), format="PNG", transparency=0)),
        image_case("grey + alpha", lambda p: _png(p, _picture(4, mode="LA"), format="PNG")),
        image_case("EXIF rotation", _exif_rotated),
        image_case("1x1 image", lambda p: _png(p, Image.new("RGB", (1, 1)), format="PNG")),
        image_case("121 MP image", _huge),
        image_case(
            "GIF animation",
            lambda p: _png(
                p, _picture(6).convert("P"), format="GIF", save_all=True, append_images=[_picture(7).convert("P")]
            ),
        ),
    ]
    cli = [
        Case("cli", "--device nosuch", "error", [*run, "--device", "nosuch"]),
        Case("cli", "--out names a file", "error", ["run", "-p", "{folder}/base.toml", "--out", "{folder}/base.toml"]),
        Case("cli", "--seeds 0", "error", [*run, "--seeds", "0"]),
        Case("cli", "--seeds -1", "error", [*run, "--seeds", "-1"]),
        Case("cli", "--repeats -1", "error", [*run, "--repeats", "-1"]),
        Case("cli", "--warmup -1", "error", [*run, "--warmup", "-1"]),
        Case("cli", "--res abc", "error", [*run, "--res", "abc"]),
        Case("cli", "--res 0", "error", [*run, "--res", "0"]),
        Case("cli", "unknown method", "error", [*run, "-m", "nosuch"]),
        Case("cli", "unknown metric", "error", [*run, "--metrics", "nosuch"]),
        Case("cli", "param not a number", "error", [*run, "--param", "gatys.iterations=abc", "-m", "gatys"]),
        Case("cli", "param nan", "error", [*run, "-m", "adain[cd16x]", "--param", "adain.alpha=nan"]),
        Case("cli", "param of no method", "error", [*run, "--param", "nosuch.alpha=1"]),
        Case("cli", "param unknown name", "error", [*run, "--param", "reinhard.nosuch=1"]),
        Case("cli", "param huge cost", "error", [*run, "-m", "gatys", "--param", "gatys.iterations=1000000000000"]),
        Case("cli", "bool param not a bool", "error", [*run, "-m", "wct", "--param", "wct.use_masks=<script>"]),
        Case("cli", "sweep without values", "error", [*run, "--sweep", "reinhard.strength"]),
        Case(
            "cli",
            "sweep of 10,000 points",
            "error",
            [*run, "--sweep", "reinhard.strength=" + ",".join(str(i / 10000) for i in range(10000))],
        ),
        Case("cli", "unknown executor", "error", [*run, "--executor", "nosuch"]),
        Case("cli", "executor option of another", "error", [*run, "--executor-opt", "timeout=5"]),
        Case(
            "cli",
            "executor option bad value",
            "error",
            [*run, "--executor", "isolated", "--executor-opt", "timeout=-3"],
        ),
        Case("cli", "--max-retries -1", "error", [*run, "--max-retries", "-1"]),
        Case("cli", "unknown protocol", "error", ["run", "-p", "nosuch", "--out", "{root}"]),
        Case(
            "cli", "leaderboard of a missing root", "error", ["leaderboard", "--results", "{folder}/none"], None, False
        ),
        Case("cli", "runs of a missing root", "error", ["runs", "--results", "{folder}/none"], None, False),
        Case("cli", "speed of a missing root", "error", ["speed", "--results", "{folder}/none"], None, False),
        Case("cli", "export of a missing root", "error", ["export", "--results", "{folder}/none"], None, False),
        Case("cli", "compare of a missing root", "error", ["compare", "--results", "{folder}/none"], None, False),
        Case("cli", "compare unknown metric", "error", ["compare", "--results", "{root}", "--metric", "nosuch"]),
        Case("cli", "leaderboard unknown format", "error", ["leaderboard", "--results", "{root}", "--format", "pdf"]),
        Case(
            "cli",
            "import of a missing folder",
            "error",
            ["import", "{folder}/none", "-p", "{folder}/base.toml", "--as", "mine", "--out", "{root}"],
        ),
        Case(
            "cli",
            "study build from a missing root",
            "error",
            [
                "study",
                "build",
                "--results",
                "{folder}/none",
                "-q",
                "style",
                "-m",
                "reinhard,identity",
                "-o",
                "{folder}/s",
            ],
            None,
            False,
        ),
        Case("cli", "study analyze of a missing study", "error", ["study", "analyze", "{folder}/nostudy"], None, False),
        Case("cli", "weights of an unknown method", "error", ["weights", "fetch", "nosuch"], None, False),
    ]
    protocol = [
        protocol_case("TOML syntax error", lambda t: t + "\n[[pairs]\n"),
        protocol_case("no name: the file's stem", lambda t: t.replace('name = "zoo"\n', ""), "result"),
        protocol_case("no pairs", lambda t: t.split("[[pairs]]")[0]),
        protocol_case(
            "pair with unknown image", lambda t: t + '[[pairs]]\nid = "x"\ncontent = "nosuch"\nstyle = "style"\n'
        ),
        protocol_case("duplicate pair id", lambda t: t + '[[pairs]]\nid = "good"\ncontent = "c0"\nstyle = "style"\n'),
        protocol_case(
            "pair id with a slash", lambda t: t + '[[pairs]]\nid = "a/../b"\ncontent = "c0"\nstyle = "style"\n'
        ),
        protocol_case("resolution abc", lambda t: t.replace('resolutions = ["64"]', 'resolutions = ["abc"]')),
        protocol_case("resolutions not a list", lambda t: t.replace('resolutions = ["64"]', "resolutions = 64")),
        protocol_case("eval_size 0", lambda t: t.replace("eval_size = 64", "eval_size = 0")),
        protocol_case("seeds a string", lambda t: t.replace("style_size = 64", 'style_size = 64\nseeds = "two"')),
        protocol_case("unknown metric", lambda t: t.replace('metrics = ["ssim"]', 'metrics = ["nosuch"]')),
        protocol_case("unknown method", lambda t: t.replace('methods = ["reinhard"]', 'methods = ["nosuch"]')),
        protocol_case("misspelt field", lambda t: t.replace("resolutions =", "resolution =")),
        protocol_case("[params] of no method", lambda t: t + "[params.nosuch]\nalpha = 1\n"),
        protocol_case("[params] bad value", lambda t: t + '[params.reinhard]\nstrength = "strong"\n'),
        protocol_case("image without sha256", lambda t: t.replace('sha256 = "', 'sha = "', 1)),
        protocol_case("sha256 not hex", lambda t: t.replace('sha256 = "', 'sha256 = "zz', 1)),
        protocol_case(
            "mirror leaves the mirror", lambda t: t.replace('mirror = "zoo/style.img"', 'mirror = "../x.img"')
        ),
        protocol_case(
            "absolute mirror path", lambda t: t.replace('mirror = "zoo/style.img"', 'mirror = "/etc/passwd"')
        ),
        protocol_case("[executor] unknown", lambda t: t + "[executor.nosuch]\nx = 1\n"),
        protocol_case("[executor] bad value", lambda t: t + "[executor.isolated]\ntimeout = -1\n"),
        protocol_case(
            "min_image_side 0", lambda t: t.replace("style_size = 64", "style_size = 64\nmin_image_side = 0")
        ),
    ]
    return bad_input + cli + protocol


# -- running ---------------------------------------------------------------------------------------------------------
def jobs_of(root: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """job key -> (status, output path, message) of a results root."""
    db = root / "evalkit.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT job_key, status, output_path, message FROM jobs")
        return {k: (s, p, m) for k, s, p, m in rows}


def classify(code: int, stdout: str, stderr: str, recorded: int) -> tuple[str, str]:
    text = stdout + stderr
    if "Traceback" in text:
        return "traceback", next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    if code != 0 and len(errors) == 1:
        return "one-line error", errors[0]
    if code in (0, 1):
        return "result", f"exit {code}, {recorded} job(s) recorded"
    if code == 2 and "Usage:" in text:
        lines = [ln.strip("│ ").strip() for ln in text.splitlines() if ln.strip("│╭╰─ ")]
        return "usage error", " / ".join(lines[-2:])
    return "other", f"exit {code}: " + " / ".join(text.strip().splitlines()[-2:])


def probe(case: Case, folder: Path, base_root: Path) -> Outcome:
    work = folder / "cases" / f"{case.zoo}-{hashlib.sha1(case.name.encode()).hexdigest()[:8]}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(folder / "base.toml", work / "base.toml")
    shutil.copytree(folder / "data", work / "data")
    root = work / "results"
    if case.uses_root:
        shutil.copytree(base_root, root)
    if case.prepare is not None:
        case.prepare(work)
    before = jobs_of(root)
    args = [a.replace("{folder}", str(work)).replace("{root}", str(root)) for a in case.args]
    if args[0] == "run":
        args.append("--no-progress")
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(work / "data"), "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, timeout=600, cwd=work
    )
    after = jobs_of(root)
    lost = sum(1 for k, (_, path, _) in before.items() if k not in after or (path and not (root / path).is_file()))
    kind, line = classify(done.returncode, done.stdout, done.stderr, len(after) - len(before))
    outcome = Outcome(case, done.returncode, kind, line, lost)
    if case.expect == "result" and kind == "result":
        new = [(s, m) for k, (s, _, m) in after.items() if k not in before]
        outcome.notes.append("statuses " + ",".join(sorted(s for s, _ in new)))
        outcome.line = next((m for s, m in new if s != "ok" and m), outcome.line)
    if case.expect == "error" and kind == "one-line error" and len(after) != len(before):
        outcome.notes.append("recorded jobs although refused")
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("bad-input", "cli", "protocol"))
    parser.add_argument("--keep", type=Path, help="probe folder to keep (default: a temporary one)")
    opts = parser.parse_args()
    folder = opts.keep or Path(tempfile.mkdtemp(prefix="evalkit-zoo-"))
    folder.mkdir(parents=True, exist_ok=True)
    images = base_images(folder / "data")
    (folder / "base.toml").write_text(protocol_text(images, [GOOD_PAIR]))
    base_root = folder / "base-results"
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(folder / "data")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            "-p",
            str(folder / "base.toml"),
            "-m",
            "reinhard,identity",
            "--out",
            str(base_root),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    selected = [c for c in cases() if opts.only in (None, c.zoo)]
    outcomes = []
    for case in selected:
        outcome = probe(case, folder, base_root)
        outcomes.append(outcome)
        ok = outcome.kind == ("one-line error" if case.expect == "error" else "result") and not outcome.lost
        mark = "ok " if ok else "BAD"
        extra = f" [{'; '.join(outcome.notes)}]" if outcome.notes else ""
        print(f"{mark} {case.zoo:9} {case.name:32} {outcome.kind:15} {outcome.line[:150]}{extra}", flush=True)
    totals = {
        "cases": len(outcomes),
        "one-line errors": sum(o.kind == "one-line error" for o in outcomes),
        "results": sum(o.kind == "result" for o in outcomes),
        "usage errors": sum(o.kind == "usage error" for o in outcomes),
        "tracebacks": sum(o.kind == "traceback" for o in outcomes),
        "other": sum(o.kind == "other" for o in outcomes),
        "unexpected": sum(o.kind != ("one-line error" if o.case.expect == "error" else "result") for o in outcomes),
        "rows lost": sum(o.lost for o in outcomes),
    }
    print(json.dumps(totals))
    if not opts.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if totals["tracebacks"] == 0 and totals["rows lost"] == 0 and totals["unexpected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
