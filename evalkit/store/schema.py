"""The results database's layout and its migrations; :class:`~evalkit.store.ResultsStore` applies them on open.

``meta.schema_version`` records the layout. A new database is created at :data:`SCHEMA_VERSION`; one written by an
earlier evalkit is migrated in one transaction (``tests/test_migrations.py`` migrates a database written by the first
release); one from a newer evalkit is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evalkit.errors import EvalkitError

SCHEMA_VERSION = 4
DB_NAME = "evalkit.sqlite"

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
    time_score_s REAL,
    time_fit_s REAL,
    peak_memory_bytes INTEGER,
    device TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    started TEXT,
    finished TEXT,
    spec TEXT NOT NULL,
    warnings TEXT,
    reason TEXT,
    precision TEXT NOT NULL DEFAULT 'fp32'
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
    study_id TEXT NOT NULL, study TEXT NOT NULL, protocol TEXT, run_ids TEXT,
    label TEXT NOT NULL, score REAL, lower REAL, upper REAL, rank INTEGER, votes INTEGER,
    PRIMARY KEY (study_id, label)
);
CREATE TABLE IF NOT EXISTS metric_agreement (
    study_id TEXT NOT NULL, study TEXT NOT NULL, protocol TEXT, run_ids TEXT,
    metric TEXT NOT NULL, agreement REAL, n INTEGER, PRIMARY KEY (study_id, metric)
);
CREATE TABLE IF NOT EXISTS metric_states (
    job_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    eval_size INTEGER NOT NULL,
    state BLOB,
    status TEXT NOT NULL,
    message TEXT,
    PRIMARY KEY (job_key, metric, eval_size)
);
CREATE TABLE IF NOT EXISTS reference_states (
    image_key TEXT NOT NULL,
    metric TEXT NOT NULL,
    eval_size INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (image_key, metric, eval_size)
);
CREATE TABLE IF NOT EXISTS set_metrics (
    protocol TEXT NOT NULL,
    label TEXT NOT NULL,
    resolution TEXT NOT NULL,
    precision TEXT NOT NULL,
    metric TEXT NOT NULL,
    eval_size INTEGER NOT NULL,
    set_key TEXT NOT NULL,
    value REAL,
    lower REAL,
    upper REAL,
    replicates BLOB,
    status TEXT NOT NULL,
    message TEXT,
    n INTEGER NOT NULL,
    job_keys TEXT NOT NULL,
    reference_keys TEXT NOT NULL,
    computed TEXT NOT NULL,
    PRIMARY KEY (protocol, label, resolution, precision, metric, eval_size)
);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs(run_id);
CREATE INDEX IF NOT EXISTS run_jobs_by_job ON run_jobs(job_key);
"""

# Schema changes since version 1 (the first release), applied in order.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (  # run provenance and crash hygiene, per-job warnings and structured failure reasons
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN hostname TEXT",
        "ALTER TABLE runs ADD COLUMN protocol_source TEXT",
        "ALTER TABLE runs ADD COLUMN protocol_text TEXT",
        "ALTER TABLE runs ADD COLUMN note TEXT",
        "ALTER TABLE jobs ADD COLUMN warnings TEXT",
        "ALTER TABLE jobs ADD COLUMN reason TEXT",
        "ALTER TABLE jobs ADD COLUMN precision TEXT NOT NULL DEFAULT 'fp32'",
        # the one place that reads message text: structured reasons for jobs recorded before they existed
        "UPDATE jobs SET reason='oom' WHERE status='oom'",
        "UPDATE jobs SET reason='after-oom' WHERE status='skipped' AND message LIKE 'skipped because OOM%'",
    ),
    3: (  # study results keyed by study id with the runs they were built from; set-level metrics and their states
        "ALTER TABLE preferences RENAME TO preferences_v2",
        "CREATE TABLE preferences (study_id TEXT NOT NULL, study TEXT NOT NULL, protocol TEXT, run_ids TEXT,"
        " label TEXT NOT NULL, score REAL, lower REAL, upper REAL, rank INTEGER, votes INTEGER,"
        " PRIMARY KEY (study_id, label))",
        "INSERT INTO preferences SELECT study, study, NULL, NULL, label, score, lower, upper, rank, votes"
        " FROM preferences_v2",
        "DROP TABLE preferences_v2",
        "ALTER TABLE metric_agreement RENAME TO metric_agreement_v2",
        "CREATE TABLE metric_agreement (study_id TEXT NOT NULL, study TEXT NOT NULL, protocol TEXT, run_ids TEXT,"
        " metric TEXT NOT NULL, agreement REAL, n INTEGER, PRIMARY KEY (study_id, metric))",
        "INSERT INTO metric_agreement SELECT study, study, NULL, NULL, metric, agreement, n FROM metric_agreement_v2",
        "DROP TABLE metric_agreement_v2",
        "ALTER TABLE jobs ADD COLUMN time_score_s REAL",  # the harness's scoring time per output
    ),
    4: (  # a method's per-style learning phase (InST's textual inversion), on the job that ran it
        "ALTER TABLE jobs ADD COLUMN time_fit_s REAL",
    ),
}


def migrate(cur: sqlite3.Cursor, path: Path) -> None:
    """Bring the database of ``cur`` (inside a write transaction) to :data:`SCHEMA_VERSION`."""
    row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        cur.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise EvalkitError(
            f"{path} was written by a newer evalkit (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}): upgrade evalkit to read it"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target]:
            cur.execute(statement)
    if version < SCHEMA_VERSION:
        cur.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
