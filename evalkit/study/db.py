"""The study's vote store: one SQLite database (WAL, synchronous=FULL) in the study folder, readable by its owner only.

Every vote is committed before the server answers, so an acknowledged vote survives a crash or restart. The primary
key ``(pid, idx)`` makes each trial answerable once: a re-submitted identical vote is recognised as a duplicate and
changes nothing; a different answer to an already answered trial is refused. Participant sequences are generated
once, inside the same transaction that allocates the participant number, and stored, so a reload or a restart
resumes exactly where the participant was.

Identity is the session cookie alone. A Prolific ID that arrives again without its cookie gets a *fresh* session
flagged ``repeat_id`` (never the earlier session: knowing someone's Prolific ID must not let anyone answer in their
name); ``study analyze`` leaves repeat-ID sessions out unless asked to keep them. So whoever starts first with a
Prolific ID holds its counted session, and the server cannot tell the real person from someone who knows their ID: the
researcher decides contested cases with ``evalkit study participant`` (:func:`exclude`, :func:`include`,
:func:`count_session`), each change one transaction that also writes a row to ``admin_actions``. The completion code
is written in the transaction that stores the last answer.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError
from evalkit.study.codes import completion_code
from evalkit.study.design import Item, participant_sequence

if TYPE_CHECKING:
    from evalkit.study.config import StudyConfig

DB_FILE = "study.sqlite"
Connection = sqlite3.Connection

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
CREATE TABLE IF NOT EXISTS admin_actions (
    created TEXT NOT NULL,
    action TEXT NOT NULL,
    participant INTEGER NOT NULL,
    detail TEXT NOT NULL
);
"""
# ``admin_actions``: what the researcher changed and why (``study participant``), so that a decision about whose
# session counts can be traced later; ``participant`` is the participant number ``n``, ``detail`` a JSON object.
# Columns added after the first release, with their definitions: ``init`` adds the missing ones to an old database.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "participants": {
        "repeat_id": "INTEGER NOT NULL DEFAULT 0",  # 1: another session of this Prolific ID counts (see count_session)
        "completion_code": "TEXT",
        "code_kind": "TEXT",  # complete | screened
        "origin": "TEXT NOT NULL DEFAULT 'server'",  # server | static (answers posted by the static export)
        "submission": "TEXT",  # static origin: the client's submission id (idempotent re-posts)
        "excluded": "TEXT",  # NULL: not excluded; else the researcher's reason (`study participant --exclude`)
    },
}


TIE = "__tie__"  # the candidate id stored for a "no preference" answer (studies built with --allow-tie)
TIE_TOKEN = "none"  # the form value of the "no preference" button (option tokens are 12 random characters)


class VoteError(Exception):
    """A vote that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StudyFull(Exception):
    """The study reached its participant cap."""


class AdminError(EvalkitError):
    """A researcher's change to a session that cannot be made (unknown participant, no Prolific ID, bad reason)."""


@dataclass
class Progress:
    next_idx: int  # == total when finished
    total: int

    @property
    def done(self) -> bool:
        return self.next_idx >= self.total


@dataclass
class CodeIssuer:
    """Issues a participant's completion code when their last answer is stored.

    ``screen_out_after``: a participant who failed more vigilance trials than this gets the ``screened`` code
    (``None``: nobody is screened out).
    """

    secret: str
    correct: dict[str, set[str]] = field(default_factory=dict)  # vigilance item id -> acceptable candidates
    screen_out_after: int | None = None

    @classmethod
    def from_config(cls, config: StudyConfig) -> CodeIssuer:
        correct = {it.id: set(it.correct) for it in config.items if it.kind == "vigilance"}
        return cls(config.code_secret, correct, config.screen_out_after)

    def issue(self, conn: sqlite3.Connection, pid: str) -> tuple[str, str]:
        kind = "complete"
        if self.screen_out_after is not None:
            rows = conn.execute(
                "SELECT t.item, v.cand FROM votes v JOIN trials t ON t.pid=v.pid AND t.idx=v.idx"
                " WHERE v.pid=? AND t.kind='vigilance'",
                (pid,),
            ).fetchall()
            failures = sum(1 for r in rows if r["cand"] not in self.correct.get(r["item"], set()))
            if failures > self.screen_out_after:
                kind = "screened"
        return completion_code(self.secret, pid, kind), kind


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (with :func:`connect`'s busy timeout it waits for another writer,
    e.g. a running server, instead of failing), ``COMMIT`` when the block ends (a ``return`` inside it included),
    ``ROLLBACK`` on any exception, so a reader never sees half a change."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
    """Create (or bring up to date) the database; it holds Prolific IDs, so only its owner may read it."""
    path = folder / DB_FILE
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = connect(folder)
    try:
        conn.executescript(SCHEMA)
        migrate(conn)
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        sidecar = folder / f"{DB_FILE}{suffix}"
        if sidecar.exists():
            os.chmod(sidecar, 0o600)


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns later versions introduced (databases of earlier studies stay readable and writable)."""
    for table, columns in ADDED_COLUMNS.items():
        present = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS participants_by_submission ON participants(submission)")


def _insert_participant(
    conn: sqlite3.Connection,
    pid: str,
    n: int,
    prolific: dict[str, str | None],
    origin: str = "server",
    submission: str | None = None,
) -> None:
    repeat = (
        prolific.get("prolific_pid")
        and conn.execute(
            "SELECT 1 FROM participants WHERE prolific_pid=? LIMIT 1", (prolific["prolific_pid"],)
        ).fetchone()
    )
    conn.execute(
        "INSERT INTO participants(pid, n, prolific_pid, study_id, session_id, created, repeat_id, origin,"
        " submission) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            pid,
            n,
            prolific.get("prolific_pid"),
            prolific.get("study_id"),
            prolific.get("session_id"),
            now(),
            1 if repeat else 0,
            origin,
            submission,
        ),
    )


def _next_number(conn: sqlite3.Connection, max_participants: int | None) -> int:
    count, n = conn.execute("SELECT COUNT(*), COALESCE(MAX(n) + 1, 0) FROM participants").fetchone()
    if max_participants is not None and count >= max_participants:
        raise StudyFull(f"the study has reached its limit of {max_participants} participants")
    return int(n)


def create_participant(
    conn: sqlite3.Connection,
    config: StudyConfig,
    items: list[Item],
    prolific: dict[str, str | None],
    max_participants: int | None = None,
) -> str:
    """Allocate the next participant number and store their whole (seeded) sequence, atomically.

    Always a new session (see the module docstring); raises :class:`StudyFull` at the cap.
    """
    pid = secrets.token_urlsafe(18)
    with immediate(conn):
        n = _next_number(conn, max_participants)
        seq = participant_sequence(
            items, n, config.seed, config.trials_per_participant, config.vigilance, config.repeats
        )
        _insert_participant(conn, pid, n, prolific)
        conn.executemany(
            "INSERT INTO trials(pid, idx, item, kind, repeat_of, options) VALUES (?,?,?,?,?,?)",
            [
                (pid, i, t.item, t.kind, t.repeat_of, json.dumps([[secrets.token_urlsafe(9), cid] for cid in t.order]))
                for i, t in enumerate(seq)
            ],
        )
    return pid


def participant_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0])


def submission_exists(conn: sqlite3.Connection, submission: str) -> bool:
    return conn.execute("SELECT 1 FROM participants WHERE submission=?", (submission,)).fetchone() is not None


def issue_code(conn: sqlite3.Connection, pid: str, codes: CodeIssuer) -> tuple[str, str]:
    """Issue (and store) the code of a participant who finished before this server issued codes."""
    code, kind = codes.issue(conn, pid)
    conn.execute("UPDATE participants SET completion_code=?, code_kind=? WHERE pid=?", (code, kind, pid))
    return code, kind


def participant(conn: sqlite3.Connection, pid: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM participants WHERE pid=?", (pid,)).fetchone()


def progress(conn: sqlite3.Connection, pid: str) -> Progress:
    total = conn.execute("SELECT COUNT(*) FROM trials WHERE pid=?", (pid,)).fetchone()[0]
    answered = {r[0] for r in conn.execute("SELECT idx FROM votes WHERE pid=?", (pid,))}
    nxt = next((i for i in range(total) if i not in answered), total)
    return Progress(next_idx=nxt, total=total)


def trial(conn: sqlite3.Connection, pid: str, idx: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM trials WHERE pid=? AND idx=?", (pid, idx)).fetchone()


def record_vote(
    conn: sqlite3.Connection,
    pid: str,
    idx: int,
    token: str,
    rt_ms: int | None,
    codes: CodeIssuer | None = None,
    allow_tie: bool = False,
) -> str:
    """Store one vote; returns ``stored`` or ``duplicate``; raises :class:`VoteError` and changes nothing otherwise.

    The last answer also marks the participant complete and, with ``codes``, issues their completion code, in the
    same transaction.
    """
    with immediate(conn):
        row = trial(conn, pid, idx)
        if row is None:
            raise VoteError(404, "no such trial")
        options = dict(json.loads(row["options"]))
        if allow_tie and row["kind"] == "regular":
            options[TIE_TOKEN] = TIE
        if token not in options:
            raise VoteError(400, "choice is not one of this trial's options")
        prev = conn.execute("SELECT token FROM votes WHERE pid=? AND idx=?", (pid, idx)).fetchone()
        if prev is not None:
            if prev["token"] == token:
                return "duplicate"
            raise VoteError(409, "this trial was already answered with a different choice")
        state = progress(conn, pid)
        if idx != state.next_idx:
            raise VoteError(409, f"answer trial {state.next_idx + 1} first")
        conn.execute(
            "INSERT INTO votes(pid, idx, token, cand, rt_ms, created) VALUES (?,?,?,?,?,?)",
            (pid, idx, token, options[token], rt_ms, now()),
        )
        if state.next_idx + 1 >= state.total:
            _complete(conn, pid, codes)
        return "stored"


def _complete(conn: sqlite3.Connection, pid: str, codes: CodeIssuer | None) -> None:
    code, kind = codes.issue(conn, pid) if codes is not None else (None, None)
    conn.execute(
        "UPDATE participants SET completed=?, completion_code=?, code_kind=? WHERE pid=?", (now(), code, kind, pid)
    )


def record_static(
    conn: sqlite3.Connection,
    submission: str,
    prolific: dict[str, str | None],
    trials: list[dict[str, Any]],
    answers: list[tuple[str, int | None]],
    codes: CodeIssuer,
    max_participants: int | None = None,
) -> tuple[str, str]:
    """Store a whole sequence answered in the static export as one participant; returns (code, kind).

    ``trials``: the sequence's trials (item, kind, repeat_of, options as [token, candidate] pairs); ``answers``:
    (chosen token, rt) per trial, already validated against them. Re-posting the same ``submission`` returns the code
    issued the first time and stores nothing.
    """
    with immediate(conn):
        row = conn.execute(
            "SELECT completion_code, code_kind FROM participants WHERE submission=?", (submission,)
        ).fetchone()
        if row is not None:
            return row["completion_code"], row["code_kind"]
        pid = secrets.token_urlsafe(18)
        n = _next_number(conn, max_participants)
        _insert_participant(conn, pid, n, prolific, origin="static", submission=submission)
        conn.executemany(
            "INSERT INTO trials(pid, idx, item, kind, repeat_of, options) VALUES (?,?,?,?,?,?)",
            [(pid, i, t["item"], t["kind"], t["repeat_of"], json.dumps(t["options"])) for i, t in enumerate(trials)],
        )
        stamp = now()
        conn.executemany(
            "INSERT INTO votes(pid, idx, token, cand, rt_ms, created) VALUES (?,?,?,?,?,?)",
            [(pid, i, token, dict(trials[i]["options"])[token], rt, stamp) for i, (token, rt) in enumerate(answers)],
        )
        _complete(conn, pid, codes)
        code, kind = conn.execute("SELECT completion_code, code_kind FROM participants WHERE pid=?", (pid,)).fetchone()
        return code, kind


PARTICIPANT_ROWS = (
    "SELECT p.*, (SELECT COUNT(*) FROM trials t WHERE t.pid=p.pid) AS total,"
    " (SELECT COUNT(*) FROM votes v WHERE v.pid=p.pid) AS answered FROM participants p ORDER BY p.n"
)
VOTE_ROWS = (
    "SELECT v.pid, p.n, p.prolific_pid, p.study_id, p.session_id, p.repeat_id, p.excluded, v.idx, t.item, t.kind,"
    " t.repeat_of, t.options, v.token, v.cand, v.rt_ms, v.created FROM votes v JOIN trials t ON t.pid=v.pid"
    " AND t.idx=v.idx JOIN participants p ON p.pid=v.pid ORDER BY p.n, v.idx"
)


def _rows(folder: Path, query: str) -> list[dict[str, Any]]:
    """All rows of ``query`` on a study's database (migrated first); empty if the study never ran."""
    if not (folder / DB_FILE).is_file():
        return []
    conn = connect(folder)
    try:
        conn.executescript(SCHEMA)
        migrate(conn)
        return [dict(r) for r in conn.execute(query).fetchall()]
    finally:
        conn.close()


def participant_rows(folder: Path) -> list[dict[str, Any]]:
    """Every participant with their answer count (for the admin page and exports)."""
    return _rows(folder, PARTICIPANT_ROWS)


def vote_rows(folder: Path) -> list[dict[str, Any]]:
    """Every vote joined with its trial and participant (for analysis and CSV export)."""
    return _rows(folder, VOTE_ROWS)


# -- the researcher's decisions (``evalkit study participant``) ----------------------------------------------------
MAX_REASON = 500  # a reason is a note for the record and the Prolific CSV, not a document


@dataclass(frozen=True)
class Counted:
    """Outcome of :func:`count_session`: the sessions of ``prolific_pid`` now flagged repeat ID (``marked``: those
    that were not before), whether ``n`` already was the counted one, and its exclusion reason if it has one."""

    n: int
    prolific_pid: str
    marked: list[int]
    was_counted: bool
    excluded: str | None


@contextmanager
def _admin_transaction(folder: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction (:func:`immediate`) on a study's database, brought up to date first (``init``: an older
    database gains the ``excluded`` column and ``admin_actions``)."""
    if not (folder / DB_FILE).is_file():
        raise AdminError(f"study {folder} has no sessions yet (no {DB_FILE}): nothing to change")
    init(folder)
    conn = connect(folder)
    try:
        with immediate(conn):
            yield conn
    finally:
        conn.close()


def _session(conn: sqlite3.Connection, n: int) -> sqlite3.Row:
    row = conn.execute("SELECT n, prolific_pid, repeat_id, excluded FROM participants WHERE n=?", (n,)).fetchone()
    if row is None:
        last = conn.execute("SELECT MAX(n) FROM participants").fetchone()[0]
        known = "no participants yet" if last is None else f"participants are numbered 0 to {last}"
        raise AdminError(
            f"no participant {n} in this study ({known}: the '#' of the admin page, 'participant' in CSVs)"
        )
    return row


def _log(conn: sqlite3.Connection, action: str, n: int, detail: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO admin_actions(created, action, participant, detail) VALUES (?,?,?,?)",
        (now(), action, n, json.dumps(detail)),
    )


def _clean_reason(reason: str) -> str:
    """The reason as stored: one non-empty line (it is printed on one line and written into CSV cells)."""
    text = reason.strip()
    if not text:
        raise AdminError("--reason must say why (it is kept with the exclusion and shown in the Prolific export)")
    if any(not ch.isprintable() for ch in text):
        raise AdminError("--reason must be one line of printable text")
    if len(text) > MAX_REASON:
        raise AdminError(f"--reason is {len(text)} characters long; keep it under {MAX_REASON}")
    return text


def exclude(folder: Path, n: int, reason: str) -> str | None:
    """Exclude participant ``n`` from analysis and mark them ``excluded`` in the Prolific export, with ``reason``;
    returns the reason it replaced (``None``: the session was not excluded)."""
    text = _clean_reason(reason)
    with _admin_transaction(folder) as conn:
        previous = _session(conn, n)["excluded"]
        conn.execute("UPDATE participants SET excluded=? WHERE n=?", (text, n))
        _log(conn, "exclude", n, {"reason": text, "previous": previous})
    return previous


def include(folder: Path, n: int) -> str | None:
    """Undo :func:`exclude`; returns the reason removed (``None``: the session was not excluded, nothing changed)."""
    with _admin_transaction(folder) as conn:
        previous = _session(conn, n)["excluded"]
        if previous is not None:
            conn.execute("UPDATE participants SET excluded=NULL WHERE n=?", (n,))
            _log(conn, "include", n, {"previous": previous})
    return previous


def count_session(folder: Path, n: int) -> Counted:
    """Make participant ``n`` the counted session of their Prolific ID: it gets ``repeat_id`` 0, every other
    session with that ID ``repeat_id`` 1. For the case the server cannot decide: someone who knew the ID started
    first, and the real participant's later session was flagged as the repeat."""
    with _admin_transaction(folder) as conn:
        row = _session(conn, n)
        prolific = row["prolific_pid"]
        if not prolific:
            raise AdminError(f"participant {n} has no Prolific ID: there is no other session to count it against")
        others = conn.execute(
            "SELECT n, repeat_id FROM participants WHERE prolific_pid=? AND n<>? ORDER BY n", (prolific, n)
        ).fetchall()
        marked = [r["n"] for r in others if not r["repeat_id"]]
        if marked or row["repeat_id"]:
            conn.execute(
                "UPDATE participants SET repeat_id = CASE WHEN n=? THEN 0 ELSE 1 END WHERE prolific_pid=?",
                (n, prolific),
            )
            _log(conn, "count", n, {"prolific_pid": prolific, "marked_repeat": marked})
        return Counted(n, prolific, marked, not row["repeat_id"] and not marked, row["excluded"])


def admin_actions(folder: Path) -> list[dict[str, Any]]:
    """The researcher's recorded changes, oldest first."""
    return _rows(folder, "SELECT * FROM admin_actions ORDER BY rowid")
