"""The study's vote store: one SQLite database (WAL, synchronous=FULL) in the study folder.

Every vote is committed before the server answers, so an acknowledged vote survives a crash or restart. The primary
key ``(pid, idx)`` makes each trial answerable once: a re-submitted identical vote is recognised as a duplicate and
changes nothing; a different answer to an already answered trial is refused. Participant sequences are generated
once, inside the same transaction that allocates the participant number, and stored, so a reload or a restart
resumes exactly where the participant was.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.study.design import Item, participant_sequence

DB_FILE = "study.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    pid TEXT PRIMARY KEY,
    n INTEGER NOT NULL UNIQUE,
    prolific_pid TEXT,
    study_id TEXT,
    session_id TEXT,
    created TEXT NOT NULL,
    completed TEXT
);
CREATE INDEX IF NOT EXISTS participants_by_prolific ON participants(prolific_pid);
CREATE TABLE IF NOT EXISTS trials (
    pid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    item TEXT NOT NULL,
    kind TEXT NOT NULL,
    repeat_of INTEGER,
    options TEXT NOT NULL,
    PRIMARY KEY (pid, idx)
);
CREATE TABLE IF NOT EXISTS votes (
    pid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    token TEXT NOT NULL,
    cand TEXT NOT NULL,
    rt_ms INTEGER,
    created TEXT NOT NULL,
    PRIMARY KEY (pid, idx)
);
"""


class VoteError(Exception):
    """A vote that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Progress:
    next_idx: int  # == total when finished
    total: int

    @property
    def done(self) -> bool:
        return self.next_idx >= self.total


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def connect(folder: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(folder / DB_FILE, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def init(folder: Path) -> None:
    conn = connect(folder)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def create_participant(conn: sqlite3.Connection, config: dict[str, Any], items: list[Item],
                       prolific: dict[str, str | None]) -> str:
    """Allocate the next participant number and store their whole (seeded) sequence, atomically."""
    pid = secrets.token_urlsafe(18)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if prolific.get("prolific_pid"):  # a returning Prolific participant resumes instead of starting over
            row = conn.execute("SELECT pid FROM participants WHERE prolific_pid=? ORDER BY n LIMIT 1",
                               (prolific["prolific_pid"],)).fetchone()
            if row:
                conn.execute("COMMIT")
                return row["pid"]
        n = conn.execute("SELECT COALESCE(MAX(n) + 1, 0) FROM participants").fetchone()[0]
        seq = participant_sequence(items, n, config["seed"], config["trials_per_participant"],
                                   config["vigilance"], config["repeats"])
        conn.execute("INSERT INTO participants(pid, n, prolific_pid, study_id, session_id, created)"
                     " VALUES (?,?,?,?,?,?)",
                     (pid, n, prolific.get("prolific_pid"), prolific.get("study_id"), prolific.get("session_id"),
                      now()))
        conn.executemany(
            "INSERT INTO trials(pid, idx, item, kind, repeat_of, options) VALUES (?,?,?,?,?,?)",
            [(pid, i, t.item, t.kind, t.repeat_of,
              json.dumps([[secrets.token_urlsafe(9), cid] for cid in t.order])) for i, t in enumerate(seq)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return pid


def participant(conn: sqlite3.Connection, pid: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM participants WHERE pid=?", (pid,)).fetchone()


def progress(conn: sqlite3.Connection, pid: str) -> Progress:
    total = conn.execute("SELECT COUNT(*) FROM trials WHERE pid=?", (pid,)).fetchone()[0]
    answered = {r[0] for r in conn.execute("SELECT idx FROM votes WHERE pid=?", (pid,))}
    nxt = next((i for i in range(total) if i not in answered), total)
    return Progress(next_idx=nxt, total=total)


def trial(conn: sqlite3.Connection, pid: str, idx: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM trials WHERE pid=? AND idx=?", (pid, idx)).fetchone()


def record_vote(conn: sqlite3.Connection, pid: str, idx: int, token: str, rt_ms: int | None) -> str:
    """Store one vote; returns ``stored`` or ``duplicate``; raises :class:`VoteError` and changes nothing otherwise."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = trial(conn, pid, idx)
        if row is None:
            raise VoteError(404, "no such trial")
        options = dict(json.loads(row["options"]))
        if token not in options:
            raise VoteError(400, "choice is not one of this trial's options")
        prev = conn.execute("SELECT token FROM votes WHERE pid=? AND idx=?", (pid, idx)).fetchone()
        if prev is not None:
            if prev["token"] == token:
                conn.execute("COMMIT")
                return "duplicate"
            raise VoteError(409, "this trial was already answered with a different choice")
        state = progress(conn, pid)
        if idx != state.next_idx:
            raise VoteError(409, f"answer trial {state.next_idx + 1} first")
        conn.execute("INSERT INTO votes(pid, idx, token, cand, rt_ms, created) VALUES (?,?,?,?,?,?)",
                     (pid, idx, token, options[token], rt_ms, now()))
        if state.next_idx + 1 >= state.total:
            conn.execute("UPDATE participants SET completed=? WHERE pid=?", (now(), pid))
        conn.execute("COMMIT")
        return "stored"
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def vote_rows(folder: Path) -> list[dict[str, Any]]:
    """Every vote joined with its trial (for analysis and CSV export); empty if the study never ran."""
    if not (folder / DB_FILE).is_file():
        return []
    conn = connect(folder)
    try:
        conn.executescript(SCHEMA)
        rows = conn.execute(
            "SELECT v.pid, p.n, p.prolific_pid, p.study_id, p.session_id, v.idx, t.item, t.kind, t.repeat_of,"
            " t.options, v.token, v.cand, v.rt_ms, v.created FROM votes v JOIN trials t ON t.pid=v.pid AND"
            " t.idx=v.idx JOIN participants p ON p.pid=v.pid ORDER BY p.n, v.idx").fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()
