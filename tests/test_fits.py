"""The per-style fit seam (evalkit/fits.py, JobContext.fitted): a style is learned once per key and machine, kept
on disk, refitted when its file is damaged, never learned twice by concurrent processes; the speed table's
``fit/style`` column; old databases gain ``time_fit_s``. The method side (InST) is tested in tests/test_inst.py."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pandas as pd
import torch

from evalkit.fits import FitKey, FitStore
from evalkit.report.speed_table import FIT_COLUMN, speed_summary, speed_table

KEY = FitKey("inst", "1", "sd14", "ab" * 32, 512, "fp32", {"fit_steps": 10})
CPU = torch.device("cpu")


def _counting_fit(calls: list[int], value: float = 1.0):
    def fit() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"embedding": torch.full((1, 4), value)}

    return fit


def test_a_fit_is_learned_once_then_served_from_memory_and_disk(tmp_path: Path) -> None:
    calls: list[int] = []
    store = FitStore(tmp_path)
    first = store.get(KEY, _counting_fit(calls), CPU)
    assert first.seconds is not None and first.seconds >= 0 and calls == [1]
    again = store.get(KEY, _counting_fit(calls), CPU)
    assert again.seconds is None and calls == [1] and torch.equal(again.tensors["embedding"], torch.ones(1, 4))
    fresh = FitStore(tmp_path)  # another process or run on the same machine
    reused = fresh.get(KEY, _counting_fit(calls, 2.0), CPU)
    assert reused.seconds is None and calls == [1] and torch.equal(reused.tensors["embedding"], torch.ones(1, 4))
    # any field of the key is another fit
    other = FitKey(**{**KEY.__dict__, "params": {"fit_steps": 11}})
    assert FitStore(tmp_path).get(other, _counting_fit(calls, 3.0), CPU).seconds is not None and calls == [1, 1]


def test_a_damaged_file_is_learned_again_and_a_read_only_cache_still_fits(tmp_path: Path) -> None:
    calls: list[int] = []
    FitStore(tmp_path).get(KEY, _counting_fit(calls), CPU)
    path = tmp_path / KEY.digest() / "fit.pt"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    refit = FitStore(tmp_path).get(KEY, _counting_fit(calls, 5.0), CPU)
    assert refit.seconds is not None and calls == [1, 1] and float(refit.tensors["embedding"][0, 0]) == 5.0
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    memory_only = FitStore(blocked)
    assert memory_only.get(KEY, _counting_fit(calls), CPU).seconds is not None
    assert memory_only.get(KEY, _counting_fit(calls), CPU).seconds is None and len(calls) == 3


def _slow_fit_in_process(root: str, started: float, queue) -> None:  # type: ignore[no-untyped-def]
    def fit() -> dict[str, torch.Tensor]:
        time.sleep(1.0)
        return {"embedding": torch.full((1, 2), started)}

    fitted = FitStore(Path(root)).get(KEY, fit, CPU)
    queue.put((fitted.seconds is not None, float(fitted.tensors["embedding"][0, 0])))


def test_concurrent_processes_learn_a_style_once(tmp_path: Path) -> None:
    """Two workers reach the same style at once: one learns it, the other waits on the lock and reads its file."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_slow_fit_in_process, args=(str(tmp_path), float(i), queue)) for i in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(learned for learned, _ in results) == [False, True]
    assert results[0][1] == results[1][1]  # both use the one fit


def _jobs(rows: list[tuple]) -> pd.DataFrame:
    columns = ["job_key", "label", "resolution", "status", "message", "time_network_s", "time_post_s", "time_fit_s"]
    return pd.DataFrame(rows, columns=columns)


def test_the_speed_table_gains_a_fit_column_only_when_a_method_learns_styles() -> None:
    jobs = _jobs(
        [
            ("a", "inst", "1k", "ok", None, 2.0, None, 300.0),  # learned style 1 here
            ("b", "inst", "1k", "ok", None, 2.2, None, None),  # reused it
            ("c", "inst", "hd", "ok", None, 3.0, None, 500.0),  # learned style 2
            ("d", "adain", "1k", "ok", None, 0.05, None, None),
        ]
    )
    table = speed_table(jobs, {}).set_index("model")
    assert list(table.columns[:3]) == ["params", "layers", FIT_COLUMN]
    assert table.loc["inst", FIT_COLUMN] == "400.00"  # median over the styles learned, not over jobs
    assert table.loc["adain", FIT_COLUMN] is None
    assert table.loc["inst", "1024x512"] == "2.10"
    without = speed_table(jobs.assign(time_fit_s=None), {})
    assert FIT_COLUMN not in without.columns  # the seed table's layout is unchanged without such a method
    summary = speed_summary(jobs).set_index(["model", "resolution"])
    assert summary.loc[("inst", "1k"), "fit_s"] == 300.0 and pd.isna(summary.loc[("adain", "1k"), "fit_s"])


def test_the_leaderboard_speed_section_keeps_fit_beside_the_fixed_columns() -> None:
    from types import SimpleNamespace

    from evalkit.report.speed import speed_section

    jobs = _jobs([("a", "inst", "1k", "ok", None, 2.0, None, 300.0)]).assign(method="inst")
    methods = pd.DataFrame(columns=["label", "parameters", "layers"])
    data = SimpleNamespace(jobs=jobs, methods=methods, environments={}, runs=[])
    section = speed_section(data)  # type: ignore[arg-type]
    assert section is not None
    assert section.columns == ["model", "params", "layers", FIT_COLUMN, "1024x512"]
    assert section.rows == [["inst", "–", "–", "300.00", "2.00"]]
    assert FIT_COLUMN not in section.note


def test_old_databases_gain_time_fit_s(tmp_path: Path) -> None:
    from evalkit.store import ResultsStore

    root = tmp_path / "r"
    ResultsStore(root).close()
    db = root / "evalkit.sqlite"
    with sqlite3.connect(db) as conn:  # as version 3 left it
        conn.execute("ALTER TABLE jobs DROP COLUMN time_fit_s")
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    ResultsStore(root).close()
    with sqlite3.connect(db) as conn:
        assert "time_fit_s" in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
