"""The results store: one SQLite database per results root, the single source of truth.

Every finished job is written in one transaction (job row, its metrics, its run membership), after its PNG has been
atomically renamed into place. So a run killed at any instant - even with SIGKILL - leaves either a complete job or
none, and rerunning resumes exactly where it stopped: no row is lost and none is duplicated (job keys are primary
keys). CSV / Parquet / HTML are all derived from this database.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.specs import JobSpec

SCHEMA_VERSION = 2
DB_NAME = "evalkit.sqlite"
FINAL_STATUSES = ("ok", "oom")  # outcomes that a rerun keeps; error/timeout/unavailable are retried
FAILED_STATUSES = ("error", "timeout", "unavailable")  # outcomes that make `evalkit run` exit non-zero

# Schema changes since version 1 (the first release), applied in order by ResultsStore when it opens an older database.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (  # run provenance and crash hygiene (issue 11), per-job warnings
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN hostname TEXT",
        "ALTER TABLE runs ADD COLUMN protocol_source TEXT",
        "ALTER TABLE runs ADD COLUMN protocol_text TEXT",
        "ALTER TABLE runs ADD COLUMN note TEXT",
        "ALTER TABLE jobs ADD COLUMN warnings TEXT",
    ),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    protocol TEXT,
    protocol_sha256 TEXT,
    command TEXT,
    methods TEXT,
    resolutions TEXT,
    device TEXT,
    executor TEXT,
    git_rev TEXT,
    environment TEXT,
    pid INTEGER,
    hostname TEXT,
    protocol_source TEXT,
    protocol_text TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    job_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    protocol TEXT,
    method TEXT NOT NULL,
    weight_set TEXT,
    label TEXT NOT NULL,
    params TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    content TEXT,
    style TEXT,
    resolution TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    output_path TEXT,
    width INTEGER,
    height INTEGER,
    time_load_s REAL,
    time_network_s REAL,
    time_post_s REAL,
    peak_memory_bytes INTEGER,
    device TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started TEXT,
    finished TEXT,
    spec TEXT NOT NULL,
    warnings TEXT
);
CREATE TABLE IF NOT EXISTS run_jobs (
    run_id TEXT NOT NULL,
    job_key TEXT NOT NULL,
    PRIMARY KEY (run_id, job_key)
);
CREATE TABLE IF NOT EXISTS metrics (
    job_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    eval_size INTEGER NOT NULL,
    value REAL,
    status TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (job_key, metric, eval_size)
);
CREATE TABLE IF NOT EXISTS methods (
    label TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    weight_set TEXT,
    kind TEXT,
    version TEXT,
    parameters INTEGER,
    layers INTEGER,
    weight_digests TEXT
);
CREATE TABLE IF NOT EXISTS timings (
    job_key TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    network_s REAL,
    post_s REAL,
    PRIMARY KEY (job_key, repeat)
);
CREATE TABLE IF NOT EXISTS job_environment (
    job_key TEXT PRIMARY KEY,
    environment TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS preferences (
    study TEXT NOT NULL, label TEXT NOT NULL, score REAL, lower REAL, upper REAL, rank INTEGER, votes INTEGER,
    PRIMARY KEY (study, label)
);
CREATE TABLE IF NOT EXISTS metric_agreement (
    study TEXT NOT NULL, metric TEXT NOT NULL, agreement REAL, n INTEGER, PRIMARY KEY (study, metric)
);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs(run_id);
CREATE INDEX IF NOT EXISTS run_jobs_by_job ON run_jobs(job_key);
"""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class MetricValue:
    """One metric outcome: a value with status ``ok``, or ``None`` with ``unavailable``/``error`` and a reason."""

    name: str
    value: float | None
    status: str = "ok"
    message: str | None = None


@dataclass
class JobResult:
    """What an executor hands back to the driver for one job (the driver alone writes the store)."""

    key: str
    status: str
    message: str | None = None
    png: bytes | None = None
    width: int | None = None
    height: int | None = None
    time_load_s: float | None = None
    time_network_s: float | None = None
    time_post_s: float | None = None
    peak_memory_bytes: int | None = None
    device: str | None = None
    started: str | None = None
    finished: str | None = None
    metrics: list[MetricValue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # recorded on the job, e.g. an image upscaled more than 4x
    extra: dict[str, Any] = field(default_factory=dict)


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


class ResultsStore:
    """Thin, transactional access to ``<root>/evalkit.sqlite`` and the PNG outputs under ``<root>/images``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_NAME
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database written by an earlier evalkit up to :data:`SCHEMA_VERSION`, in one transaction.

        A new database is created at the current version; one from a newer evalkit is refused rather than
        misread."""
        with self.transaction() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                cur.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            version = int(row["value"])
            if version > SCHEMA_VERSION:
                raise EvalkitError(f"{self.path} was written by a newer evalkit (schema {version}, this one reads "
                                   f"up to {SCHEMA_VERSION}): upgrade evalkit to read it")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    cur.execute(statement)
            if version < SCHEMA_VERSION:
                cur.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()["value"])

    @classmethod
    def open_reader(cls, root: str | Path, hint: str = "evalkit run --results ROOT") -> ResultsStore:
        """Open an existing results root for reading (leaderboard, export, speed, study build, ``evalkit runs``).

        When no run holds the root's lock, runs still marked ``running`` belong to a process that is gone: they are
        marked ``interrupted`` first (the lock is taken for that moment only, and never waited for)."""
        from evalkit.rootlock import RootLock

        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise EvalkitError(f"no results database at {root / DB_NAME}: run `{hint}` first, or pass --results "
                               f"pointing at a results root")
        lock = RootLock(root, "evalkit reader")
        if lock.try_acquire():
            try:
                with cls(root) as store:
                    store.mark_interrupted(detected_by=f"a reader (pid {os.getpid()})")
            finally:
                lock.release()
        return cls(root)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # -- runs -------------------------------------------------------------------------------------------------
    def start_run(self, protocol: str, protocol_sha256: str, command: str, methods: list[str],
                  resolutions: list[str], device: str, executor: str, environment: dict[str, Any],
                  protocol_text: str | None = None, protocol_source: str | None = None) -> str:
        """A new ``running`` run, with the protocol's TOML text and sha256 (so reports never reload it by name)
        and the process that runs it (so a later run or reader can tell when that process is gone)."""
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO runs(run_id, started, status, protocol, protocol_sha256, command, methods, resolutions,"
                " device, executor, git_rev, environment, pid, hostname, protocol_source, protocol_text)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, utcnow(), "running", protocol, protocol_sha256, command, json.dumps(methods),
                 json.dumps(resolutions), device, executor, environment.get("git_rev"), json.dumps(environment),
                 os.getpid(), platform.node(), protocol_source, protocol_text),
            )
        return run_id

    def finish_run(self, run_id: str, status: str = "finished", note: str | None = None) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE runs SET finished=?, status=?, note=COALESCE(?, note) WHERE run_id=?",
                        (utcnow(), status, note, run_id))

    def mark_interrupted(self, detected_by: str) -> list[str]:
        """Mark every ``running`` run ``interrupted``: call only while holding the root's lock, which proves that no
        process is writing any of them (a live run holds the lock for as long as it runs). Returns their ids."""
        with self.transaction() as cur:
            rows = cur.execute("SELECT run_id, pid, hostname FROM runs WHERE status='running'").fetchall()
            for row in rows:
                note = (f"interrupted: process {row['pid'] or '?'} on {row['hostname'] or '?'} ended without "
                        f"finishing the run (detected {utcnow()} by {detected_by})")
                cur.execute("UPDATE runs SET status='interrupted', finished=?, note=? WHERE run_id=?",
                            (utcnow(), note, row["run_id"]))
        return [r["run_id"] for r in rows]

    def remove_orphans(self) -> list[Path]:
        """Delete half-written PNGs (``*.part<pid>``) a killed run left under ``images/``; call under the lock."""
        images = self.root / "images"
        removed = [p for p in images.rglob("*.part*") if p.is_file()] if images.is_dir() else []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def stored_protocol(self, run_id: str):
        """The protocol a run was planned from, parsed from the TOML text stored with it (sha256-checked), plus a
        note when the file it came from now differs or is gone (``None`` when it is unchanged).

        Runs recorded before protocols were stored (schema 1) fall back to loading the protocol by name."""
        from evalkit.specs import find_protocol, load_protocol, protocol_from_text

        run = self.run_row(run_id)
        if run is None:
            raise EvalkitError(f"run '{run_id}' is not in {self.path}")
        if not run.get("protocol_text"):
            protocol = load_protocol(run.get("protocol_source") or run["protocol"])
            note = None
            if run.get("protocol_sha256") and protocol.sha256 != run["protocol_sha256"]:
                note = (f"run {run_id} recorded protocol '{run['protocol']}' with sha256 "
                        f"{run['protocol_sha256'][:12]}…, but the file found now ({protocol.source}) has "
                        f"{protocol.sha256[:12]}…: it changed since the run")
            return protocol, note
        source = run.get("protocol_source") or run["protocol"]
        protocol = protocol_from_text(run["protocol_text"], source, run.get("protocol_sha256"))
        note = None
        try:
            on_disk = Path(source) if Path(source).is_file() else find_protocol(run["protocol"])
            digest = hashlib.sha256(on_disk.read_bytes()).hexdigest()
            if digest != protocol.sha256:
                note = (f"the protocol file {on_disk} changed since run {run_id} (sha256 {digest[:12]}… now, "
                        f"{protocol.sha256[:12]}… then): using the version stored with the run")
        except (EvalkitError, OSError):
            note = (f"the protocol file of run {run_id} ({source}) is not found now: using the version stored with "
                    f"the run")
        return protocol, note

    def resolve_run(self, run: str) -> str:
        """``latest`` -> the newest run id; any other id must exist (one-line error listing the known ones)."""
        if run == "latest":
            latest = self.latest_run()
            if latest is None:
                raise EvalkitError(f"{self.path} holds no runs: run `evalkit run --results {self.root}` first")
            return latest
        if self.run_row(run) is None:
            known = [r["run_id"] for r in self.runs()]
            raise EvalkitError(f"run '{run}' is not in {self.path}: known runs are {', '.join(known) or 'none'} "
                               f"(or use latest)")
        return run

    def run_outputs(self, run_id: str) -> list[dict[str, Any]]:
        """The run's successful jobs that have an output image, in a stable order."""
        rows = self.conn.execute(
            "SELECT j.* FROM jobs j JOIN run_jobs r ON r.job_key = j.job_key WHERE r.run_id=? AND j.status='ok'"
            " AND j.output_path IS NOT NULL ORDER BY j.label, j.pair_id, j.resolution, j.seed", (run_id,))
        return [dict(r) for r in rows]

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def run_summaries(self) -> list[dict[str, Any]]:
        """Every run with its job counts: by the status each job has now, and how many it reused from earlier runs."""
        out = []
        for run in self.runs():
            counts = dict(self.conn.execute(
                "SELECT j.status, COUNT(*) FROM run_jobs r JOIN jobs j ON j.job_key=r.job_key WHERE r.run_id=?"
                " GROUP BY j.status", (run["run_id"],)).fetchall())
            reused = self.conn.execute(
                "SELECT COUNT(*) FROM run_jobs r JOIN jobs j ON j.job_key=r.job_key WHERE r.run_id=? AND"
                " j.run_id<>r.run_id", (run["run_id"],)).fetchone()[0]
            out.append({**dict(run), "counts": counts, "reused": reused})
        return out

    def attach_jobs(self, run_id: str, keys: Iterable[str]) -> None:
        """Record that already-finished jobs belong to ``run_id`` too (a resumed run reuses them)."""
        with self.transaction() as cur:
            cur.executemany("INSERT OR IGNORE INTO run_jobs(run_id, job_key) VALUES (?, ?)",
                            [(run_id, k) for k in keys])

    def record_method(self, label: str, method: str, weight_set: str | None, kind: str, version: str,
                      parameters: int, layers: int, weight_digests: dict[str, str | None]) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO methods(label, method, weight_set, kind, version, parameters, layers,"
                " weight_digests) VALUES (?,?,?,?,?,?,?,?)",
                (label, method, weight_set, kind, version, parameters, layers, json.dumps(weight_digests)),
            )

    # -- jobs -------------------------------------------------------------------------------------------------
    def job_status(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT job_key, status FROM jobs WHERE job_key IN ({marks})", chunk):
                out[row["job_key"]] = row["status"]
        return out

    def output_path_for(self, spec: JobSpec, protocol: str) -> Path:
        return (self.root / "images" / safe_name(protocol) / safe_name(spec.label)
                / f"{safe_name(spec.pair_id)}__{spec.resolution}__s{spec.seed}__{spec.key[:10]}.png")

    def record_job(self, run_id: str, protocol: str, spec: JobSpec, result: JobResult, eval_size: int) -> None:
        """Write the output PNG (atomically) and then the job + metrics rows in one transaction."""
        rel_path = None
        if result.png is not None:
            path = self.output_path_for(spec, protocol)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".part{os.getpid()}")
            tmp.write_bytes(result.png)
            os.replace(tmp, path)
            rel_path = str(path.relative_to(self.root))
        with self.transaction() as cur:
            previous = cur.execute("SELECT attempts FROM jobs WHERE job_key=?", (spec.key,)).fetchone()
            attempts = (previous["attempts"] + 1) if previous else 1
            cur.execute(
                "INSERT OR REPLACE INTO jobs(job_key, run_id, protocol, method, weight_set, label, params, pair_id,"
                " content, style, resolution, seed, status, message, output_path, width, height, time_load_s,"
                " time_network_s, time_post_s, peak_memory_bytes, device, attempts, started, finished, spec, warnings)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (spec.key, run_id, protocol, spec.method, spec.weight_set, spec.label,
                 json.dumps(spec.params, sort_keys=True), spec.pair_id, spec.content, spec.style, spec.resolution,
                 spec.seed, result.status, result.message, rel_path, result.width, result.height,
                 result.time_load_s, result.time_network_s, result.time_post_s, result.peak_memory_bytes,
                 result.device, attempts, result.started, result.finished, json.dumps(spec.to_dict()),
                 json.dumps(result.warnings) if result.warnings else None),
            )
            cur.execute("DELETE FROM metrics WHERE job_key=? AND eval_size=?", (spec.key, eval_size))
            self._insert_metrics(cur, spec.key, eval_size, result.metrics)
            self._insert_timings(cur, spec.key, result.extra.get("timings"), result.extra.get("environment"))
            cur.execute("INSERT OR IGNORE INTO run_jobs(run_id, job_key) VALUES (?, ?)", (run_id, spec.key))

    def record_metrics(self, key: str, eval_size: int, values: list[MetricValue]) -> None:
        with self.transaction() as cur:
            self._insert_metrics(cur, key, eval_size, values)

    @staticmethod
    def _insert_metrics(cur: sqlite3.Cursor, key: str, eval_size: int, values: list[MetricValue]) -> None:
        cur.executemany(
            "INSERT OR REPLACE INTO metrics(job_key, metric, eval_size, value, status, message) VALUES (?,?,?,?,?,?)",
            [(key, m.name, eval_size, m.value, m.status, m.message) for m in values],
        )

    @staticmethod
    def _insert_timings(cur: sqlite3.Cursor, key: str, timings: list[tuple[float, float | None]] | None,
                        environment: dict[str, Any] | None) -> None:
        """Replace a job's timed repeats ``(network_s, post_s)`` (the jobs row holds their medians) and the
        environment its worker measured on: repeats are kept so a reader can compute any spread it likes."""
        cur.execute("DELETE FROM timings WHERE job_key=?", (key,))
        if timings:
            cur.executemany("INSERT INTO timings(job_key, repeat, network_s, post_s) VALUES (?,?,?,?)",
                            [(key, i, net, post) for i, (net, post) in enumerate(timings)])
        if environment is not None:
            cur.execute("INSERT OR REPLACE INTO job_environment(job_key, environment) VALUES (?,?)",
                        (key, json.dumps(environment, sort_keys=True, default=str)))

    def timings_frame(self, run_ids: list[str] | None = None):
        """Timed repeats (one row per repeat) with their job's label and resolution, as a pandas DataFrame."""
        import pandas as pd

        query = ("SELECT t.job_key, j.label, j.method, j.weight_set, j.pair_id, j.resolution, t.repeat, t.network_s,"
                 " t.post_s FROM timings t JOIN jobs j ON j.job_key = t.job_key")
        where, args = self._run_filter("t.job_key", run_ids)
        query += where
        return pd.read_sql_query(query + " ORDER BY j.label, j.resolution, t.repeat", self.conn, params=args)

    def metric_names(self, key: str, eval_size: int) -> set[str]:
        rows = self.conn.execute("SELECT metric FROM metrics WHERE job_key=? AND eval_size=? AND status='ok'",
                                 (key, eval_size))
        return {r["metric"] for r in rows}

    # -- reading ----------------------------------------------------------------------------------------------
    def runs(self) -> list[sqlite3.Row]:
        return list(self.conn.execute("SELECT * FROM runs ORDER BY started"))

    def latest_run(self) -> str | None:
        row = self.conn.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None

    @staticmethod
    def _run_filter(column: str, run_ids: list[str] | None) -> tuple[str, list[str]]:
        """SQL restricting ``column`` (a job key) to jobs that belong to ``run_ids`` (all jobs when empty)."""
        if not run_ids:
            return "", []
        marks = ",".join("?" * len(run_ids))
        return f" WHERE {column} IN (SELECT job_key FROM run_jobs WHERE run_id IN ({marks}))", list(run_ids)

    def jobs_frame(self, run_ids: list[str] | None = None):
        """Jobs (one row each) of the given runs, as a pandas DataFrame."""
        import pandas as pd

        where, args = self._run_filter("j.job_key", run_ids)
        query = "SELECT j.* FROM jobs j" + where
        return pd.read_sql_query(query + " ORDER BY j.label, j.pair_id, j.resolution, j.seed", self.conn, params=args)

    def metrics_frame(self, run_ids: list[str] | None = None):
        """Metrics in long form joined with their job's identifying columns."""
        import pandas as pd

        query = ("SELECT m.job_key, j.label, j.method, j.weight_set, j.pair_id, j.resolution, j.seed, m.metric,"
                 " m.eval_size, m.value, m.status, m.message FROM metrics m JOIN jobs j ON j.job_key = m.job_key")
        where, args = self._run_filter("m.job_key", run_ids)
        query += where
        return pd.read_sql_query(query + " ORDER BY j.label, j.pair_id, m.metric", self.conn, params=args)
