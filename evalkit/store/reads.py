"""Read models of the results database: every query that reports, exports, ``evalkit speed``, ``evalkit runs`` and
study building need, so that no other module holds SQL on it. Mixed into :class:`~evalkit.store.ResultsStore`."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.protocol import Protocol


@dataclass(frozen=True)
class SetRow:
    """The outputs a set-level metric reduces: one method variant (label) at one resolution and precision."""

    protocol: str
    label: str
    resolution: str
    precision: str


@dataclass(frozen=True)
class SetValue:
    """A set-level metric's value for a row, with what it was computed from (``set_key`` hashes all of it)."""

    metric: str
    eval_size: int
    set_key: str
    value: float | None
    status: str
    message: str | None
    job_keys: list[str]
    reference_keys: list[str]
    lower: float | None = None  # 95 % bootstrap interval over pairs
    upper: float | None = None
    replicates: bytes | None = None  # the bootstrap values (numpy .npy), for paired intervals between rows


class ReadModels:
    conn: sqlite3.Connection
    path: Path
    root: Path
    # a reader sets this: False when no process holds the root's lock, so ``running`` runs are shown interrupted
    writer_alive: bool | None = None

    # -- runs -------------------------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first (a run whose process is gone is shown ``interrupted`` to readers)."""
        return [self._effective(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY started, rowid")]

    def _effective(self, row: sqlite3.Row) -> dict[str, Any]:
        run = dict(row)
        if run["status"] == "running" and self.writer_alive is False:
            run["status"] = "interrupted"
            run["note"] = (
                f"interrupted: process {run.get('pid') or '?'} on {run.get('hostname') or '?'} ended without "
                f"finishing the run (no process writes this root; the next run records it)"
            )
        return run

    def latest_run(self) -> str | None:
        row = self.conn.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return self._effective(row) if row else None

    def run_summaries(self) -> list[dict[str, Any]]:
        """Every run with its job counts: by the status each job has now, and how many it reused from earlier runs."""
        out = []
        for run in self.runs():
            counts = dict(
                self.conn.execute(
                    "SELECT j.status, COUNT(*) FROM run_jobs r JOIN jobs j ON j.job_key=r.job_key WHERE r.run_id=?"
                    " GROUP BY j.status",
                    (run["run_id"],),
                ).fetchall()
            )
            reused = self.conn.execute(
                "SELECT COUNT(*) FROM run_jobs r JOIN jobs j ON j.job_key=r.job_key WHERE r.run_id=? AND"
                " j.run_id<>r.run_id",
                (run["run_id"],),
            ).fetchone()[0]
            out.append({**dict(run), "counts": counts, "reused": reused})
        return out

    def stored_protocol(self, run_id: str) -> tuple[Protocol, str | None]:
        """The protocol a run was planned from, parsed from the TOML text stored with it (sha256-checked), plus a
        note when the file it came from now differs or is gone (``None`` when it is unchanged).

        Runs recorded before protocols were stored (schema 1) fall back to loading the protocol by name."""
        from evalkit.protocol import find_protocol, load_protocol, protocol_from_text

        run = self.run_row(run_id)
        if run is None:
            raise EvalkitError(f"run '{run_id}' is not in {self.path}")
        if not run.get("protocol_text"):
            protocol = load_protocol(run.get("protocol_source") or run["protocol"])
            note = None
            if run.get("protocol_sha256") and protocol.sha256 != run["protocol_sha256"]:
                note = (
                    f"run {run_id} recorded protocol '{run['protocol']}' with sha256 "
                    f"{run['protocol_sha256'][:12]}…, but the file found now ({protocol.source}) has "
                    f"{protocol.sha256[:12]}…: it changed since the run"
                )
            return protocol, note
        source = run.get("protocol_source") or run["protocol"]
        protocol = protocol_from_text(run["protocol_text"], source, run.get("protocol_sha256"))
        note = None
        try:
            on_disk = Path(source) if Path(source).is_file() else find_protocol(run["protocol"])
            digest = hashlib.sha256(on_disk.read_bytes()).hexdigest()
            if digest != protocol.sha256:
                note = (
                    f"the protocol file {on_disk} changed since run {run_id} (sha256 {digest[:12]}… now, "
                    f"{protocol.sha256[:12]}… then): using the version stored with the run"
                )
        except (EvalkitError, OSError):
            note = (
                f"the protocol file of run {run_id} ({source}) is not found now: using the version stored with the run"
            )
        return protocol, note

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

    def metric_names(self, key: str, eval_size: int) -> set[str]:
        """Metrics a job has at ``eval_size``: ok values of image-level metrics, ok states of set-level ones."""
        rows = self.conn.execute(
            "SELECT metric FROM metrics WHERE job_key=? AND eval_size=? AND status='ok' UNION "
            "SELECT metric FROM metric_states WHERE job_key=? AND eval_size=? AND status='ok'",
            (key, eval_size, key, eval_size),
        )
        return {r["metric"] for r in rows}

    def metric_states(self, keys: Iterable[str], metric: str, eval_size: int) -> dict[str, sqlite3.Row]:
        """``job key -> (state, status, message)`` of a set-level metric."""
        return self._by_key(
            "SELECT job_key AS k, state, status, message FROM metric_states WHERE metric=? AND eval_size=? AND"
            " job_key IN ({marks})",
            (metric, eval_size),
            keys,
        )

    def reference_states(self, keys: Iterable[str], metric: str, eval_size: int) -> dict[str, sqlite3.Row]:
        """``image key -> (state)`` of reference images for a set-level metric."""
        return self._by_key(
            "SELECT image_key AS k, state FROM reference_states WHERE metric=? AND eval_size=? AND"
            " image_key IN ({marks})",
            (metric, eval_size),
            keys,
        )

    def _by_key(self, query: str, args: tuple, keys: Iterable[str]) -> dict[str, sqlite3.Row]:
        keys = list(keys)
        out: dict[str, sqlite3.Row] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            sql = query.format(marks=",".join("?" * len(chunk)))
            out.update({r["k"]: r for r in self.conn.execute(sql, (*args, *chunk))})
        return out

    def set_metric_key(self, row: SetRow, metric: str, eval_size: int) -> tuple[str, str] | None:
        """(set key, status) of a row's stored set-level value, ``None`` when it has none."""
        found = self.conn.execute(
            "SELECT set_key, status FROM set_metrics WHERE protocol=? AND label=? AND resolution=? AND precision=?"
            " AND metric=? AND eval_size=?",
            (row.protocol, row.label, row.resolution, row.precision, metric, eval_size),
        ).fetchone()
        return (found["set_key"], found["status"]) if found else None

    def set_metrics_frame(self, protocol: str) -> pd.DataFrame:
        """Set-level values of a protocol's rows (label, resolution, precision, metric, eval size, value, status,
        message, n); reports keep the rows whose jobs they show."""
        return self._frame(
            "SELECT protocol, label, resolution, precision, metric, eval_size, value, lower, upper, replicates, status,"
            " message, n, job_keys FROM set_metrics WHERE protocol=? ORDER BY label, resolution, metric",
            (protocol,),
        )

    def output_file(self, key: str) -> Path | None:
        """The stored output image of a job (``None`` when it has none or the file is gone)."""
        row = self.conn.execute("SELECT output_path FROM jobs WHERE job_key=?", (key,)).fetchone()
        if not row or not row["output_path"]:
            return None
        path = self.root / row["output_path"]
        return path.resolve() if path.is_file() else None

    def run_outputs(self, run_id: str) -> list[dict[str, Any]]:
        """The run's successful jobs that have an output image, in a stable order."""
        rows = self.conn.execute(
            "SELECT j.* FROM jobs j JOIN run_jobs r ON r.job_key = j.job_key WHERE r.run_id=? AND j.status='ok'"
            " AND j.output_path IS NOT NULL ORDER BY j.label, j.pair_id, j.resolution, j.seed",
            (run_id,),
        )
        return [dict(r) for r in rows]

    # -- frames for reports and exports --------------------------------------------------------------------------
    @staticmethod
    def _run_filter(column: str, run_ids: list[str] | None) -> tuple[str, list[str]]:
        """SQL restricting ``column`` (a job key) to jobs that belong to ``run_ids`` (all jobs when empty)."""
        if not run_ids:
            return "", []
        marks = ",".join("?" * len(run_ids))
        return f" WHERE {column} IN (SELECT job_key FROM run_jobs WHERE run_id IN ({marks}))", list(run_ids)

    def _frame(self, query: str, args: Iterable[Any] = ()) -> pd.DataFrame:
        import pandas as pd

        return pd.read_sql_query(query, self.conn, params=list(args))

    def jobs_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Jobs (one row each) of the given runs."""
        where, args = self._run_filter("j.job_key", run_ids)
        return self._frame(
            "SELECT j.* FROM jobs j" + where + " ORDER BY j.label, j.pair_id, j.resolution, j.seed", args
        )

    def metrics_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Metrics in long form joined with their job's identifying columns."""
        where, args = self._run_filter("m.job_key", run_ids)
        return self._frame(
            "SELECT m.job_key, j.label, j.method, j.weight_set, j.pair_id, j.resolution, j.seed, "
            "m.metric, m.eval_size, m.value, m.status, m.message FROM metrics m JOIN jobs j ON "
            "j.job_key = m.job_key" + where + " ORDER BY j.label, j.pair_id, m.metric",
            args,
        )

    def timings_frame(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Timed repeats (one row per repeat) with their job's label and resolution."""
        where, args = self._run_filter("t.job_key", run_ids)
        return self._frame(
            "SELECT t.job_key, j.label, j.method, j.weight_set, j.pair_id, j.resolution, t.repeat, "
            "t.network_s, t.post_s FROM timings t JOIN jobs j ON j.job_key = t.job_key"
            + where
            + " ORDER BY j.label, j.resolution, t.repeat",
            args,
        )

    def methods_table(self) -> dict[str, dict[str, Any]]:
        """``label -> {method, weight_set, kind, version, parameters, layers, weight_digests}``."""
        out = {}
        for row in self.conn.execute("SELECT * FROM methods"):
            item = dict(row)
            item["weight_digests"] = json.loads(item["weight_digests"]) if item.get("weight_digests") else {}
            out[item["label"]] = item
        return out

    def job_environments(self, run_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """``job key -> environment`` the job ran on (captured by the process that ran it)."""
        where, args = self._run_filter("job_key", run_ids)
        return {
            r["job_key"]: json.loads(r["environment"])
            for r in self.conn.execute("SELECT job_key, environment FROM job_environment" + where, args)
        }

    def metric_values(self, job_keys: set[str]) -> pd.DataFrame:
        """job_key x metric table of ok metric values (the lowest eval size when several), for metric agreement."""
        frame = self._frame(
            "SELECT job_key, metric, eval_size, value FROM metrics WHERE status='ok' AND value IS NOT NULL"
        )
        frame = frame[frame["job_key"].isin(job_keys)].sort_values("eval_size")
        return frame.drop_duplicates(["job_key", "metric"]).pivot(index="job_key", columns="metric", values="value")
