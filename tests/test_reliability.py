"""Reliability probes through the CLI, as a user (or an attacker) hits them: every bad value is one line before the
first job, no traceback; a `.part`-named pair loses nothing; damaged, empty and read-only results roots give one line
or work; a full disk stops the run cleanly and a rerun completes it."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_runner import _gradient, _save, generated_protocol, write_protocol


@pytest.fixture
def small(tmp_path):
    return generated_protocol(tmp_path, ["still.party", "p1"], step=70, style=_gradient(40, 40).rotate(90))


def _evalkit(args: list[str], mirror: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(mirror), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


BAD_VALUES = [
    (["--param", "reinhard.space=xyz"], "space"),
    (["-m", "adain[cd16x]", "--param", "adain.alpha=5"], "maximum"),
    (["-m", "adain[cd16x]", "--param", "adain.alpha=nan"], "finite"),
    (["-m", "adain[cd16x]", "--param", "adain.alpha=inf"], "finite"),
    (["-m", "gatys", "--param", "gatys.iterations=-5"], "minimum"),
    (["-m", "gatys", "--param", "gatys.iterations=1000000000000"], "maximum"),
    (["-m", "wct[cd16x]", "--param", "wct.use_masks=<script>"], "boolean"),
    (["--param", "nosuch.alpha=1"], "nosuch"),
    (["--sweep", "nosuch.alpha=1,2"], "nosuch"),
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--repeats", "-1"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--device", "nosuch"], "--device"),
    (["-m", "adain[cd16x]", "--sweep", "adain.alpha=" + ",".join(str(i / 20000) for i in range(10000))], "points"),
]


@pytest.mark.parametrize("extra,word", BAD_VALUES, ids=[" ".join(a)[:40] for a, _ in BAD_VALUES])
def test_bad_values_are_one_line_before_the_first_job(extra, word, small, tmp_path):
    protocol, mirror = small
    out = tmp_path / "results"
    methods = [] if "-m" in extra else ["-m", "reinhard"]
    result = _evalkit(["run", "-p", str(protocol), *methods, "--out", str(out), "--no-progress", *extra], mirror)
    if result.returncode == 1:  # a selector's values are checked per method: the run refuses that method
        assert word in result.stderr and "Traceback" not in result.stderr
        assert not (out / "evalkit.sqlite").exists() or "ok" not in _statuses(out), result.stderr
        return
    _one_line_error(result, word)
    assert not (out / "evalkit.sqlite").exists()  # nothing recorded


def _statuses(out: Path) -> list[str]:
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        return [s for (s,) in conn.execute("SELECT status FROM jobs WHERE method!='reinhard'")]


def test_out_naming_a_file_and_a_protocol_escaping_its_mirror_are_one_line(small, tmp_path):
    protocol, mirror = small
    (tmp_path / "afile").write_text("x")
    _one_line_error(
        _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(tmp_path / "afile")], mirror), "is a file"
    )
    for bad in ("../outside.png", "/etc/passwd"):
        escaping = tmp_path / "escape.toml"
        escaping.write_text(protocol.read_text().replace('mirror = "t/style.img"', f'mirror = "{bad}"'))
        _one_line_error(_evalkit(["run", "-p", str(escaping), "--out", str(tmp_path / "r")], mirror), "mirror")


def test_a_part_named_pair_loses_nothing_on_the_next_run(small, tmp_path):
    protocol, mirror = small
    out = tmp_path / "results"
    for _ in range(2):
        done = _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out), "--no-progress"], mirror)
        assert done.returncode == 0, done.stderr
    pngs = sorted(p.name for p in (out / "images").rglob("*.png"))
    assert len(pngs) == 2 and any(name.startswith("still.party") for name in pngs)
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        paths = [p for (p,) in conn.execute("SELECT output_path FROM jobs")]
    assert all((out / p).is_file() for p in paths)
    leftover = out / "images" / "t" / "reinhard" / "p1__32__s0__0123456789.part4242"
    leftover.write_bytes(b"half")  # what a killed writer leaves: removed by the next run, nothing else is
    _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out), "--no-progress"], mirror)
    assert not leftover.exists() and all((out / p).is_file() for p in paths)


def test_damaged_empty_and_read_only_roots(small, tmp_path):
    protocol, mirror = small
    out = tmp_path / "results"
    done = _evalkit(["run", "-p", str(protocol), "-m", "reinhard,identity", "--out", str(out), "--no-progress"], mirror)
    assert done.returncode == 0, done.stderr
    readers = (
        ["leaderboard", "--results", str(out), "--format", "md", "--out", "-"],
        ["export", "--results", str(out), "--out", str(tmp_path / "exp")],
        ["speed", "--results", str(out)],
        ["runs", "--results", str(out)],
    )

    # a read-only root (a read-only bind mount in a private mount namespace): every reader works
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a read-only mount")
    view = tmp_path / "readonly"
    view.mkdir()
    for args in (*readers, ["compare", "--results", str(out), "--metric", "content_loss"]):
        inner = [str(view) if a == str(out) else a for a in args]
        if "export" in inner:
            inner[inner.index("--out") + 1] = str(tmp_path / "exp")
        script = (
            f"mount --bind {out} {view} && mount -o remount,bind,ro {view} && "
            f"exec {sys.executable} -m evalkit {' '.join(inner)}"
        )
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "EVALKIT_DATA_MIRROR": str(mirror), "COLUMNS": "200"},
        )
        if "Operation not permitted" in result.stderr or "permission denied" in result.stderr.lower():
            pytest.skip("mount namespaces are not permitted here")
        assert result.returncode == 0, (args, result.stderr)
        if args[0] == "compare":  # two methods: the paired comparison is served from the read-only root
            assert "identity" in result.stdout and "reinhard" in result.stdout, result.stdout
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["garbage", "empty", "header"])
def test_a_damaged_database_is_one_line_for_every_command(damage, small, tmp_path):
    protocol, mirror = small
    out = tmp_path / "results"
    done = _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out), "--no-progress"], mirror)
    assert done.returncode == 0, done.stderr
    db = out / "evalkit.sqlite"
    data = bytearray(db.read_bytes())
    if damage == "garbage":
        data[len(data) // 2 : len(data) // 2 + 2048] = os.urandom(2048)
        db.write_bytes(bytes(data))
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        db.write_bytes(b"not a database" * 100)
    for args in (
        ["leaderboard", "--results", str(out)],
        ["runs", "--results", str(out)],
        ["study", "build", "--results", str(out), "-q", "style", "-m", "reinhard,identity", "-o", str(tmp_path / "s")],
        ["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out)],
    ):
        result = _evalkit(args, mirror)
        _one_line_error(result, str(db))


def test_a_full_disk_stops_cleanly_and_a_rerun_completes(small, tmp_path, monkeypatch):
    """ENOSPC injected when the second output is written: a one-line error, the first job kept, and the rerun
    (space back) finishes with every job and no duplicate."""
    from evalkit import store as store_module
    from evalkit.assets import AssetSettings
    from evalkit.errors import EvalkitError
    from evalkit.runner import RunRequest, run_benchmark

    protocol, mirror = small
    out = tmp_path / "results"
    assets = AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror))
    real = Path.write_bytes
    calls = {"n": 0}

    def full(self, data):
        if self.name.endswith(f".part{os.getpid()}"):  # an output being written
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(EvalkitError) as caught:
        run_benchmark(RunRequest(protocol=str(protocol), methods=["reinhard"], out=out, assets=assets, progress=False))
    assert "is full" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setattr(Path, "write_bytes", real)
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    summary = run_benchmark(
        RunRequest(protocol=str(protocol), methods=["reinhard"], out=out, assets=assets, progress=False)
    )
    assert summary.counts == {"ok": 1} and summary.reused == 1
    with sqlite3.connect(out / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT job_key) FROM jobs").fetchone() == (2, 2)
    assert store_module.PARTIAL.fullmatch("x__32__s0__0123456789.part1")


def test_a_huge_image_names_the_pixel_limit_without_pil_warnings(tmp_path, recwarn):
    from evalkit import imaging
    from evalkit.errors import ImageError

    big = tmp_path / "big.png"
    Image.new("1", (15000, 12000)).save(big)  # 180 MP, tiny on disk
    with pytest.raises(ImageError) as caught:
        imaging.load_image(big)
    assert "180 MP" in str(caught.value) and "limit" in str(caught.value)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_analyze_on_a_pilot_where_a_method_has_no_comparison_yet(tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app
    from tests.study_support import make_study, simulate

    labels = ["m_a", "m_b", "m_c", "m_d"]
    folder, _ = make_study(tmp_path, labels, trials_per_participant=1)
    simulate(folder, participants=1, strengths=dict.fromkeys(labels, 0.0))
    result = CliRunner().invoke(app, ["study", "analyze", str(folder), "--bootstrap", "50"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    import pandas as pd

    prefs = pd.read_csv(folder / "analysis" / "preferences.csv").set_index("label")
    unscored = prefs[prefs["votes"] == 0]
    assert len(unscored) >= 2 and unscored["score"].isna().all() and unscored["rank"].isna().all()


def test_study_hygiene_submissions_codes_and_the_static_page(tmp_path):
    import json

    from starlette.testclient import TestClient
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.study.app import create_app
    from tests.study_support import make_study, simulate

    labels = ["m_a", "m_b"]
    folder, _ = make_study(tmp_path, labels, trials_per_participant=2)  # built without --submit-url
    manifest = json.loads((folder / "static" / "manifest.json").read_text())
    body = {
        "submission": "sub0",
        "sequence": 0,
        "PROLIFIC_PID": "S0",
        "answers": [
            {"trial": i, "choice": t["options"][0]["token"], "rt": 700} for i, t in enumerate(manifest["sequences"][0])
        ],
    }
    refused = TestClient(create_app(folder)).post("/static-submit", json=body)
    assert refused.status_code == 404 and "submit-url" in refused.json()["error"]
    page = (folder / "static" / "index.html").read_text()
    assert "Content-Security-Policy" in page and "img-src 'self' data:" in page

    simulate(folder, participants=2, strengths={"m_a": 0.0, "m_b": 0.0})
    out = tmp_path / "prolific.csv"
    (out).write_text("old")
    out.chmod(0o644)
    result = CliRunner().invoke(app, ["study", "export-prolific", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out.stat().st_mode & 0o777) == 0o600 and "sim0" in out.read_text()


def _noise(size: int, seed: int) -> Image.Image:
    """Incompressible pixels: each output PNG takes ~3 bytes per pixel on disk, so a small tmpfs fills mid-run."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_a_real_full_tmpfs_stops_the_run_cleanly_and_a_rerun_completes(tmp_path):
    """A 3 MiB tmpfs (private mount namespace), filled up to ~600 KB while a run of 256-px noise outputs (~200 KB
    each) is due: the run ends with one line, every recorded job keeps its PNG, readers still work on the full disk,
    and once space is freed the same command completes with no duplicate."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux) to mount a private tmpfs")
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    images = {"style": _save(mirror / "t" / "style.img", _noise(256, 99), format="PNG")}
    for i in range(8):
        images[f"c{i}"] = _save(mirror / "t" / f"c{i}.img", _noise(256, i), format="PNG")
    protocol = write_protocol(tmp_path, images, [(f"p{i}", f"c{i}", "style") for i in range(8)])
    text = protocol.read_text().replace('"32"', '"256"').replace("style_size = 32", "style_size = 256")
    protocol.write_text(text)
    mount = tmp_path / "small"
    mount.mkdir()
    out = mount / "results"
    py = f"{sys.executable} -m evalkit"
    run = f"{py} run -p {protocol} -m reinhard --out {out} --no-progress"
    count = (
        f"{sys.executable} -c \"import sqlite3; c = sqlite3.connect('file:{out}/evalkit.sqlite?mode=ro', uri=True); "
        f"print(*c.execute('SELECT COUNT(*), COUNT(DISTINCT job_key) FROM jobs').fetchone())\""
    )
    pngs = f"find {out}/images -name '*.png' | wc -l"
    script = f"""
        mount -t tmpfs -o size=3m tmpfs {mount} || exit 97
        avail=$(df --output=avail -B1 {mount} | tail -1)
        head -c $((avail - 620000)) /dev/zero > {mount}/filler
        echo "== first"; {run} 2>&1; echo "rc=$?"
        echo "== counted $({count}) pngs $({pngs})"
        echo "== runs"; {py} runs --results {out} 2>&1; echo "rc=$?"
        echo "== board"; {py} leaderboard --results {out} --format md --out - >/dev/null 2>&1; echo "rc=$?"
        rm {mount}/filler
        echo "== second"; {run} 2>&1; echo "rc=$?"
        echo "== counted $({count}) pngs $({pngs})"
    """
    env = {**os.environ, "EVALKIT_DATA_MIRROR": str(mirror), "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600, env=env)
    if done.returncode == 97 or "Operation not permitted" in done.stderr:
        pytest.skip("mounting a tmpfs is not permitted here")
    sections = {}
    for block in done.stdout.split("== ")[1:]:
        head, _, body = block.partition("\n")
        sections.setdefault(head.split()[0], []).append((head, body))
    first = sections["first"][0][1]
    assert "rc=2" in first and "Traceback" not in first, first
    errors = [line for line in first.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is full" in errors[0] and "free space and rerun" in errors[0], first
    recorded = sections["counted"][0][0].split()  # "counted N N pngs M"
    jobs, distinct, files = int(recorded[1]), int(recorded[2]), int(recorded[4])
    assert 1 <= jobs < 8 and jobs == distinct and files == jobs, recorded  # stopped mid-run, nothing lost
    assert "rc=0" in sections["runs"][0][1] and "Traceback" not in sections["runs"][0][1], sections["runs"]
    assert "rc=0" in sections["board"][0][1], sections["board"]
    second = sections["second"][0][1]
    assert "rc=0" in second and "Traceback" not in second, second
    assert sections["counted"][1][0].split()[1:] == ["8", "8", "pngs", "8"], sections["counted"][1][0]


def test_a_root_locked_from_another_host_is_one_line_with_what_to_do(small, tmp_path):
    """The lock's holder ran on another machine (a shared root): evalkit cannot check that process, says so, and
    names the lock file and the ways out (the lock is held here by a helper process standing in for the NFS lease
    of a dead client)."""
    import json
    import time

    protocol, mirror = small
    out = tmp_path / "results"
    out.mkdir()
    lock = out / ".evalkit.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
            "fh.write(sys.argv[2]); fh.flush(); print('held', flush=True); time.sleep(120)",
            str(lock),
            json.dumps({"pid": 4242, "host": "node-b", "command": "evalkit run", "since": "2026-12-06T10:00:00"}),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(0.1)
        result = _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out), "--no-progress"], mirror)
        _one_line_error(result, "pid 4242 on node-b", "cannot see processes on node-b", str(lock), "--wait")
        assert not (out / "evalkit.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()


PROTOCOL_ZOO = [
    ("no pairs", lambda t: t.split("[[pairs]]")[0], "has no [[pairs]]"),
    ("a pair id that is a path", lambda t: t.replace('id = "p1"', 'id = "../../escape"'), "names output files"),
    ("an unknown executor table", lambda t: t + "[executor.nosuch]\nx = 1\n", "[executor.nosuch] names no installed"),
    ("a bad option of an unused executor", lambda t: t + "[executor.isolated]\ntimeout = -1\n", "timeout"),
]


@pytest.mark.parametrize(("case", "mutate", "words"), PROTOCOL_ZOO, ids=[c[0] for c in PROTOCOL_ZOO])
def test_malformed_protocols_are_one_line_before_anything_is_recorded(case, mutate, words, small, tmp_path):
    protocol, mirror = small
    protocol.write_text(mutate(protocol.read_text()))
    out = tmp_path / "results"
    result = _evalkit(["run", "-p", str(protocol), "-m", "reinhard", "--out", str(out), "--no-progress"], mirror)
    _one_line_error(result, words, str(protocol))
    assert not (out / "evalkit.sqlite").exists()
