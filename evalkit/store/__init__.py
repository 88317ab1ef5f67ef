"""The results store: one SQLite database per results root, the single source of truth, and the only code that
reads or writes it.

Every finished job is written in one transaction (job row, its metrics, timings, environment, run membership),
after its PNG has been atomically renamed into place. So a run killed at any instant - even with SIGKILL - leaves
either a complete job or none, and rerunning resumes exactly where it stopped: no row is lost and none is
duplicated (job keys are primary keys). CSV / Parquet / HTML and studies are all derived from this database through
the read models in :mod:`evalkit.store.reads`. (A study's own vote database is the study server's,
:mod:`evalkit.study.db`.)
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.results import FAILED_STATUSES, FINAL_STATUSES, JobResult, MetricState, MetricValue, utcnow
from evalkit.specs import JobSpec
from evalkit.store.reads import ReadModels, SetRow, SetValue
from evalkit.store.schema import DB_NAME, SCHEMA, SCHEMA_VERSION, migrate
from evalkit.store.studies import StudyResults

__all__ = ["DB_NAME", "FAILED_STATUSES", "FINAL_STATUSES", "SCHEMA_VERSION", "ResultsStore", "safe_name"]


# the temporary name of an output being written: its final name with the .png suffix replaced by .part<pid>
PARTIAL = re.compile(r".+__s\d+__[0-9a-f]+\.part\d+")


def partial_name(path: Path) -> Path:
    return path.with_suffix(f".part{os.getpid()}")


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def damaged(path: Path, exc: BaseException) -> EvalkitError:
    """One line for a database SQLite cannot read (garbage, truncation, another file type)."""
    return EvalkitError(
        f"{path} is damaged or not an evalkit results database ({exc}): restore it from a backup, or move it away "
        f"and rerun to start a new one"
    )


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` (linear in the file's size): a database with garbage inside is refused, not read."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    if rows != ["ok"]:
        raise damaged(path, sqlite3.DatabaseError(rows[0] if rows else "quick_check failed"))


class ResultsStore(ReadModels, StudyResults):
    """Transactional access to ``<root>/evalkit.sqlite`` and the PNG outputs under ``<root>/images``."""

    def __init__(self, root: str | Path, readonly: bool = False) -> None:
        self.root = Path(root)
        self.path = self.root / DB_NAME
        self.readonly = readonly
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise EvalkitError(
                f"{self.path} is empty (0 bytes), not a results database: if it held results, restore it from a "
                f"backup; otherwise delete it and rerun"
            )
        try:
            self._connect(readonly)
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from None

    def _connect(self, readonly: bool) -> None:
        if readonly:
            # a read-only root cannot hold WAL's shared-memory file: read the (checkpointed) file as immutable
            immutable = "&immutable=1" if not os.access(self.root, os.W_OK) else ""
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro{immutable}", uri=True, timeout=60)
            self.conn.row_factory = sqlite3.Row
            check_integrity(self.conn, self.path)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        check_integrity(self.conn, self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)
        with self.transaction() as cur:
            migrate(cur, self.path)

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()["value"])

    @classmethod
    def open_reader(cls, root: str | Path, hint: str = "evalkit run --results ROOT") -> ResultsStore:
        """Open an existing results root for reading (leaderboard, export, speed, study build, ``evalkit runs``).

        Readers never write: runs still marked ``running`` whose process is gone (no process holds the root's lock)
        are *shown* as ``interrupted`` (:meth:`runs`), and the next run records it. The one exception is a database
        written by an older evalkit, whose schema is upgraded once, under the root's lock, when no run holds it."""
        from evalkit.rootlock import RootLock

        root = Path(root)
        if not (root / DB_NAME).is_file():
            raise EvalkitError(
                f"no results database at {root / DB_NAME}: run `{hint}` first, or pass --results "
                f"pointing at a results root"
            )
        lock = RootLock(root, "evalkit reader")
        store = cls(root, readonly=True)
        if store.schema_version > SCHEMA_VERSION:
            store.close()
            raise EvalkitError(
                f"{root / DB_NAME} was written by a newer evalkit (schema {store.schema_version}, this one reads "
                f"up to {SCHEMA_VERSION}): upgrade evalkit to read it"
            )
        if store.schema_version < SCHEMA_VERSION:
            store.close()
            if not lock.try_acquire():
                raise EvalkitError(
                    f"{root / DB_NAME} was written by an older evalkit and a run is writing it now: read it when "
                    f"{lock.describe_holder()} has finished"
                )
            try:
                cls(root).close()  # the schema upgrade, in one transaction
            finally:
                lock.release()
            store = cls(root, readonly=True)
        store.writer_alive = not lock.is_free()
        return store

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
    def start_run(
        self,
        protocol: str,
        protocol_sha256: str,
        command: str,
        methods: list[str],
        resolutions: list[str],
        device: str,
        executor: str,
        environment: dict,
        protocol_text: str | None = None,
        protocol_source: str | None = None,
    ) -> str:
        """A new ``running`` run, with the protocol's TOML text and sha256 (so reports never reload it by name)
        and the process that runs it (so a later run or reader can tell when that process is gone)."""
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO runs(run_id, started, status, protocol, protocol_sha256, command, methods, resolutions,"
                " device, executor, git_rev, environment, pid, hostname, protocol_source, protocol_text)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    utcnow(),
                    "running",
                    protocol,
                    protocol_sha256,
                    command,
                    json.dumps(methods),
                    json.dumps(resolutions),
                    device,
                    executor,
                    environment.get("git_rev"),
                    json.dumps(environment),
                    os.getpid(),
                    platform.node(),
                    protocol_source,
                    protocol_text,
                ),
            )
        return run_id

    def finish_run(self, run_id: str, status: str = "finished", note: str | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE runs SET finished=?, status=?, note=COALESCE(?, note) WHERE run_id=?",
                (utcnow(), status, note, run_id),
            )

    def mark_interrupted(self, detected_by: str) -> list[str]:
        """Mark every ``running`` run ``interrupted``: call only while holding the root's lock, which proves that no
        process is writing any of them (a live run holds the lock for as long as it runs). Returns their ids."""
        with self.transaction() as cur:
            rows = cur.execute("SELECT run_id, pid, hostname FROM runs WHERE status='running'").fetchall()
            for row in rows:
                note = (
                    f"interrupted: process {row['pid'] or '?'} on {row['hostname'] or '?'} ended without "
                    f"finishing the run (detected {utcnow()} by {detected_by})"
                )
                cur.execute(
                    "UPDATE runs SET status='interrupted', finished=?, note=? WHERE run_id=?",
                    (utcnow(), note, row["run_id"]),
                )
        return [r["run_id"] for r in rows]

    def remove_orphans(self) -> list[Path]:
        """Delete half-written PNGs a killed run left under ``images/``: exactly the temporary names
        :meth:`record_job` writes (``<output name>.part<pid>``, see :func:`partial_name`), nothing else - a pair id
        such as ``still.party`` is an output, not a leftover. Call under the lock."""
        images = self.root / "images"
        removed = [p for p in images.rglob("*") if p.is_file() and PARTIAL.fullmatch(p.name)] if images.is_dir() else []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def attach_jobs(self, run_id: str, keys: Iterable[str]) -> None:
        """Record that already-finished jobs belong to ``run_id`` too (a resumed run reuses them)."""
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR IGNORE INTO run_jobs(run_id, job_key) VALUES (?, ?)", [(run_id, k) for k in keys]
            )

    def record_method(
        self,
        label: str,
        method: str,
        weight_set: str | None,
        kind: str,
        version: str,
        parameters: int | None,
        layers: int | None,
        weight_digests: dict[str, str | None],
    ) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO methods(label, method, weight_set, kind, version, parameters, layers,"
                " weight_digests) VALUES (?,?,?,?,?,?,?,?)",
                (label, method, weight_set, kind, version, parameters, layers, json.dumps(weight_digests)),
            )

    # -- jobs -------------------------------------------------------------------------------------------------
    def output_path_for(self, spec: JobSpec, protocol: str) -> Path:
        return (
            self.root
            / "images"
            / safe_name(protocol)
            / safe_name(spec.label)
            / f"{safe_name(spec.pair_id)}__{spec.resolution}__s{spec.seed}__{spec.key[:10]}.png"
        )

    def record_job(self, run_id: str, protocol: str, spec: JobSpec, result: JobResult, eval_size: int) -> None:
        """Write the output PNG (atomically) and then the job, metrics, timings and environment in one transaction."""
        rel_path = None
        if result.png is not None:
            path = self.output_path_for(spec, protocol)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = partial_name(path)
            tmp.write_bytes(result.png)
            os.replace(tmp, path)
            rel_path = str(path.relative_to(self.root))
        with self.transaction() as cur:
            previous = cur.execute("SELECT attempts FROM jobs WHERE job_key=?", (spec.key,)).fetchone()
            attempts = (previous["attempts"] + 1) if previous else 1
            cur.execute(
                "INSERT OR REPLACE INTO jobs(job_key, run_id, protocol, method, weight_set, label, params, pair_id,"
                " content, style, resolution, seed, status, message, output_path, width, height, time_load_s,"
                " time_network_s, time_post_s, peak_memory_bytes, device, attempts, started, finished, spec,"
                " warnings, reason, precision, time_score_s, time_fit_s)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    spec.key,
                    run_id,
                    protocol,
                    spec.method,
                    spec.weight_set,
                    spec.label,
                    json.dumps(spec.params, sort_keys=True),
                    spec.pair_id,
                    spec.content,
                    spec.style,
                    spec.resolution,
                    spec.seed,
                    result.status,
                    result.message,
                    rel_path,
                    result.width,
                    result.height,
                    result.time_load_s,
                    result.time_network_s,
                    result.time_post_s,
                    result.peak_memory_bytes,
                    result.device,
                    attempts,
                    result.started,
                    result.finished,
                    json.dumps(spec.to_dict()),
                    json.dumps(result.warnings) if result.warnings else None,
                    result.reason,
                    spec.precision,
                    result.time_score_s,
                    result.time_fit_s,
                ),
            )
            cur.execute("DELETE FROM metrics WHERE job_key=? AND eval_size=?", (spec.key, eval_size))
            cur.execute("DELETE FROM metric_states WHERE job_key=? AND eval_size=?", (spec.key, eval_size))
            self._insert_metrics(cur, spec.key, eval_size, result.metrics)
            self._insert_states(cur, spec.key, eval_size, result.states)
            cur.execute("DELETE FROM timings WHERE job_key=?", (spec.key,))
            cur.executemany(
                "INSERT INTO timings(job_key, repeat, network_s, post_s) VALUES (?,?,?,?)",
                [(spec.key, i, t.network_s, t.post_s) for i, t in enumerate(result.timings)],
            )
            if result.environment is not None:
                cur.execute(
                    "INSERT OR REPLACE INTO job_environment(job_key, environment) VALUES (?,?)",
                    (spec.key, json.dumps(result.environment, sort_keys=True, default=str)),
                )
            cur.execute("INSERT OR IGNORE INTO run_jobs(run_id, job_key) VALUES (?, ?)", (run_id, spec.key))

    def remove_superseded(self, protocol: str, label: str, keep: dict[str, str]) -> int:
        """Delete ``label``'s jobs of ``protocol`` on the pairs of ``keep`` (job key -> pair id) whose keys are not
        kept (an imported file that changed), with their metrics, states, timings and output files; returns how many.
        Jobs of other pairs (e.g. whose new file was refused) stay."""
        rows = self.conn.execute(
            "SELECT job_key, pair_id, output_path FROM jobs WHERE protocol=? AND label=?", (protocol, label)
        ).fetchall()
        pairs = set(keep.values())
        gone = [r for r in rows if r["pair_id"] in pairs and r["job_key"] not in keep]
        with self.transaction() as cur:
            for table in ("metrics", "metric_states", "timings", "job_environment", "run_jobs", "jobs"):
                cur.executemany(f"DELETE FROM {table} WHERE job_key=?", [(r["job_key"],) for r in gone])
        for r in gone:
            if r["output_path"]:
                (self.root / r["output_path"]).unlink(missing_ok=True)
        return len(gone)

    def record_metrics(
        self,
        key: str,
        eval_size: int,
        values: list[MetricValue],
        states: list[MetricState] | None = None,
        time_score_s: float | None = None,
    ) -> None:
        """Metric values and set-level states of a finished job's stored output (a score job), in one transaction;
        its scoring time is added to the job's."""
        with self.transaction() as cur:
            if time_score_s is not None:
                cur.execute(
                    "UPDATE jobs SET time_score_s = COALESCE(time_score_s, 0) + ? WHERE job_key=?", (time_score_s, key)
                )
            self._insert_metrics(cur, key, eval_size, values)
            self._insert_states(cur, key, eval_size, states or [])

    @staticmethod
    def _insert_states(cur: sqlite3.Cursor, key: str, eval_size: int, states: list[MetricState]) -> None:
        cur.executemany(
            "INSERT OR REPLACE INTO metric_states(job_key, metric, eval_size, state, status, message)"
            " VALUES (?,?,?,?,?,?)",
            [(key, s.name, eval_size, s.state, s.status, s.message) for s in states],
        )
        cur.executemany(  # a reference image's state is the same for every job that uses it: the first one stays
            "INSERT OR IGNORE INTO reference_states(image_key, metric, eval_size, state) VALUES (?,?,?,?)",
            [
                (s.reference_key, s.name, eval_size, s.reference_state)
                for s in states
                if s.reference_key and s.reference_state is not None
            ],
        )

    def record_set_metric(self, row: SetRow, value: SetValue) -> None:
        """One row's set-level value, replacing the row's earlier value (from other jobs or references)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO set_metrics(protocol, label, resolution, precision, metric, eval_size,"
                " set_key, value, lower, upper, replicates, status, message, n, job_keys, reference_keys, computed)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.protocol,
                    row.label,
                    row.resolution,
                    row.precision,
                    value.metric,
                    value.eval_size,
                    value.set_key,
                    value.value,
                    value.lower,
                    value.upper,
                    value.replicates,
                    value.status,
                    value.message,
                    len(value.job_keys),
                    json.dumps(value.job_keys),
                    json.dumps(value.reference_keys),
                    utcnow(),
                ),
            )

    @staticmethod
    def _insert_metrics(cur: sqlite3.Cursor, key: str, eval_size: int, values: list[MetricValue]) -> None:
        cur.executemany(
            "INSERT OR REPLACE INTO metrics(job_key, metric, eval_size, value, status, message) VALUES (?,?,?,?,?,?)",
            [(key, m.name, eval_size, m.value, m.status, m.message) for m in values],
        )
