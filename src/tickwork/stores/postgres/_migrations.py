"""The PostgreSQL store's schema and its migrations.

Every tickwork schema holds a ``tickwork_meta`` table whose ``schema_version`` row names
the last migration applied. :func:`migrate` runs inside the caller's transaction under a
transaction-level advisory lock keyed by the schema name, so nodes that start together
queue up behind one migrator instead of racing, and a failed migration leaves nothing
behind (PostgreSQL's DDL is transactional).

Templates name the schema as ``{s}``; :func:`render` substitutes the quoted identifier.
Schema names are restricted to plain identifiers (:func:`check_schema_name`) so the same
name can also sit inside a string literal (``nextval('{s}.instance_ids')``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, LiteralString

from psycopg import sql

from tickwork.errors import InvalidArgument, NotATickworkDatabase, SchemaTooNew
from tickwork.stores._sql import states
from tickwork.stores.postgres import _cluster as _pg_cluster
from tickwork.stores.postgres import _schedules as _pg_schedules
from tickwork.stores.postgres import _tokens as _pg_tokens

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "LOCK_CLASS",
    "MIGRATIONS",
    "check_schema_name",
    "current_version",
    "migrate",
    "render",
]

#: First key of every tickwork advisory lock (``'tick'`` in ASCII); the second is
#: ``hashtext(schema)``, so two schemas in one database migrate independently.
LOCK_CLASS: Final = 0x7469636B

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# The instances table is the scheduler's hot path. Design notes:
# * ``state`` holds tickwork.State's integer values; every index that serves a hot query
#   is partial on the states it reads, so the claim's range scan touches PENDING rows only.
# * Times the scheduler decides (run_at, created, updated) are its clock's microseconds;
#   ``lease_until`` is the database clock's, because leases must be compared on one
#   clock across nodes whose own clocks disagree.
# * Every claim and finish rewrites its rows (a queue table): vacuum and analyze it more
#   often than the defaults (20% / 10% of the table changed) so dead versions of claimed
#   rows do not pile up in front of the claim's index scan and row estimates stay true.
# * Ids come from a named sequence so ``insert`` can draw them in input order before the
#   rows are written (it maps ON CONFLICT skips back to input positions that way).
_V1: Final[tuple[str, ...]] = (
    """CREATE TABLE {s}.tickwork_meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    "CREATE SEQUENCE {s}.instance_ids AS bigint",
    "CREATE SEQUENCE {s}.claim_tokens AS bigint",
    """CREATE TABLE {s}.instances (
        id bigint PRIMARY KEY DEFAULT nextval('{s}.instance_ids'),
        task text NOT NULL,
        run_at_us bigint NOT NULL,
        params bytea NOT NULL,
        state smallint NOT NULL CHECK (state BETWEEN {PENDING} AND {MISSED}),
        attempts integer NOT NULL DEFAULT 0,
        error text,
        owner text,
        claim_token bigint,
        lease_until timestamptz,
        abort_requested boolean NOT NULL DEFAULT false,
        schedule_id text,
        fire_at_us bigint,
        dedup_key text,
        max_attempts integer,
        timeout_us bigint,
        created_us bigint NOT NULL,
        updated_us bigint NOT NULL
    ) WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02)""",
    "ALTER SEQUENCE {s}.instance_ids OWNED BY {s}.instances.id",
    # claim's pending branch and next_pending_at: an ordered range scan of due rows.
    "CREATE INDEX instances_due ON {s}.instances (run_at_us, id) WHERE state = {PENDING}",
    # renew, release, abort_requests: everything one node holds.
    "CREATE INDEX instances_held ON {s}.instances (owner) WHERE state IN ({HELD})",
    # claim's takeover branch: held rows whose lease lapsed (normally none).
    "CREATE INDEX instances_lease ON {s}.instances (lease_until) WHERE state IN ({HELD})",
    """CREATE UNIQUE INDEX instances_dedup ON {s}.instances (dedup_key)
        WHERE dedup_key IS NOT NULL""",
    """CREATE UNIQUE INDEX instances_occurrence ON {s}.instances (schedule_id, fire_at_us)
        WHERE schedule_id IS NOT NULL""",
    # list/count newest first by state or by task.
    "CREATE INDEX instances_state ON {s}.instances (state, id)",
    "CREATE INDEX instances_task ON {s}.instances (task, id)",
    """CREATE TABLE {s}.history (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        instance_id bigint NOT NULL,
        attempt integer NOT NULL,
        node text,
        started_us bigint NOT NULL,
        finished_us bigint NOT NULL,
        state smallint NOT NULL,
        error_type text,
        error text,
        result text
    )""",
    # No foreign key to instances: finish writes history only for rows it just updated
    # (in the same statement), and the per-row check cost a sixth of a finish.
    "CREATE INDEX history_instance ON {s}.history (instance_id, id)",
    # One row per node that ever opened the schema; heartbeats ride on renew().
    """CREATE TABLE {s}.nodes (
        node_id text PRIMARY KEY,
        started timestamptz NOT NULL,
        last_heartbeat timestamptz NOT NULL,
        stopped timestamptz,
        host text,
        pid integer,
        version text
    )""",
)

# Retention (Store.prune): the oldest ended instances and history rows first, as range
# scans. Both keys grow with time, so inserts land at the right edge of the index.
_V2_RETENTION: Final[tuple[str, ...]] = (
    "CREATE INDEX instances_ended ON {s}.instances (updated_us) WHERE state >= {SUCCEEDED}",
    "CREATE INDEX history_finished ON {s}.history (finished_us)",
)

# A run's output (tickwork.RunOutput, as JSON text): stdout, stderr and the exit code.
_V6_OUTPUT: Final[tuple[str, ...]] = ("ALTER TABLE {s}.history ADD COLUMN output text",)

#: ``(version, statements)`` in order. Append only: a released migration never changes.
# The start of the run in progress (NULL unless RUNNING), and whether a RUNNING row is an
# at-least-once run (given back, it runs again) or an at-most-once one (given back, it
# fails as interrupted). Rows RUNNING before this version are at-most-once. A column with
# a constant default is added without rewriting the table.
_V10_RUNNING: Final[tuple[str, ...]] = (
    """ALTER TABLE {s}.instances ADD COLUMN started_us bigint,
        ADD COLUMN repeatable boolean NOT NULL DEFAULT false""",
)

# A schedule's instances, newest first (Store.list with a schedule_id: the web UI's
# schedules page asks it of every schedule). Without it the planner walks the primary key
# down and filters: at once for a busy schedule, but through every row for one with few or
# none (280 ms at 1,000,000 stored). Partial: only occurrences carry a schedule_id.
_V11_SCHEDULE_LIST: Final[tuple[str, ...]] = (
    """CREATE INDEX instances_schedule ON {s}.instances (schedule_id, id)
        WHERE schedule_id IS NOT NULL""",
)

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _V1),
    (2, _V2_RETENTION),
    (3, _pg_cluster.V3_CLAIMS),
    (4, _pg_schedules.V4_SCHEDULES),
    (5, _pg_schedules.V5_ADMITTED),
    (6, _V6_OUTPUT),
    (7, _pg_tokens.V7_TOKENS),
    (8, _pg_cluster.V8_NODE_TASKS),
    (9, _pg_schedules.V9_SCHEDULE_NOTIFY),
    (10, _V10_RUNNING),
    (11, _V11_SCHEDULE_LIST),
)


def current_version() -> int:
    """The schema version this tickwork writes: the last migration's."""
    return MIGRATIONS[-1][0]


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a plain identifier of at most 63 characters.

    Raises:
        InvalidArgument: anything else, including the reserved ``pg_`` prefix.
    """
    if (
        not isinstance(schema, str)
        or not _SCHEMA_NAME.fullmatch(schema)
        or schema.lower().startswith("pg_")
    ):
        raise InvalidArgument(
            f"schema must be a plain identifier (letters, digits, underscores; at most 63 "
            f"characters; not starting with pg_), got {schema!r}"
        )
    return schema


def render(template: str, schema: str) -> LiteralString:
    """``template`` with ``{s}`` replaced by the quoted schema name, and its states filled
    in (:func:`tickwork.stores._sql.states`).

    The result is built from constant fragments and a checked identifier only, which is
    why it may be typed as a literal query string.
    """
    quoted = sql.Identifier(schema).as_string()
    return states(template).replace("{s}", quoted)


def migrate(conn: psycopg.Connection[Any], schema: str) -> int:
    """Create or upgrade ``schema`` inside the caller's open transaction.

    Returns the version found before migrating (0 for a new schema).

    Raises:
        NotATickworkDatabase: the schema holds relations but no tickwork metadata.
        SchemaTooNew: a newer tickwork wrote the schema.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
    meta = render("{s}.tickwork_meta", schema)
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)",
        (meta, schema),
    ).fetchone()
    has_meta, has_schema = row if row is not None else (False, False)
    found = 0
    if has_meta:
        found = _read_version(conn, schema)
        if found > current_version():
            raise SchemaTooNew(
                f"schema {schema!r} is at tickwork schema version {found}, newer than this "
                f"tickwork's {current_version()}; upgrade tickwork on this node"
            )
    elif has_schema:
        foreign = [
            r[0]
            for r in conn.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s ORDER BY c.relname LIMIT 5""",
                (schema,),
            )
        ]
        if foreign:
            raise NotATickworkDatabase(
                f"schema {schema!r} already holds {', '.join(foreign)} but no tickwork_meta "
                "table; pass another schema= for tickwork"
            )
    else:
        conn.execute(render("CREATE SCHEMA {s}", schema))
    for version, statements in MIGRATIONS:
        if version > found:
            for statement in statements:
                conn.execute(render(statement, schema))
    if found < current_version():
        conn.execute(
            render(
                """INSERT INTO {s}.tickwork_meta (key, value) VALUES ('schema_version', %s)
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""",
                schema,
            ),
            (str(current_version()),),
        )
    return found


def _read_version(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(
        render("SELECT value FROM {s}.tickwork_meta WHERE key = 'schema_version'", schema)
    ).fetchone()
    if row is None or not (str(row[0]).isascii() and str(row[0]).isdigit()):
        # A tickwork_meta that does not name a version was not written by tickwork.
        raise NotATickworkDatabase(
            f"schema {schema!r} has a tickwork_meta table without a schema_version"
        )
    return int(row[0])
