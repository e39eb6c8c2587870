"""The SQLite store's schema: DDL, the migrations, and recognising a tickwork database.

A tickwork database carries two marks: ``PRAGMA application_id`` (:data:`APPLICATION_ID`)
in the file header, and the row ``('application', 'tickwork')`` in ``tickwork_meta``;
``PRAGMA user_version`` and the ``schema_version`` row hold the schema version. Opening
refuses any file without them (unless it is empty) and any newer version, before writing
anything.

Times are integer microseconds since the epoch (UTC). States are the integer values of
:class:`tickwork.state.State`.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from tickwork.errors import NotATickworkDatabase, SchemaTooNew, StoreError
from tickwork.stores._sql import states
from tickwork.stores.sqlite._tokens import V7_TOKENS

#: "tick" in ASCII: the file header mark of a tickwork database.
APPLICATION_ID: Final = 0x7469636B

_V1: Final = states(
    """
CREATE TABLE tickwork_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value NOT NULL
) WITHOUT ROWID;

CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    params BLOB NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    owner TEXT,
    claim_token INTEGER,
    lease_until INTEGER,
    schedule_id TEXT,
    fire_at INTEGER,
    dedup_key TEXT,
    max_attempts INTEGER,
    timeout_us INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    abort_requested INTEGER NOT NULL DEFAULT 0
);

-- claim and next_pending_at: PENDING rows due before T, in (run_at, id) order, as a range
-- scan. The one index every insert pays for in proportion to its randomness.
CREATE INDEX ix_instances_pending ON instances (run_at) WHERE state = {PENDING};

-- held rows (CLAIMED, RUNNING) by lease expiry: lease takeover, and the owner lookups of
-- release/renew (a single-node store has one owner, so no owner column is needed first).
CREATE INDEX ix_instances_held ON instances (lease_until) WHERE state IN ({HELD});

-- abort_requests(owner): tiny, the flag is cleared when a row ends.
CREATE INDEX ix_instances_abort ON instances (owner) WHERE abort_requested = 1;

-- dedup: a key or a schedule's fire time is stored once.
CREATE UNIQUE INDEX ux_instances_dedup ON instances (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE UNIQUE INDEX ux_instances_fire ON instances (schedule_id, fire_at)
    WHERE schedule_id IS NOT NULL AND fire_at IS NOT NULL;

-- list(state=<terminal>) newest first: (state, rowid) is a range scan in id order. Only
-- ended rows are in it, so inserts, claims and retries never touch it (an index on every
-- state cost a third of the claim+finish rate). PENDING and held rows are listed through
-- ix_instances_pending / ix_instances_held or the rowid (see _sqlite_ops.page).
CREATE INDEX ix_instances_ended ON instances (state) WHERE state >= {SUCCEEDED};

-- count(), count_by_state(): maintained by every write, so a count never scans rows.
CREATE TABLE counts (
    task TEXT NOT NULL,
    state INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (task, state)
) WITHOUT ROWID;

CREATE TABLE history (
    seq INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node TEXT,
    started INTEGER NOT NULL,
    finished INTEGER NOT NULL,
    state INTEGER NOT NULL,
    error_type TEXT,
    error TEXT,
    result TEXT
);
CREATE INDEX ix_history_instance ON history (instance_id);

INSERT INTO tickwork_meta (key, value) VALUES
    ('application', 'tickwork'),
    ('last_id', 0),
    ('last_token', 0);
"""
)

# Retention (Store.prune): the oldest ended rows and history rows first, as range scans.
# Both keys grow with time, so every insert lands at the right edge of its index (cheap).
_V2_RETENTION: Final = states(
    """
CREATE INDEX ix_instances_ended_at ON instances (updated) WHERE state >= {SUCCEEDED};
CREATE INDEX ix_history_finished ON history (finished);
"""
)

# Recurring schedules (tickwork.schedules.schedule): one row each; occurrences are instances. The
# partial index finds a schedule's unfinished occurrences (pause, remove, catch-up) without
# walking its history; only schedule rows are in it.
_V3_SCHEDULES: Final = states(
    """
CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    task TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    cron_expr TEXT,
    cron_tz TEXT,
    every_us INTEGER,
    interval_start_us INTEGER,
    params BLOB NOT NULL,
    start_at_us INTEGER,
    end_at_us INTEGER,
    jitter_us INTEGER NOT NULL,
    misfire TEXT NOT NULL,
    grace_us INTEGER NOT NULL,
    catchup_limit INTEGER NOT NULL,
    overlap TEXT NOT NULL,
    paused INTEGER NOT NULL,
    last_fire_us INTEGER,
    ended INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ix_instances_schedule_live ON instances (schedule_id, fire_at)
    WHERE state IN ({LIVE}) AND schedule_id IS NOT NULL;
"""
)

# Overlap policies across nodes (tickwork.actors.overlap): each schedule's admitted
# occurrence, the instance a node last started under a policy other than "allow", and the
# claim token it held then (see tickwork.schedules.plan.Slot). A single-node store needs
# it only for the store contract; it is the same as PostgreSQL's.
_V4_ADMITTED: Final = """
ALTER TABLE schedules ADD COLUMN active_id INTEGER;
ALTER TABLE schedules ADD COLUMN active_token INTEGER;
"""

# The last attempt of an ended instance lives in its own row (the node is ``owner``, the
# error ``error``), not in ``history``: a run that ends its instance then costs no history
# row and no index entries of its own (3 of the ~12 B-tree writes of an instance's life).
# ``history`` keeps the attempts that were retried. Rows ended before this version have
# their last attempt in ``history`` and NULL here; ``Reads.history`` reads both.
_V5_LAST_ATTEMPT: Final = """
ALTER TABLE instances ADD COLUMN last_started INTEGER;
ALTER TABLE instances ADD COLUMN last_finished INTEGER;
ALTER TABLE instances ADD COLUMN last_error_type TEXT;
ALTER TABLE instances ADD COLUMN last_result TEXT;
"""

# A run's output (tickwork.RunOutput, as JSON text): stdout, stderr and the exit code, for
# the attempts in ``history`` and for the last attempt kept in the instance's row.
_V6_OUTPUT: Final = """
ALTER TABLE history ADD COLUMN output TEXT;
ALTER TABLE instances ADD COLUMN last_output TEXT;
"""

# The nodes that ran on the file (tickwork.stores.sqlite._nodes): who holds the node lock
# (for StoreLocked's message), and the tasks each node runs (the CLI refuses a task no
# node knows). ``tasks`` is a JSON list, NULL until the node recorded it.
_V8_NODES: Final = """
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY NOT NULL,
    started INTEGER NOT NULL,
    stopped INTEGER,
    host TEXT,
    pid INTEGER,
    version TEXT,
    tasks TEXT,
    max_params_bytes INTEGER
) WITHOUT ROWID;
"""

# Listing one task's instances (``list(task=...)``, the API's and UI's task filter):
# without it a rare task's page walks every id. ``task`` never changes, so the index is
# written once per row (insert and delete), not on each state change.
_V9_TASK: Final = """
CREATE INDEX ix_instances_task ON instances (task);
"""

# A schedule's own failure notifications (tickwork.Notify as JSON text, NULL: none; #14).
_V10_SCHEDULE_NOTIFY: Final = """
ALTER TABLE schedules ADD COLUMN notify TEXT;
"""

# The start of the run in progress (NULL unless RUNNING), and whether a RUNNING row is
# an at-least-once run (1: given back, it runs again) or an at-most-once one (0: given
# back, it fails as interrupted). Rows RUNNING before this version are at-most-once.
_V11_RUNNING: Final = """
ALTER TABLE instances ADD COLUMN started_us INTEGER;
ALTER TABLE instances ADD COLUMN repeatable INTEGER NOT NULL DEFAULT 0;
"""

# A schedule's unfinished occurrences, with the index's condition written so SQLite pays
# nothing for it on the hot path. Every write that changes a row's state tests a partial
# index's condition on the old row and on the new one; ``state IN (0, 1, 2)`` (three values)
# is coded as a temporary B-tree built for each test, five per instance in its life (an
# insert, a claim, a finish): about 39,000 of the store's 217,000 CPU instructions per
# instance (benchmarks/PROFILE_NOTES.md, session 10). The live states are the ones below
# SUCCEEDED (tickwork.state.TERMINAL starts there), and a plain row (no schedule) fails
# the first term and skips the second. Readers name both terms as written here, so the
# planner can prove the index applies (see _schedules._LIVE).
_V12_SCHEDULE_OPEN: Final = states(
    """
DROP INDEX ix_instances_schedule_live;
CREATE INDEX ix_instances_schedule_live ON instances (schedule_id, fire_at)
    WHERE schedule_id IS NOT NULL AND state < {SUCCEEDED};
"""
)

#: Migration i (0-based) takes schema version i to i + 1. Append, never edit.
MIGRATIONS: Final[tuple[str, ...]] = (
    _V1,
    _V2_RETENTION,
    _V3_SCHEDULES,
    _V4_ADMITTED,
    _V5_LAST_ATTEMPT,
    _V6_OUTPUT,
    V7_TOKENS,  # the HTTP API's tokens, hashed (tickwork.stores.sqlite._tokens)
    _V8_NODES,
    _V9_TASK,
    _V10_SCHEDULE_NOTIFY,
    _V11_RUNNING,
    _V12_SCHEDULE_OPEN,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _version(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of the database, 0 for an empty one.

    Raises:
        NotATickworkDatabase: the file is not SQLite, or another application's database.
    """
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = _tables(conn)
    except sqlite3.DatabaseError as exc:
        raise NotATickworkDatabase(
            f"{path} is not a SQLite database ({exc}); tickwork will not touch it. "
            "Point --db (or SQLiteStore) at a tickwork database or a path that does not exist."
        ) from exc
    if app_id == APPLICATION_ID:
        return user_version
    if app_id == 0 and not tables:
        return 0
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    what = f"application_id {app_id:#x}" if app_id else f"tables: {shown}"
    raise NotATickworkDatabase(
        f"{path} is a SQLite database of another application ({what}); tickwork will not "
        "write to it. Point --db (or SQLiteStore) at a tickwork database or a new file."
    )


def _check_version(conn: sqlite3.Connection, path: str) -> int:
    version = _version(conn, path)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this tickwork knows "
            f"({SCHEMA_VERSION}): it was written by a newer tickwork. Upgrade tickwork to "
            "use it (downgrading a database is not supported)."
        )
    return version


def check_readable(conn: sqlite3.Connection, path: str) -> None:
    """Check a database opened read-only: tickwork's, at this tickwork's schema version.

    Raises:
        NotATickworkDatabase: not a tickwork database (an empty one included).
        SchemaTooNew: written by a newer tickwork.
        StoreError: written by an older tickwork (reading it would need a migration).
    """
    version = _check_version(conn, path)
    if version == 0:
        raise NotATickworkDatabase(
            f"{path} is an empty SQLite database, not a tickwork database; reading "
            "commands do not create one (`tickwork run` or `tickwork add` does)"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, older than this tickwork's "
            f"({SCHEMA_VERSION}); reading commands do not change the file: start a node "
            "on it (`tickwork run`) once to upgrade it"
        )


def prepare(conn: sqlite3.Connection, path: str) -> None:
    """Check the database and create or migrate its schema (autocommit connection).

    Raises:
        NotATickworkDatabase: not a tickwork database.
        SchemaTooNew: written by a newer tickwork.
    """
    if _check_version(conn, path) == SCHEMA_VERSION:
        return  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_version(conn, path)  # again, now that no one else can migrate
        for i in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[i]):
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(
            "INSERT OR REPLACE INTO tickwork_meta (key, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements, so it runs inside our own transaction.

    (``executescript`` would commit first.) Our DDL has no ';' inside literals.
    """
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
