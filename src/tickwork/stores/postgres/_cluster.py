"""The PostgreSQL store's cluster statements: per-claim leases, heartbeats, nodes, notices.

Leases live on claims, not rows
    Schema version 3 moved the lease from every instance row to a ``claims`` table, one
    row per claim (per ``claim`` call): ``(token, owner, lease_until)``. Instance rows
    keep ``owner`` and ``claim_token``, and fencing still compares both on the row. A
    heartbeat therefore renews a node's leases with one small UPDATE of its few claim
    rows, whatever the number of instances they cover: renewing 50,000 held rows one by
    one took ~0.9 s per heartbeat on the reference machine (and rewrote 50,000 rows and
    their index entries each time), renewing their claims takes about a millisecond.

    A held row is *lapsed* when its claim's lease is over. Claims with no held row left
    are deleted by the next heartbeat (of their owner, or of any node once they lapsed).

Notices
    Every change another node must hear about is a NOTIFY on ``tickwork_changes`` whose payload
    is ``"<schema> <kind> <argument>"``: ``p <due_us>`` new PENDING work due at
    ``due_us`` (inserted, retried, given back), ``a <owner>`` an abort request for a row
    ``owner`` holds, ``s`` a recurring schedule changed. A payload of just the schema
    name (older versions) reads as "anything may have changed". The listener keeps only
    its own schema's, and never its own connection's.

Templates name the schema as ``{s}`` (see ``_pg_migrations.render``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString

import attrs

from tickwork._time import td_us
from tickwork.state import Event
from tickwork.stores._rules import release_event
from tickwork.stores.cluster import Heartbeat, NodeInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import timedelta

    from tickwork.stores.postgres._rows import Session

#: Notice kinds (the second word of a payload).
PENDING_WORK: Final = "p"
ABORT: Final = "a"
SCHEDULES: Final = "s"

# Schema version 3: the lease moves from the instance rows to the claims table. Held rows
# of an older schema keep their leases: each claim token becomes one claim row.
V3_CLAIMS: Final[tuple[str, ...]] = (
    """CREATE TABLE {s}.claims (
        token bigint PRIMARY KEY,
        owner text NOT NULL,
        lease_until timestamptz NOT NULL
    ) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 500)""",
    # the heartbeat: one owner's claims
    "CREATE INDEX claims_owner ON {s}.claims (owner)",
    # takeover: claims whose lease lapsed (normally none)
    "CREATE INDEX claims_lease ON {s}.claims (lease_until)",
    """INSERT INTO {s}.claims (token, owner, lease_until)
        SELECT claim_token, min(owner), coalesce(max(lease_until), now())
        FROM {s}.instances
        WHERE state IN ({HELD}) AND claim_token IS NOT NULL AND owner IS NOT NULL
        GROUP BY claim_token""",
    "DROP INDEX {s}.instances_held",
    "ALTER TABLE {s}.instances DROP COLUMN lease_until",
    # the rows of one claim: heartbeat's "any rows left?", takeover, release
    "CREATE INDEX instances_claim ON {s}.instances (claim_token) WHERE state IN ({HELD})",
    # abort_requests: held rows with an abort requested (normally none)
    """CREATE INDEX instances_abort ON {s}.instances (owner)
        WHERE abort_requested AND state IN ({HELD})""",
    """ALTER TABLE {s}.nodes ADD COLUMN lease_us bigint, ADD COLUMN held integer,
        ADD COLUMN running integer""",
)

#: An instance row's lease: its claim's (``{p}`` is the row's alias prefix).
LEASE_OF_ROW: Final = (
    "(SELECT (extract(epoch FROM c.lease_until) * 1000000)::bigint FROM {s}.claims c "
    "WHERE c.token = {p}claim_token AND {p}state IN ({HELD}))"
)
#: The lease a claim statement grants (the claim row is not visible to its own RETURNING).
LEASE_GRANTED: Final = "(extract(epoch FROM lease_.until) * 1000000)::bigint"


def released_set(kind: Event) -> str:
    """The SET list of a give-back (``kind``: LAPSE, GIVE_BACK or EVICT), generated from
    the table through _rules.release_event, the one place it is written for the cluster
    store: an abort requested wins; a durable RUNNING at-most-once run cannot be repeated
    and fails as interrupted (its attempt counted); CLAIMED goes back to PENDING, and so
    does a ``repeatable`` RUNNING row (an at-least-once run: RERUN) given back by its
    owner (a lapsed one is taken over by the claim instead: never released here)."""
    aborted, k = release_event(kind, abort_requested=True).name, kind.name
    rerun = ""
    if kind is not Event.LAPSE:
        again = release_event(kind, abort_requested=False, repeatable=True).name
        rerun = f"WHEN state = {{RUNNING}} AND repeatable THEN {{{again}@RUNNING}}"
    once = "state = {RUNNING} AND NOT repeatable"
    return f"""
        state = CASE WHEN abort_requested THEN {{{aborted}}} {rerun}
                WHEN state = {{RUNNING}} THEN {{{k}@RUNNING}} ELSE {{{k}@CLAIMED}} END,
        error = CASE WHEN NOT abort_requested AND {once} THEN %(interrupted)s
                ELSE error END,
        attempts = attempts + CASE WHEN {once} THEN 1 ELSE 0 END,
        owner = CASE WHEN abort_requested OR ({once}) THEN owner ELSE NULL END,
        claim_token = NULL,
        started_us = NULL,
        repeatable = false,
        updated_us = %(now)s"""


# claim, in one statement (the tentative ids are locked with SKIP LOCKED, so concurrent
# claimers on other nodes pass each other instead of queueing):
# * expired: other owners' claims whose lease is over (normally none; never the
#   claimer's own: it still holds those rows in memory, and taking them again would run
#   them twice; a previous run of the node is recover's job).
# * released: their rows that cannot or need not be taken now are released as if their
#   owner had given them back (_rules.release_event): an abort requested wins, a
#   durable RUNNING at-most-once run fails as interrupted, and a CLAIMED row due after
#   the horizon goes back to PENDING for whoever's horizon reaches it. A RUNNING
#   at-least-once row (``repeatable``) is lapsed like a CLAIMED one: taken over, it runs
#   again.
# * pend / lapsed: the two kinds of claimable rows, each through its own partial index
#   (one WHERE with an OR of both would defeat them): pend is an ordered range scan of
#   instances_due that stops after ``limit`` rows, lapsed a lookup of instances_claim.
#   pick merges them in due order.
# * lease_ / grant_: the claim row, only when something was picked. Its lease is the
#   owner's live claims' (all renewed together by the last heartbeat), or now + lease
#   when it has none: all of a node's claims lapse together, so a dead node's work is
#   taken over within one lease of its last heartbeat, not of its last claim.
CLAIM: Final = (
    """
    WITH token AS (SELECT nextval('{s}.claim_tokens') AS t),
    expired AS MATERIALIZED (
        SELECT token FROM {s}.claims
        WHERE lease_until < now() AND owner <> %(owner)s
    ),
    released AS (
        UPDATE {s}.instances SET"""
    + released_set(Event.LAPSE)
    + """
        WHERE id IN (
            SELECT id FROM {s}.instances
            WHERE claim_token IN (SELECT token FROM expired) AND state IN ({HELD})
              AND ((state = {RUNNING} AND NOT repeatable) OR abort_requested
                   OR (state = {CLAIMED} AND run_at_us > %(due)s))
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
    ),
    pend AS (
        SELECT id, run_at_us FROM {s}.instances
        WHERE state = {PENDING} AND run_at_us <= %(due)s
        ORDER BY run_at_us, id LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ),
    lapsed AS (
        SELECT id, run_at_us FROM {s}.instances
        WHERE claim_token IN (SELECT token FROM expired) AND state IN ({HELD})
          AND (state = {CLAIMED} OR repeatable) AND NOT abort_requested AND run_at_us <= %(due)s
        ORDER BY run_at_us, id LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ),
    pick AS (
        SELECT id FROM (SELECT * FROM pend UNION ALL SELECT * FROM lapsed) AS u
        ORDER BY run_at_us, id LIMIT %(limit)s
    ),
    lease_ AS (
        SELECT coalesce(
            (SELECT max(lease_until) FROM {s}.claims
             WHERE owner = %(owner)s AND lease_until > now()),
            now() + %(lease)s
        ) AS until
    ),
    grant_ AS (
        INSERT INTO {s}.claims (token, owner, lease_until)
        SELECT t, %(owner)s, until FROM token, lease_ WHERE EXISTS (SELECT FROM pick)
    )
    UPDATE {s}.instances AS i SET
        state = CASE WHEN i.abort_requested THEN {CLAIM_ABORT} ELSE {CLAIM} END,
        owner = CASE WHEN i.abort_requested THEN i.owner ELSE %(owner)s END,
        claim_token = CASE WHEN i.abort_requested THEN NULL ELSE token.t END,
        started_us = NULL,
        repeatable = false,
        updated_us = %(now)s
    FROM pick, token, lease_
    WHERE i.id = pick.id
    RETURNING """
)


def release(kind: Event) -> str:
    """release: everything ``owner`` holds (its claims' rows) for GIVE_BACK; the rows of
    ``%(ids)s`` among them for EVICT. Returns the due time of each row made PENDING."""
    ids = " AND id = ANY(%(ids)s::bigint[])" if kind is Event.EVICT else ""
    return (
        "UPDATE {s}.instances SET"
        + released_set(kind)
        + """
    WHERE claim_token IN (SELECT token FROM {s}.claims WHERE owner = %(owner)s)
      AND state IN ({HELD})"""
        + ids
        + " RETURNING CASE WHEN state = {PENDING} THEN run_at_us END"
    )


#: After a release of everything: the owner's claims have no rows left.
FORGET_EMPTY_CLAIMS: Final = """
    DELETE FROM {s}.claims c WHERE c.owner = %(owner)s AND NOT EXISTS (
        SELECT FROM {s}.instances i WHERE i.claim_token = c.token AND i.state IN ({HELD}))
"""

# Store.renew: every claim of the owner, lapsed or not (a lapsed one nobody took over is
# still the owner's), and the heartbeat; returns the rows held.
RENEW: Final = """
    WITH heartbeat AS (
        UPDATE {s}.nodes SET last_heartbeat = now() WHERE node_id = %(owner)s
    ),
    renewed AS (
        UPDATE {s}.claims SET lease_until = now() + %(lease)s WHERE owner = %(owner)s
        RETURNING token
    )
    SELECT count(*) FROM {s}.instances
    WHERE claim_token IN (SELECT token FROM renewed) AND state IN ({HELD})
"""

# The cluster heartbeat, three statements in one transaction:
# 1. forget claims with no held rows: the owner's own, and anyone's that lapsed;
# 2. renew the owner's claims whose lease has not lapsed (a lapsed one is never revived:
#    another node may be taking it over at this moment);
# 3. record the beat, count the live nodes, and say when the first claim of another
#    node lapses. Nodes silent or stopped for a week are forgotten.
HEARTBEAT_FORGET: Final = """
    DELETE FROM {s}.claims c
    WHERE (c.owner = %(owner)s OR c.lease_until < now()) AND NOT EXISTS (
        SELECT FROM {s}.instances i WHERE i.claim_token = c.token AND i.state IN ({HELD}))
"""
HEARTBEAT_RENEW: Final = """
    UPDATE {s}.claims SET lease_until = now() + %(lease)s
    WHERE owner = %(owner)s AND lease_until >= now()
    RETURNING token
"""
HEARTBEAT_NODES: Final = """
    WITH beat AS (
        UPDATE {s}.nodes SET last_heartbeat = now(), lease_us = %(lease_us)s,
            held = %(held)s, running = %(running)s
        WHERE node_id = %(owner)s
    ),
    forgotten AS (
        DELETE FROM {s}.nodes
        WHERE coalesce(stopped, last_heartbeat) < now() - interval '7 days'
    ),
    live AS (
        SELECT node_id FROM {s}.nodes
        WHERE node_id = %(owner)s OR (stopped IS NULL AND last_heartbeat >= now() - %(lease)s)
    )
    SELECT
        (SELECT count(*) FROM live),
        (SELECT count(*) FROM live WHERE node_id < %(owner)s),
        (SELECT (extract(epoch FROM min(lease_until) - now()) * 1000000)::bigint
         FROM {s}.claims WHERE owner <> %(owner)s)
"""

# Schema version 8: what each node runs (the CLI refuses a task no live node knows).
V8_NODE_TASKS: Final[tuple[str, ...]] = (
    "ALTER TABLE {s}.nodes ADD COLUMN tasks text[], ADD COLUMN max_params_bytes bigint",
)

RECORD_NODE: Final = """
    UPDATE {s}.nodes SET tasks = %(tasks)s::text[], max_params_bytes = %(limit)s
    WHERE node_id = %(node)s
"""

# Rows held per owner are counted through the claims (instances has no owner index).
NODES: Final = """
    SELECT n.node_id,
        (extract(epoch FROM n.started) * 1000000)::bigint,
        (extract(epoch FROM n.last_heartbeat) * 1000000)::bigint,
        (extract(epoch FROM n.stopped) * 1000000)::bigint,
        n.stopped IS NULL
            AND n.last_heartbeat + coalesce(n.lease_us, 60000000) * interval '1 microsecond'
                >= now(),
        (SELECT count(*) FROM {s}.claims c JOIN {s}.instances i
            ON i.claim_token = c.token AND i.state IN ({HELD})
         WHERE c.owner = n.node_id),
        n.running, n.host, n.pid, n.version, n.tasks, n.max_params_bytes
    FROM {s}.nodes n
    ORDER BY n.started DESC, n.node_id
"""


@attrs.frozen
class Notice:
    """One parsed notice of this schema."""

    kind: str
    arg: str


def payload(schema: str, kind: str, arg: str = "") -> str:
    """The NOTIFY payload of one notice."""
    return f"{schema} {kind} {arg}" if arg else f"{schema} {kind}"


def parse(schema: str, text: str) -> Notice | None:
    """The notice in ``text`` if it is about ``schema``, else None.

    A bare schema name (an older node's notice) is an unknown change (kind ``""``).
    """
    name, _, rest = text.partition(" ")
    if name != schema:
        return None
    kind, _, arg = rest.partition(" ")
    return Notice(kind, arg)


class ClusterQueries:
    """The cluster statements for one schema, and the calls that run them.

    ``render`` substitutes the schema (``_pg_migrations.render`` bound to it).
    """

    def __init__(self, render: Callable[[str], LiteralString]) -> None:
        self.forget_empty_claims_sql = render(FORGET_EMPTY_CLAIMS)
        self.heartbeat_forget_sql = render(HEARTBEAT_FORGET)
        self.heartbeat_renew_sql = render(HEARTBEAT_RENEW)
        self.heartbeat_nodes_sql = render(HEARTBEAT_NODES)
        self.nodes_sql = render(NODES)
        self.record_node_sql = render(RECORD_NODE)

    def heartbeat(
        self,
        owner: str,
        lease: timedelta,
        held: int,
        running: int,
        session: Session,
    ) -> Heartbeat:
        params: dict[str, Any] = {
            "owner": owner,
            "lease": lease,
            "lease_us": td_us(lease),
            "held": held,
            "running": running,
        }
        session.execute(self.heartbeat_forget_sql, params)
        tokens = frozenset(r[0] for r in session.execute(self.heartbeat_renew_sql, params))
        row = session.execute(self.heartbeat_nodes_sql, params).fetchone()
        nodes, rank, lapse = (1, 0, None) if row is None else (int(row[0]), int(row[1]), row[2])
        return Heartbeat(tokens=tokens, nodes=nodes, rank=rank, next_lapse_us=lapse)

    def forget_empty_claims(self, owner: str, session: Session) -> None:
        session.execute(self.forget_empty_claims_sql, {"owner": owner})

    def record_node(
        self, node_id: str, tasks: Sequence[str], max_params_bytes: int, session: Session
    ) -> None:
        params = {"node": node_id, "tasks": sorted(set(tasks)), "limit": max_params_bytes}
        session.execute(self.record_node_sql, params)

    def nodes(self, session: Session) -> list[NodeInfo]:
        return [
            NodeInfo(
                node_id=r[0],
                started_us=r[1],
                last_heartbeat_us=r[2],
                stopped_us=r[3],
                alive=bool(r[4]),
                held=int(r[5]),
                running=r[6],
                host=r[7],
                pid=r[8],
                version=r[9],
                tasks=None if r[10] is None else tuple(r[10]),
                max_params_bytes=r[11],
            )
            for r in session.execute(self.nodes_sql)
        ]
