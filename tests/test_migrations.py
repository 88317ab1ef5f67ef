"""Databases written by an earlier evalkit (commit 59c706b, tests/data/legacy_v1) open, migrate and keep every row."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.store import SCHEMA_VERSION, ResultsStore

LEGACY = Path(__file__).parent / "data" / "legacy_v1"


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_schema_1_results_database_is_migrated_without_losing_a_row(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    shutil.copy(LEGACY / "evalkit.sqlite", root / "evalkit.sqlite")
    tables = ("jobs", "metrics", "runs", "run_jobs", "methods", "preferences", "metric_agreement")
    before = {t: _count(root / "evalkit.sqlite", t) for t in tables}
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        old_jobs = conn.execute("SELECT job_key, status, output_path FROM jobs ORDER BY job_key").fetchall()
    with ResultsStore(root) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert len(store.jobs_frame()) == before["jobs"] == 10
        run_id = store.latest_run()
        assert store.run_row(run_id)["status"] == "finished"
        protocol, _ = store.stored_protocol(run_id)  # a schema-1 run: its protocol is found by name
        assert protocol.name == "quick"
    after = {t: _count(root / "evalkit.sqlite", t) for t in tables}
    assert after == before and before["preferences"] == 2
    with sqlite3.connect(root / "evalkit.sqlite") as conn:
        assert conn.execute("SELECT job_key, status, output_path FROM jobs ORDER BY job_key").fetchall() == old_jobs
        columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert {"pid", "hostname", "protocol_text", "protocol_source", "note"} <= columns
    ResultsStore(root).close()  # opening again is a no-op


def test_a_database_from_a_newer_evalkit_is_refused(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(EvalkitError, match="newer evalkit"):
        ResultsStore(tmp_path)


def test_a_schema_1_study_keeps_its_votes_and_gains_codes(tmp_path):
    from starlette.testclient import TestClient

    from evalkit.study import db as studydb
    from evalkit.study.app import create_app
    from evalkit.study.build import load_study

    folder = tmp_path / "study"
    (folder / "static" / "images").mkdir(parents=True)
    for name in ("study.sqlite", "study.json"):
        shutil.copy(LEGACY / name, folder / name)
    (folder / "study.json").chmod(0o644)
    votes = _count(folder / "study.sqlite", "votes")
    config = load_study(folder)
    assert config.code_secret and stat.S_IMODE((folder / "study.json").stat().st_mode) == 0o600
    create_app(folder)
    assert _count(folder / "study.sqlite", "votes") == votes > 0
    people = studydb.participant_rows(folder)
    assert len(people) == 3 and all(p["repeat_id"] == 0 and p["origin"] == "server" for p in people)
    admin = TestClient(create_app(folder)).get(f"/admin/participants.csv?token={config.admin_token}")
    assert admin.status_code == 200 and len(admin.text.strip().splitlines()) == 4


def test_fp32_job_keys_are_the_keys_earlier_runs_recorded(tmp_path):
    """Adding the precision axis (and the score task) must not change any fp32 key: a resumed run reuses the jobs an
    earlier evalkit recorded. The legacy database was planned from the quick protocol with these methods at 64 px."""
    from evalkit.assets import AssetStore
    from evalkit.planner import PlanRequest, plan_jobs
    from evalkit.protocol import load_protocol

    request = PlanRequest(selectors=["identity", "reinhard"], resolutions=["64"])
    plan = plan_jobs(load_protocol("quick"), request, AssetStore.from_env())
    specs, errors = plan.jobs, plan.errors
    with sqlite3.connect(LEGACY / "evalkit.sqlite") as conn:
        legacy = {r[0] for r in conn.execute("SELECT job_key FROM jobs")}
    assert not errors and {s.key for s in specs} == legacy
    bf16 = plan_jobs(
        load_protocol("quick"),
        PlanRequest(selectors=["identity"], resolutions=["64"], precision="bf16"),
        AssetStore.from_env(),
    ).jobs
    assert not {s.key for s in bf16} & legacy  # another precision is another job
