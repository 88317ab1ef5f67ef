"""Speed runs with the isolated executor: OOM under a memory budget, skip-after-OOM, timeouts, crashes, the table.

The adapters below are a real plugin (a module plus a ``.dist-info`` with an ``evalkit.methods`` entry point, the
layout pip installs), so the worker processes discover them exactly as they discover installed methods. ``memhog``
allocates ``copies`` float32 copies of the content image with ``torch.empty``: its memory grows with resolution,
and because ``--cpu-memory`` caps the worker's data segment (RLIMIT_DATA, which counts reserved, untouched pages)
a 10 GiB request fails at once without using any RAM - a 4K OOM that CI can afford. Nothing here asserts a time.
"""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import statistics
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from evalkit import registry
from evalkit.executors.base import group_specs, size_key
from evalkit.executors.isolated import classify_death, parse_bytes
from evalkit.report.speed_table import format_seconds, speed_table
from evalkit.runner import RunRequest, run_benchmark

ADAPTERS = '''
import os
import signal
import time

import torch

from evalkit.adapter import LoadedInfo, MethodAdapter, Param


class MemHog(MethodAdapter):
    """Needs ``copies`` float32 copies of the content image: memory proportional to the pixel count."""
    name = "memhog"
    params = {"copies": Param(100, "float32 copies of the content image to allocate")}

    def info(self):
        return LoadedInfo(parameters=123, layers=4)

    def stylize(self, content, style, masks=None, seed=0, **params):
        buffer = torch.empty((int(params["copies"]), *content.shape[1:]))
        buffer[:, :, :1, :1] = 0.0
        return content.clone()


class Crasher(MethodAdapter):
    """SIGKILLs its own worker on the first job of a run (when ``marker`` does not exist yet)."""
    name = "crasher"
    params = {"marker": Param("", "file created before the crash; present = behave")}

    def stylize(self, content, style, masks=None, seed=0, **params):
        if not os.path.exists(params["marker"]):
            open(params["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return content.clone()


class Sleeper(MethodAdapter):
    """Hangs on the first job of a run (when ``marker`` does not exist yet)."""
    name = "sleeper"
    params = {"marker": Param("", "file created before hanging; present = behave"), "seconds": Param(300.0, "")}

    def stylize(self, content, style, masks=None, seed=0, **params):
        if not os.path.exists(params["marker"]):
            open(params["marker"], "w").close()
            time.sleep(params["seconds"])
        return content.clone()
'''

PROTOCOL = """
name = "speedtest"
resolutions = ["1k"]
style_size = 64
eval_size = 64
metrics = []

[timing]
executor = "isolated"
warmup = 1
repeats = 2

[params.crasher]
marker = "{crash_marker}"

[params.sleeper]
marker = "{sleep_marker}"

[images.chelsea]
package = "skimage"
resource = "data/chelsea.png"
sha256 = "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"

[images.coffee]
package = "skimage"
resource = "data/coffee.png"
sha256 = "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"

[[pairs]]
id = "chelsea-coffee"
content = "chelsea"
style = "coffee"

[[pairs]]
id = "coffee-chelsea"
content = "coffee"
style = "chelsea"
"""

GIB = 1024**3


@pytest.fixture
def speed_plugin(tmp_path, monkeypatch):
    """Install the adapters above as a plugin visible to this process and to worker processes."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "speedtest_adapters.py").write_text(ADAPTERS)
    dist = site / "speedtest_adapters-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: speedtest-adapters\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [evalkit.methods]
        memhog = speedtest_adapters:MemHog
        crasher = speedtest_adapters:Crasher
        sleeper = speedtest_adapters:Sleeper
    """)
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    registry.refresh()
    protocol = tmp_path / "speedtest.toml"
    protocol.write_text(PROTOCOL.format(crash_marker=tmp_path / "crashed", sleep_marker=tmp_path / "slept"))
    yield protocol
    registry.refresh()


def _run(protocol: Path, out: Path, methods: list[str], resolutions: list[str], skip_after_oom=True, **options):
    console = Console(file=io.StringIO(), width=200)
    request = RunRequest(
        skip_after_oom=skip_after_oom,
        protocol=str(protocol),
        methods=methods,
        resolutions=resolutions,
        out=out,
        metrics=[],
        progress=False,
        executor_options=options,
    )
    summary = run_benchmark(request, console)
    return summary, console.file.getvalue()


def _rows(out: Path, query: str, args: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(out / "evalkit.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(query, args))
    finally:
        conn.close()


# -- pure helpers ----------------------------------------------------------------------------------------------


def test_parse_bytes_units_and_errors():
    assert parse_bytes("12GiB") == 12 * GIB
    assert parse_bytes("8GB") == 8_000_000_000
    assert parse_bytes("512 MiB") == 512 * 1024**2
    assert parse_bytes("1048576") == 1048576
    assert parse_bytes(None) is None
    with pytest.raises(Exception, match="cannot parse memory size '12 GiBs'"):
        parse_bytes("12 GiBs")


def test_groups_run_small_resolutions_first_per_method():
    from dataclasses import replace

    from evalkit.specs import JobSpec

    base = JobSpec("a", None, {}, "p", "4k", 0, "c", "s", None, None, 64, 64, "1", {}, {})
    specs = [
        replace(base, resolution="4k"),
        replace(base, method="b", resolution="1k"),
        replace(base, resolution="1k"),
        replace(base, resolution="hd", pair_id="q"),
        replace(base, resolution="hd"),
    ]
    groups = group_specs(specs)
    assert [(g[0].method, g[0].resolution, len(g)) for g in groups] == [
        ("a", "1k", 1),
        ("a", "hd", 2),
        ("a", "4k", 1),
        ("b", "1k", 1),
    ]
    assert size_key("4k") == 3840 * 2160 and size_key("512") == 512 * 512


def test_dead_worker_is_oom_only_when_memory_ran_out():
    limit = 2 * GIB
    # SIGKILL at the budget (what a cgroup / the kernel OOM killer does) -> oom; well below it -> error
    assert classify_death(-signal.SIGKILL, "", int(0.95 * limit), limit)[0] == "oom"
    status, message = classify_death(-signal.SIGKILL, "", 300 * 1024**2, limit)
    assert status == "error" and "SIGKILL" in message
    # an allocation failure that aborted the process (C++ bad_alloc) -> oom, whatever the RSS
    assert (
        classify_death(-signal.SIGABRT, "terminate called after throwing an instance of 'std::bad_alloc'", 10, limit)[0]
        == "oom"
    )
    status, message = classify_death(1, "Traceback ...\nValueError: broken", 10, None)
    assert status == "error" and "exit status 1" in message and "ValueError: broken" in message


def test_speed_table_cells_follow_the_paper_format():
    import pandas as pd

    jobs = pd.DataFrame(
        [
            # two pairs at 1k: the cell is the median over jobs of the per-job medians
            ("wct", "1k", "ok", None, None, 0.38, 0.12),
            ("wct", "1k", "ok", None, None, 0.40, 0.16),
            ("wct", "4k", "oom", "out of memory: ...", "oom", None, None),
            ("adain", "1k", "ok", None, None, 0.05, None),
            (
                "adain",
                "4k",
                "skipped",
                "skipped because OOM at qhd, assuming memory grows with resolution",
                "after-oom",
                None,
                None,
            ),
            ("gatys", "1k", "timeout", "exceeded", "timeout", None, None),
        ],
        columns=["label", "resolution", "status", "message", "reason", "time_network_s", "time_post_s"],
    )
    methods = {"wct": {"parameters": 8_350_000, "layers": 32}, "adain": {"parameters": 7_010_000, "layers": 25}}
    table = speed_table(jobs, methods).set_index("model")
    assert list(table.columns) == ["params", "layers", "1024x512", "1280x720", "1920x1080", "2560x1440", "3840x2160"]
    assert table.loc["wct", "1024x512"] == "0.39+0.14"
    assert table.loc["wct", "3840x2160"] == "OOM"
    assert table.loc["adain", "1024x512"] == "0.050"
    assert table.loc["adain", "3840x2160"] == "OOM"
    assert table.loc["gatys", "1024x512"] == "timeout"
    assert table.loc["wct", "1280x720"] is None
    assert (table.loc["wct", "params"], table.loc["wct", "layers"]) == ("8.35M", 32)
    assert table.loc["gatys", "params"] is None


def test_speed_table_rows_follow_the_seed_order_and_say_why_a_row_did_not_run():
    import pandas as pd

    from evalkit.report.speed_table import not_run_notes
    from evalkit.report.text import latex_speed_table

    rows = [
        ("adain[cd16x]", "adain", "ok", None, 0.05),
        ("photowct2[relu]", "photowct2", "ok", None, 0.4),
        (
            "photonas[official]",
            "photonas",
            "unavailable",
            "weight set 'official': weights file 'photonas/x' not found",
            None,
        ),
        ("wct2[official]", "wct2", "ok", None, 0.9),
        ("photowct[official]", "photowct", "oom", "out of memory", None),
        ("pca_kd[vgg]", "pca_kd", "ok", None, 0.1),
    ]
    jobs = pd.DataFrame(
        [(label, method, "1k", status, msg, None, t, None) for label, method, status, msg, t in rows],
        columns=["label", "method", "resolution", "status", "message", "reason", "time_network_s", "time_post_s"],
    )
    table = speed_table(jobs, {})
    # PhotoNAS, WCT², PhotoWCT, PhotoWCT2 as the seed table, then the others by name
    assert list(table["model"]) == [
        "photonas[official]",
        "wct2[official]",
        "photowct[official]",
        "photowct2[relu]",
        "adain[cd16x]",
        "pca_kd[vgg]",
    ]
    assert not_run_notes(jobs) == [
        "photonas[official]: n/a - weight set 'official': weights file 'photonas/x' not found"
    ]
    header = [str(c) for c in table.columns]
    cells = [["–" if v is None else str(v) for v in row] for row in table.itertuples(index=False)]
    tex = "\n".join(latex_speed_table(header, cells, "cpu x2 & 'co'"))
    assert r"\begin{tabular}{lrrrrrrr}" in tex and r"model & params & layers & 1024x512" in tex
    assert r"photowct2[relu] & -- & -- & 0.40" in tex and r"photowct[official] & -- & -- & OOM" in tex
    assert r"cpu x2 \& 'co'" in tex  # the device string is escaped


# -- real isolated runs ----------------------------------------------------------------------------------------


def test_cpu_budget_oom_at_large_resolutions_while_1k_succeeds(speed_plugin, tmp_path):
    out = tmp_path / "results"
    # 1k needs 100 x 6.3 MB = 0.63 GB on top of the worker's ~1 GB; qhd needs 4.4 GB and 4k 10 GB: both over 3 GiB
    summary, log = _run(speed_plugin, out, ["memhog"], ["1k", "qhd", "4k"], cpu_memory=3 * GIB)
    assert "assumes memory grows with resolution" in log
    jobs = {(r["pair_id"], r["resolution"]): r for r in _rows(out, "SELECT * FROM jobs")}
    assert len(jobs) == 6
    for pair in ("chelsea-coffee", "coffee-chelsea"):
        assert jobs[pair, "1k"]["status"] == "ok", jobs[pair, "1k"]["message"]
        assert jobs[pair, "qhd"]["status"] == "oom"
        assert "allocate memory" in jobs[pair, "qhd"]["message"]
        assert jobs[pair, "4k"]["status"] == "skipped"
        assert jobs[pair, "4k"]["message"].startswith("skipped because OOM at qhd, assuming memory grows")
    assert summary.counts == {"ok": 2, "oom": 2, "skipped": 2}

    # the job row holds the median of exactly `repeats` timed runs, and the worker's environment is stored
    for pair in ("chelsea-coffee", "coffee-chelsea"):
        row = jobs[pair, "1k"]
        repeats = _rows(out, "SELECT network_s FROM timings WHERE job_key=? ORDER BY repeat", (row["job_key"],))
        assert len(repeats) == 2
        assert row["time_network_s"] == pytest.approx(statistics.median(r["network_s"] for r in repeats))
        assert row["peak_memory_bytes"] > 100 * 1024**2
        env = json.loads(
            _rows(out, "SELECT environment FROM job_environment WHERE job_key=?", (row["job_key"],))[0]["environment"]
        )
        assert env["cpu_memory_limit_bytes"] == 3 * GIB and env["repeats"] == 2 and env["torch_version"]
    # parameter/layer counts come back from the worker process (the driver never loaded the model)
    method = _rows(out, "SELECT parameters, layers FROM methods WHERE label='memhog'")[0]
    assert (method["parameters"], method["layers"]) == (123, 4)

    # --no-skip-after-oom: finished jobs are reused, and the 4K jobs now run - and run out of memory
    summary, log = _run(speed_plugin, out, ["memhog"], ["1k", "qhd", "4k"], cpu_memory=3 * GIB, skip_after_oom=False)
    assert summary.reused == 4 and summary.counts == {"oom": 2}
    assert "assumes memory grows" not in log
    statuses = {(r["pair_id"], r["resolution"]): r["status"] for r in _rows(out, "SELECT * FROM jobs")}
    assert statuses["chelsea-coffee", "4k"] == "oom" and statuses["chelsea-coffee", "1k"] == "ok"

    # the CLI table: the 1k cell is the stored median, formatted; qhd and 4k read OOM
    from evalkit.cli import app

    result = CliRunner().invoke(app, ["speed", "--results", str(out), "--run", summary.run_id, "--format", "csv"])
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    expected = statistics.median(jobs[p, "1k"]["time_network_s"] for p in ("chelsea-coffee", "coffee-chelsea"))
    assert cells["model"] == "memhog" and cells["params"] == "123" and cells["layers"] == "4"
    assert cells["1024x512"] == format_seconds(expected)
    assert cells["2560x1440"] == "OOM" and cells["3840x2160"] == "OOM"


def test_timeout_and_crash_are_results_and_the_run_goes_on(speed_plugin, tmp_path):
    out = tmp_path / "results"
    summary, _log = _run(speed_plugin, out, ["crasher", "sleeper", "memhog"], ["64"], timeout=8.0)
    jobs = {(r["method"], r["pair_id"]): r for r in _rows(out, "SELECT * FROM jobs")}
    # the first job of each misbehaving method fails; the second runs in a fresh worker and succeeds
    crashed = jobs["crasher", "chelsea-coffee"]
    assert crashed["status"] == "error" and "SIGKILL" in crashed["message"]
    assert jobs["crasher", "coffee-chelsea"]["status"] == "ok"
    hung = jobs["sleeper", "chelsea-coffee"]
    assert hung["status"] == "timeout" and "timeout of 8s" in hung["message"]
    assert jobs["sleeper", "coffee-chelsea"]["status"] == "ok"
    assert jobs["memhog", "chelsea-coffee"]["status"] == "ok" and jobs["memhog", "coffee-chelsea"]["status"] == "ok"
    assert summary.counts == {"ok": 4, "error": 1, "timeout": 1}
    assert (tmp_path / "crashed").exists() and (tmp_path / "slept").exists()


def test_budgets_need_the_isolated_executor():
    from evalkit.cli import app
    from evalkit.errors import EvalkitError

    result = CliRunner().invoke(app, ["run", "--protocol", "quick", "--cpu-memory", "1GiB"])
    assert isinstance(result.exception, EvalkitError)
    assert "--executor isolated" in str(result.exception)
    result = CliRunner().invoke(app, ["run", "--protocol", "quick", "--executor", "isolated", "--cpu-memory", "lots"])
    assert isinstance(result.exception, EvalkitError) and "cannot parse memory size 'lots'" in str(result.exception)


def test_device_budget_sets_the_cuda_memory_fraction(monkeypatch):
    """No GPU in CI: check the fraction handed to torch against the budget and the device's total memory."""
    import types

    import torch

    from evalkit.executors import isolated_worker

    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=80 * GIB))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i)))
    assert isolated_worker.apply_device_limit("cuda", 12 * GIB) == pytest.approx(0.15)
    assert isolated_worker.apply_device_limit("cuda:1", 200 * GIB) == 1.0  # a budget above the card: no limit
    assert calls == [(pytest.approx(0.15), 0), (1.0, 1)]


def test_speed_summary_spread_comes_from_the_timed_repeats():
    import numpy as np
    import pandas as pd

    from evalkit.report.speed_table import speed_summary

    jobs = pd.DataFrame(
        [
            ("k4", "m", "4k", "ok", 2.0, 0.5, 0.1, 900),
            ("k1", "m", "1k", "ok", 0.2, None, 0.1, 500),
            ("kh", "m", "hd", "oom", None, None, None, None),
        ],
        columns=[
            "job_key",
            "label",
            "resolution",
            "status",
            "time_network_s",
            "time_post_s",
            "time_load_s",
            "peak_memory_bytes",
        ],
    )
    repeats = [1.0, 2.0, 2.5, 4.0]
    timings = pd.DataFrame({"job_key": "k4", "repeat": range(4), "network_s": repeats, "post_s": 0.5})
    summary = speed_summary(jobs, timings)
    assert list(summary["resolution"]) == ["1k", "hd", "4k"]  # by pixel count, not alphabetically
    row = summary.set_index("resolution").loc["4k"]
    assert (row["network_min"], row["network_max"], row["network_repeats"]) == (1.0, 4.0, 4)
    assert row["network_q1"] == pytest.approx(np.percentile(repeats, 25))
    assert row["network_q3"] == pytest.approx(np.percentile(repeats, 75))
    assert summary.set_index("resolution").loc["hd", "status"] == "OOM"
