"""The runner end to end: third-party plugins, bad inputs as results, SIGKILL resume, export."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evalkit.assets import AssetSettings
from evalkit.runner import RunRequest, run_benchmark
from evalkit.store import ResultsStore


def _save(path: Path, img: Image.Image, **kw) -> str:
    img.save(path, **kw)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _gradient(w=48, h=32) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)
    arr = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90, np.float32)], -1)
    return Image.fromarray(arr.astype(np.uint8))


def write_protocol(root: Path, images: dict[str, str], pairs: list[tuple[str, str, str]], **extra) -> Path:
    lines = [
        'name = "t"',
        'resolutions = ["32"]',
        "style_size = 32",
        "eval_size = 32",
        'metrics = ["content_loss", "style_loss"]',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    for image_id, sha in images.items():
        lines += [f"[images.{image_id}]", f'mirror = "t/{image_id}.img"', f'sha256 = "{sha}"']
    for pair_id, content, style in pairs:
        lines += ["[[pairs]]", f'id = "{pair_id}"', f'content = "{content}"', f'style = "{style}"']
    path = root / "t.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def generated_protocol(
    root: Path, pair_ids: list[str], *, step: int = 40, style: Image.Image | None = None, extra: str = "", **fields
) -> tuple[Path, Path]:
    """A protocol (``root/t.toml``) on generated images in a mirror folder (``root/data``): one style (a gradient
    unless ``style``), and per pair a content gradient rotated by ``step`` degrees more than the last; ``fields``
    become top-level protocol fields, ``extra`` is appended (a ``[params.X]`` table). Returns (protocol, mirror)."""
    mirror = root / "data"
    (mirror / "t").mkdir(parents=True, exist_ok=True)
    images = {"style": _save(mirror / "t" / "style.img", style or _gradient(), format="PNG")}
    for i in range(len(pair_ids)):
        images[f"c{i}"] = _save(mirror / "t" / f"c{i}.img", _gradient().rotate(i * step), format="PNG")
    protocol = write_protocol(root, images, [(pid, f"c{i}", "style") for i, pid in enumerate(pair_ids)], **fields)
    if extra:
        protocol.write_text(protocol.read_text() + extra)
    return protocol, mirror


@pytest.fixture
def bad_input_protocol(tmp_path):
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    d = mirror / "t"
    shas = {
        "style": _save(d / "style.img", _gradient().rotate(90, expand=True), format="PNG"),
        "good": _save(d / "good.img", _gradient(), format="PNG"),
    }
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[:, :16, 3] = 255
    shas["rgba"] = _save(d / "rgba.img", Image.fromarray(rgba, "RGBA"), format="PNG")
    shas["deep16"] = _save(
        d / "deep16.img", Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)), format="PNG"
    )
    shas["palette"] = _save(d / "palette.img", _gradient().convert("P"), format="PNG")
    img = _gradient(64, 32)
    exif = img.getexif()
    exif[0x0112] = 8
    shas["exif"] = _save(d / "exif.img", img, format="JPEG", exif=exif)
    (d / "corrupt.img").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    shas["corrupt"] = hashlib.sha256((d / "corrupt.img").read_bytes()).hexdigest()
    _save(d / "wrongsha.img", _gradient(), format="PNG")
    shas["wrongsha"] = "0" * 64
    pairs = [(name, name, "style") for name in ("good", "rgba", "deep16", "palette", "exif", "corrupt", "wrongsha")]
    return write_protocol(tmp_path, shas, pairs), mirror


def test_bad_inputs_are_results_and_other_jobs_finish(plugin, bad_input_protocol, tmp_path):
    protocol, mirror = bad_input_protocol
    out = tmp_path / "results"
    request = RunRequest(
        protocol=str(protocol),
        methods=["meanshift", "nosuchmethod", "boom"],
        out=out,
        assets=AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror)),
        progress=False,
    )
    summary = run_benchmark(request)
    assert any("unknown method 'nosuchmethod'" in e for e in summary.plan_errors)
    with ResultsStore(out) as store:
        jobs = store.jobs_frame().set_index(["method", "pair_id"])
        metrics = store.metrics_frame()
    status = jobs["status"].to_dict()
    for pair in ("good", "rgba", "deep16", "palette", "exif"):
        assert status[("meanshift", pair)] == "ok", jobs.loc[("meanshift", pair), "message"]
    corrupt = jobs.loc[("meanshift", "corrupt")]
    assert (
        corrupt["status"] == "error"
        and "corrupt.img" in corrupt["message"]
        and "cannot be decoded" in corrupt["message"]
    )
    wrong = jobs.loc[("meanshift", "wrongsha")]
    assert wrong["status"] == "error" and "wrongsha.img" in wrong["message"] and "sha256" in wrong["message"]
    assert set(jobs.loc["boom", "status"]) == {"error"}
    assert "exploded on purpose" in jobs.loc[("boom", "good"), "message"]
    # The EXIF image (64x32 stored, rotated 90 degrees for display) is benchmarked upright: 32 wide, 64 high.
    assert (jobs.loc[("meanshift", "exif"), "width"], jobs.loc[("meanshift", "exif"), "height"]) == (32, 64)
    ok_metrics = metrics[metrics["status"] == "ok"]
    assert len(ok_metrics) == 2 * 5 and np.isfinite(ok_metrics["value"]).all()
    # RGBA handled by compositing over white: the transparent half of the output is brighter than the opaque half.
    out_png = np.asarray(Image.open(out / jobs.loc[("meanshift", "rgba"), "output_path"]), np.float32)
    assert out_png[:, 20:].mean() > out_png[:, :12].mean() + 50


def test_third_party_adapter_is_listed_by_the_cli(plugin):
    listing = subprocess.run(
        [sys.executable, "-m", "evalkit", "methods"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert listing.returncode == 0, listing.stderr
    assert "meanshift" in listing.stdout and "gatys" in listing.stdout


def test_rerun_skips_finished_jobs_and_params_change_keys(plugin, bad_input_protocol, tmp_path):
    protocol, mirror = bad_input_protocol
    out = tmp_path / "results"
    assets = AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror))
    first = run_benchmark(
        RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False)
    )
    second = run_benchmark(
        RunRequest(protocol=str(protocol), methods=["meanshift"], out=out, assets=assets, progress=False)
    )
    assert first.reused == 0 and second.reused == 5  # ok jobs kept; the 2 failed ones are retried
    assert sum(second.counts.values()) == 2
    third = run_benchmark(
        RunRequest(
            protocol=str(protocol),
            methods=["meanshift"],
            out=out,
            assets=assets,
            progress=False,
            params={"meanshift": {"strength": "0.5"}},
        )
    )
    assert third.reused == 0
    with ResultsStore(out) as store:
        assert len(store.jobs_frame()) == 14  # two parameter settings x 7 pairs, no duplicates


def _recorded_jobs(db: Path) -> int:
    """Jobs a running run has recorded so far (0 while its database is not there or busy)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(plugin, tmp_path):
    protocol, mirror = generated_protocol(
        tmp_path, [f"p{i}" for i in range(8)], methods='["meanshift"]', extra="[params.meanshift]\nsleep = 0.7\n"
    )
    out = tmp_path / "results"
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(mirror)}
    cmd = [sys.executable, "-m", "evalkit", "run", "--protocol", str(protocol), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "evalkit.sqlite"
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.2)
        done = _recorded_jobs(db)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= done < 8, f"the run was not interrupted mid-way (done={done})"
    with sqlite3.connect(db) as conn:
        before = dict(conn.execute("SELECT job_key, finished FROM jobs").fetchall())
    assert len(before) < 8
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT job_key, finished, attempts, status FROM jobs").fetchall()
        metric_rows = conn.execute("SELECT job_key, metric, COUNT(*) FROM metrics GROUP BY job_key, metric").fetchall()
        runs = conn.execute("SELECT run_id FROM runs").fetchall()
    assert len(rows) == 8 and len({r[0] for r in rows}) == 8
    assert all(r[3] == "ok" and r[2] == 1 for r in rows)
    for key, finished in before.items():  # jobs finished before the kill were kept, not redone
        assert dict((r[0], r[1]) for r in rows)[key] == finished
    assert len(metric_rows) == 16 and all(n == 1 for *_, n in metric_rows)
    assert len(runs) == 2
    assert len(list((out / "images").rglob("*.png"))) == 8


def test_export_csv_and_parquet_match_the_database(plugin, bad_input_protocol, tmp_path):
    protocol, mirror = bad_input_protocol
    out = tmp_path / "results"
    run_benchmark(
        RunRequest(
            protocol=str(protocol),
            methods=["meanshift"],
            out=out,
            progress=False,
            assets=AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror)),
        )
    )
    for fmt in ("csv", "parquet"):
        res = subprocess.run(
            [sys.executable, "-m", "evalkit", "export", "--results", str(out), "--format", fmt],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        jobs = read(out / "export" / f"jobs.{fmt}")
        wide = read(out / "export" / f"metrics_wide.{fmt}")
        assert len(jobs) == 7 and sorted(jobs["status"].unique()) == ["error", "ok"]
        assert len(wide) == 5 and {"content_loss", "style_loss"} <= set(wide.columns)
        timings = read(out / "export" / f"timings.{fmt}")
        assert len(timings) == 5 and set(timings["repeat"]) == {0}  # one timed repeat per ok job (local default)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's children lists)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("executor", ["local", "isolated"])
def test_sigterm_ends_the_run_like_ctrl_c_whatever_the_executor(plugin, tmp_path, executor):
    """SIGTERM (what schedulers, containers and `timeout` send): the run is marked interrupted with that reason,
    no traceback, no worker outlives the driver, and a rerun finishes the rest without duplicates."""
    from evalkit.interrupts import SIGTERM_NOTE

    protocol, mirror = generated_protocol(
        tmp_path, [f"p{i}" for i in range(6)], methods='["meanshift"]', extra="[params.meanshift]\nsleep = 1.0\n"
    )
    out = tmp_path / "results"
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(mirror)}
    cmd = [
        sys.executable, "-m", "evalkit", "run", "--protocol", str(protocol), "--out", str(out), "--no-progress",
        "--executor", executor,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db = out / "evalkit.sqlite"
    deadline, done, workers = time.time() + 240, 0, set()
    while time.time() < deadline and done < 1:
        time.sleep(0.2)
        workers |= _descendants(proc.pid)
        done = _recorded_jobs(db)
    workers |= _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT status, note FROM runs").fetchall()
        recorded = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert runs == [("interrupted", SIGTERM_NOTE)] and 1 <= recorded < 6
    if executor == "isolated":
        assert workers, "the isolated executor ran no worker process"
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "a worker outlived its driver"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT job_key) FROM jobs").fetchone() == (6, 6)
