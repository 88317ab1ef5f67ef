"""Your method on the leaderboard: outputs made by a plain script (``evalkit import``), a method in one file
(``--methods ./file.py:stylize``) and the Python API (``evalkit.evaluate``), all on the same results roots."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import EvalkitError
from tests.test_runner import _gradient, generated_protocol

SCRIPT = textwrap.dedent(
    """
    # A researcher's own script: numpy and PIL only (no evalkit). Shifts each content's colour means to its style's
    # and writes {content}_stylized_{style}.png at the content's 192-px size (the quick protocol's resize rule).
    import os, sys, tomllib
    import numpy as np
    from PIL import Image
    import skimage

    protocol, out = tomllib.load(open(sys.argv[1], "rb")), sys.argv[2]
    data = os.path.dirname(skimage.__file__)
    for pair in protocol["pairs"]:
        c = Image.open(os.path.join(data, protocol["images"][pair["content"]]["resource"])).convert("RGB")
        s = Image.open(os.path.join(data, protocol["images"][pair["style"]]["resource"])).convert("RGB")
        w, h = c.size
        k = 192 / min(w, h)
        c = c.resize((round(w * k), 192) if w >= h else (192, round(h * k)), Image.Resampling.LANCZOS)
        a, b = np.asarray(c, np.float64), np.asarray(s, np.float64)
        shifted = np.clip(a - a.mean((0, 1)) + b.mean((0, 1)), 0, 255).astype(np.uint8)
        Image.fromarray(shifted).save(os.path.join(out, f"{pair['content']}_stylized_{pair['style']}.png"))
    """
)
PATTERN = "{content}_stylized_{style}.png"
METRICS = "ssim,content_loss"


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "250"})


def _db(root: Path, query: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        return conn.execute(query, args).fetchall()


def _dump(root: Path) -> list[str]:
    if not (root / "evalkit.sqlite").exists():
        return []
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        return [line for line in conn.iterdump() if "sqlite_sequence" not in line]


@pytest.fixture
def outputs(tmp_path) -> Path:
    from evalkit.protocol import find_protocol

    folder = tmp_path / "outputs"
    folder.mkdir()
    script = tmp_path / "make_outputs.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(find_protocol("quick")), str(folder)], check=True)
    return folder


def _import(folder: Path, root: Path, name: str = "mine", *extra: str):
    return _cli(
        ["import", str(folder), "-p", "quick", "--as", name, "--pattern", PATTERN, "--results", str(root)]
        + ["--metrics", METRICS, "--no-progress", *extra]
    )


def test_outputs_of_a_plain_script_are_imported_scored_and_compared(outputs, tmp_path):
    from evalkit.protocol import load_protocol

    root = tmp_path / "results"
    first = _import(outputs, root)
    assert first.exit_code == 0, first.output
    assert "imported 5 output(s) as mine (0 unchanged)" in first.output
    ran = _cli(["run", "-p", "quick", "-m", "reinhard", "--metrics", METRICS, "--results", str(root), "--no-progress"])
    assert ran.exit_code == 0, ran.output
    board = _cli(["leaderboard", "--results", str(root), "--format", "md", "--out", "-"])
    assert board.exit_code == 0, board.output
    assert "| mine (imported) |" in board.output and "| reinhard |" in board.output
    speed = _cli(["speed", "--results", str(root)])
    assert "not timed (imported)" in speed.output

    # metric values equal `evalkit score` on the same files
    protocol = load_protocol("quick")
    stored = {
        (pair, metric): value
        for pair, metric, value in _db(
            root, "SELECT j.pair_id, m.metric, m.value FROM metrics m JOIN jobs j USING(job_key) WHERE j.label='mine'"
        )
    }
    import skimage

    data = Path(skimage.__file__).parent
    for pair in protocol.pairs:
        content = data / protocol.images[pair.content].resource
        scored = _cli(
            [
                "score",
                str(outputs / PATTERN.format(content=pair.content, style=pair.style)),
                "--ref",
                str(content),
                "--eval-size",
                "192",
                "--metrics",
                METRICS,
                "--json",
            ]
        )
        assert scored.exit_code == 0, scored.output
        import json

        for row in json.loads(scored.output):
            assert stored[(pair.id, row["metric"])] == pytest.approx(row["value"], rel=1e-9)

    # re-importing the unchanged folder does nothing
    before = _db(root, "SELECT job_key, finished, attempts FROM jobs WHERE label='mine' ORDER BY job_key")
    again = _import(outputs, root)
    assert again.exit_code == 0 and "(5 unchanged)" in again.output
    assert _db(root, "SELECT job_key, finished, attempts FROM jobs WHERE label='mine' ORDER BY job_key") == before

    # changing one file re-scores only that job, and its old job is replaced
    changed = outputs / "coffee_stylized_gravel.png"
    from PIL import Image

    Image.open(changed).rotate(180).save(changed)
    third = _import(outputs, root)
    assert third.exit_code == 0, third.output
    assert "(4 unchanged)" in third.output
    after = _db(root, "SELECT job_key, finished, attempts FROM jobs WHERE label='mine' ORDER BY job_key")
    assert len(after) == 5 and len(set(after) - set(before)) == 1
    [(new_key, pair_id)] = _db(
        root,
        f"SELECT job_key, pair_id FROM jobs WHERE label='mine' AND job_key NOT IN ({','.join('?' * 5)})",
        tuple(k for k, *_ in before),
    )
    assert pair_id == "coffee-gravel"

    # a folder with two pairs missing: recorded missing; compare says on how many pairs it compared
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in sorted(outputs.iterdir())[2:]:
        (partial / f.name).write_bytes(f.read_bytes())
    (partial / "notes.png").write_bytes((outputs / "astronaut_stylized_grass.png").read_bytes())
    fourth = _import(partial, root, "partial")
    assert fourth.exit_code == 0, fourth.output
    assert "2 pair(s) without a file, recorded as missing" in fourth.output
    assert "1 file(s)" in fourth.output and "notes.png" in fourth.output  # matches no pair: warned
    assert (
        sorted(s for (s,) in _db(root, "SELECT status FROM jobs WHERE label='partial'")) == ["missing"] * 2 + ["ok"] * 3
    )
    compared = _cli(["compare", "--results", str(root), "--metric", "ssim", "--format", "md"])
    assert compared.exit_code == 0, compared.output
    row = next(line for line in compared.output.splitlines() if "mine" in line and "partial" in line)
    assert row.split("|")[3].strip() == "3"  # the shared pairs


BAD_CASES = {
    "corrupt file": ("corrupt", "coffee_stylized_gravel.png"),
    "text named .png": ("text", "coffee_stylized_gravel.png"),
    "too small": ("tiny", "coffee_stylized_gravel.png"),
    "other aspect ratio": ("square", "coffee_stylized_gravel.png"),
    "truncated": ("truncated", "coffee_stylized_gravel.png"),
}


def _break(path: Path, how: str) -> None:
    from PIL import Image

    if how == "corrupt":
        path.write_bytes(os.urandom(4000))
    elif how == "text":
        path.write_text("not an image\n")
    elif how == "tiny":
        Image.new("RGB", (3, 2)).save(path)
    elif how == "square":
        Image.new("RGB", (200, 200), (10, 20, 30)).save(path)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize(
    "case",
    [
        *BAD_CASES,
        "unknown placeholder",
        "no placeholder",
        "two pairs one file",
        "no pattern or map",
        "both",
        "map twice",
        "map bad header",
        "missing folder",
        "installed name",
        "bad name",
        "nothing matches",
    ],
)
def test_bad_imports_are_one_line_and_change_nothing(case, outputs, tmp_path):
    root = tmp_path / "results"
    seeded = _import(outputs, root, "earlier")  # something already recorded, which must survive
    assert seeded.exit_code == 0, seeded.output
    before = _dump(root)
    args = ["import", str(outputs), "-p", "quick", "--results", str(root), "--metrics", "ssim", "--no-progress"]
    name = ["--as", "mine"]
    if case in BAD_CASES:
        how, file = BAD_CASES[case]
        _break(outputs / file, how)
        args += [*name, "--pattern", PATTERN]
    elif case == "unknown placeholder":
        args += [*name, "--pattern", "{content}_{painter}.png"]
    elif case == "no placeholder":
        args += [*name, "--pattern", "out.png"]
    elif case == "two pairs one file":
        args += [*name, "--pattern", "{content}.png"]  # astronaut is the content of two pairs
    elif case == "no pattern or map":
        args += name
    elif case == "both":
        args += [*name, "--pattern", PATTERN, "--map", str(tmp_path / "m.csv")]
    elif case in ("map twice", "map bad header"):
        rows = "pair_id,file\nastronaut-grass,a.png\nastronaut-grass,b.png\n" if case == "map twice" else "x,y\n1,2\n"
        (tmp_path / "m.csv").write_text(rows)
        args += [*name, "--map", str(tmp_path / "m.csv")]
    elif case == "missing folder":
        args[1] = str(tmp_path / "nowhere")
        args += [*name, "--pattern", PATTERN]
    elif case == "installed name":
        args += ["--as", "reinhard", "--pattern", PATTERN]
    elif case == "bad name":
        args += ["--as", "my method", "--pattern", PATTERN]
    elif case == "nothing matches":
        args += [*name, "--pattern", "{content}-{style}.jpg"]
    result = subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) > 20, (case, result.stderr)
    assert _dump(root) == before, case  # nothing recorded, nothing lost


METHOD_FILE = textwrap.dedent(
    """
    import torch


    def stylize(content, style, strength: float = 1.0):
        \"\"\"Moves the content's channel means towards the style's.\"\"\"
        shift = style.mean(dim=(2, 3), keepdim=True) - content.mean(dim=(2, 3), keepdim=True)
        return (content + strength * shift).clamp(0, 1)
    """
)


@pytest.fixture
def small(tmp_path):
    protocol, mirror = generated_protocol(
        tmp_path, [f"p{i}" for i in range(3)], step=70, style=_gradient(40, 40).rotate(90)
    )
    method = tmp_path / "my_method.py"
    method.write_text(METHOD_FILE)
    return protocol, mirror, method


def _rows(root: Path) -> tuple[list[tuple], list[tuple]]:
    jobs = _db(root, "SELECT job_key, label, pair_id, status FROM jobs ORDER BY job_key")
    metrics = _db(root, "SELECT job_key, metric, value FROM metrics ORDER BY job_key, metric")
    return jobs, metrics


@pytest.mark.parametrize("executor", ["local", "isolated"])
def test_a_method_in_one_file_and_the_python_api_give_the_same_rows(executor, small, tmp_path, monkeypatch):
    import evalkit
    from evalkit.assets import AssetSettings

    protocol, mirror, method = small
    monkeypatch.setenv("EVALKIT_DATA_MIRROR", str(mirror))
    monkeypatch.chdir(tmp_path)
    cli_root, api_root = tmp_path / "cli", tmp_path / "api"
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            "-p",
            str(protocol),
            "-m",
            "./my_method.py:stylize",
            "--executor",
            executor,
            "--results",
            str(cli_root),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert ran.returncode == 0, ran.stderr

    spec = importlib.util.spec_from_file_location("my_method", method)
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_method"] = module
    spec.loader.exec_module(module)
    result = evalkit.evaluate(
        methods=[module.stylize],
        protocol=str(protocol),
        results=api_root,
        executor=executor,
        assets=AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror)),
    )
    # identical jobs; metric values equal up to the summation order of the two processes' torch thread counts
    (cli_jobs, cli_metrics), (jobs, metrics) = _rows(cli_root), _rows(api_root)
    assert cli_jobs == jobs
    assert [m[:2] for m in cli_metrics] == [m[:2] for m in metrics]
    assert [m[2] for m in cli_metrics] == pytest.approx([m[2] for m in metrics], rel=1e-9)
    assert {label for _, label, *_ in jobs} == {"my_method:stylize"} and {s for *_, s in jobs} == {"ok"}
    assert len(metrics) == 6
    assert set(result.rows["metric"]) == {"content_loss", "style_loss"} and (result.rows["n"] == 3).all()
    assert len(result.jobs) == 6 and set(result.jobs["pair_id"]) == {"p0", "p1", "p2"}

    listing = _cli(["methods", "--methods", f"{method}:stylize"])
    assert listing.exit_code == 0 and "my_method:stylize" in listing.output and "strength=1.0" in listing.output

    method.write_text(METHOD_FILE.replace("clamp(0, 1)", "clamp(0.0, 1.0)"))  # new code: new keys
    rerun = _cli(["run", "-p", str(protocol), "-m", f"{method}:stylize", "--results", str(cli_root), "--no-progress"])
    assert rerun.exit_code == 0, rerun.output
    assert len(_db(cli_root, "SELECT job_key FROM jobs")) == 6


def test_one_file_errors_are_one_line(small, tmp_path):
    protocol, _, method = small
    for selector, text in (
        (f"{tmp_path}/nope.py:stylize", "does not exist"),
        (f"{method}:transfer", "has no 'transfer'"),
    ):
        result = _cli(["run", "-p", str(protocol), "-m", selector, "--results", str(tmp_path / "r"), "--no-progress"])
        assert isinstance(result.exception, EvalkitError) and text in str(result.exception), result.output
        assert "\n" not in str(result.exception)
    broken = tmp_path / "broken.py"
    broken.write_text("def stylize(content, style:\n")
    result = _cli(["methods", "--methods", f"{broken}:stylize"])
    assert isinstance(result.exception, EvalkitError) and "SyntaxError" in str(result.exception)
