"""The PostgreSQL store's claim life cycle: claim, start, finish, give back, renew, abort.

Each statement's state writes are placeholders generated from the state table
(:mod:`tickwork.stores._sql`), and its comment names the rule of
:mod:`tickwork.stores._rules` it mirrors (fencing, which finish may apply, where a
released row goes, which state history records).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString, cast

from tickwork.model import AbortResult, Finish, Instance
from tickwork.state import Event, State, apply, target
from tickwork.stores._rules import finish_event, finish_fence
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.postgres import _cluster as _pg_cluster
from tickwork.stores.postgres import _schedules as _pg_schedules
from tickwork.stores.postgres._rows import ICOLS, Session, int_array, to_instance

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import timedelta

    from tickwork.stores.postgres._schema import Queries

__all__ = ["CLAIM_SETTINGS", "ClaimQueries"]

_CLAIMED: Final = int(State.CLAIMED)

#: Run with the claim: with no sort allowed, the pending branch can only be the ordered
#: scan of ``instances_due`` that stops after ``limit`` rows. Left to its statistics (stale
#: after a bulk insert, or never gathered), the planner may instead fetch *every* due row
#: with a bitmap scan and sort them: O(backlog) per claim, on disk for a large backlog.
#: The penalty this puts on the few unavoidable small sorts inflates the plan's cost past
#: the JIT thresholds, and compiling it would take longer than the claim: no JIT (the
#: store also turns JIT off for its whole session).
CLAIM_SETTINGS: Final[tuple[LiteralString, ...]] = (
    "SET LOCAL enable_sort = off",
    "SET LOCAL jit = off",
)

# claim: see _pg_cluster.CLAIM. Its RETURNING gives the lease it granted (its own claim
# row is not visible to it).
_CLAIM: Final = _pg_cluster.CLAIM + ICOLS.replace(
    _pg_cluster.LEASE_OF_ROW.replace("{p}", "i."), _pg_cluster.LEASE_GRANTED
)

# Fenced: only rows held by owner with the pair's token. Starting a RUNNING row again
# is accepted and changes nothing. (An at-most-once start: not ``repeatable``.)
# ``state + 0`` (here and in _FINISH) hides the state test from the planner, which would
# otherwise scan *all* the rows this owner holds through instances_held (its predicate
# matches) instead of looking up the batch's ids by primary key: O(held) per batch. The
# test itself is unchanged, and a concurrent takeover is still re-checked on the row.
_START: Final = """
    UPDATE {s}.instances AS i SET
        state = {START},
        started_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.started_us END,
        updated_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.updated_us END
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS f(id, token)
    WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
      AND i.state + 0 IN ({HELD})
    RETURNING i.id
"""

# RUN, an at-least-once run started (a finish to RUNNING, see _rules): fenced as _START,
# the claim kept, ``repeatable`` (given back, it runs again). A RUNNING row stays as it is.
_FINISH_RUNNING: Final = """
    UPDATE {s}.instances AS i SET
        state = {RUN},
        started_us = CASE WHEN i.state = {CLAIMED} THEN f.started_us ELSE i.started_us END,
        repeatable = i.state = {CLAIMED} OR i.repeatable,
        updated_us = CASE WHEN i.state = {CLAIMED} THEN %(now)s ELSE i.updated_us END
    FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(started)s::bigint[])
        AS f(id, token, started_us)
    WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
      AND i.state + 0 IN ({HELD})
    RETURNING i.id
"""

#: The (current state, finish target) pairs the table allows a finish (_rules.finish_fence),
#: as a SQL list of rows: e.g. a RUNNING row cannot become MISSED (no (RUNNING, SKIP) row).
_FINISH_FENCE: Final = ", ".join(f"({c:d}, {t:d})" for c, t in sorted(finish_fence()))

#: The state a finish to each target writes, from the table (an abort requested turns a
#: retry into a CANCEL in the statement itself).
_FINISH_WRITES: Final = {
    requested: int(target(finish_event(requested, abort_requested=False)))
    for _, requested in finish_fence()
}

# Fenced as _START, and by the table (_FINISH_FENCE). A PENDING finish (retry or
# give-back) of a row with an abort requested is a CANCEL (_rules.finish_event), as
# release does; history records FAILED for it (_rules.history_state). One statement
# writes the outcomes and the history rows of the finishes that applied.
_FINISH: Final = (
    """
    WITH f AS (
        SELECT * FROM unnest(
            %(ids)s::bigint[], %(tokens)s::bigint[], %(states)s::smallint[],
            %(attempts)s::integer[], %(errors)s::text[], %(run_ats)s::bigint[],
            %(started)s::bigint[], %(finished)s::bigint[], %(error_types)s::text[],
            %(results)s::text[], %(outputs)s::text[]
        ) AS f(id, token, state, attempts, error, run_at_us, started_us, finished_us,
               error_type, result, output)
    ),
    u AS (
        UPDATE {s}.instances AS i SET
            state = CASE WHEN f.state = {PENDING} AND i.abort_requested THEN {CANCEL}
                    ELSE f.state END,
            attempts = f.attempts,
            error = f.error,
            run_at_us = CASE WHEN f.state = {PENDING} THEN coalesce(f.run_at_us, i.run_at_us)
                        ELSE i.run_at_us END,
            owner = CASE WHEN f.state = {PENDING} AND NOT i.abort_requested THEN NULL
                    ELSE i.owner END,
            claim_token = NULL,
            started_us = NULL,
            repeatable = false,
            updated_us = %(now)s
        FROM f
        WHERE i.id = f.id AND i.owner = %(owner)s AND i.claim_token = f.token
          AND i.state + 0 IN ({HELD})
          AND (i.state + 0, f.state) IN ("""
    + _FINISH_FENCE
    + """)
        RETURNING i.id
    ),
    h AS (
        INSERT INTO {s}.history (instance_id, attempt, node, started_us, finished_us, state,
                                 error_type, error, result, output)
        SELECT f.id, f.attempts, %(owner)s, f.started_us, coalesce(f.finished_us, %(now)s),
               CASE WHEN f.state = {PENDING} THEN {FAILED} ELSE f.state END, f.error_type, f.error,
               f.result,
               f.output
        FROM f JOIN u ON u.id = f.id
        WHERE f.started_us IS NOT NULL
    )
    SELECT id FROM u
"""
)

# release and renew: see _pg_cluster (leases live on claims).

_RENEW: Final = _pg_cluster.RENEW


class ClaimQueries:
    """The claim life cycle's statements and the calls that run them (a base of
    :class:`~tickwork.stores.postgres._schema.Queries`)."""

    cluster: _pg_cluster.ClusterQueries

    if TYPE_CHECKING:

        def announce(self, session: Session, kind: str, arg: str = "") -> None: ...

    def __init__(self, r: Callable[[str], LiteralString]) -> None:
        self.claim_sql = r(_CLAIM)
        self.start_sql = r(_START)
        self.finish_sql = r(_FINISH)
        self.finish_running_sql = r(_FINISH_RUNNING)
        self.release_sql = r(_pg_cluster.release(Event.GIVE_BACK))
        self.evict_sql = r(_pg_cluster.release(Event.EVICT))
        self.renew_sql = r(_RENEW)
        self.lock_one_sql = r(
            "SELECT state, owner, schedule_id, fire_at_us FROM {s}.instances "
            "WHERE id = %(id)s FOR UPDATE"
        )
        self.abort_pending_sql = r(
            "UPDATE {s}.instances SET state = {ABORT}, updated_us = %(now)s WHERE id = %(id)s"
        )
        self.abort_held_sql = r(
            "UPDATE {s}.instances SET abort_requested = true, updated_us = %(now)s "
            "WHERE id = %(id)s"
        )
        self.abort_requests_sql = r(
            "SELECT id FROM {s}.instances "
            "WHERE owner = %(owner)s AND state IN ({HELD}) AND abort_requested ORDER BY id"
        )

    def claim(  # noqa: PLR0917 - the protocol's arguments, then the session
        self,
        owner: str,
        due_before_us: int,
        limit: int,
        now_us: int,
        lease: timedelta,
        session: Session,
    ) -> list[Instance]:
        cur = session.execute(
            self.claim_sql,
            {
                "owner": owner,
                "due": due_before_us,
                "limit": limit,
                "now": now_us,
                "lease": lease,
                "interrupted": INTERRUPTED,
            },
        )
        # RETURNING has no order; rows an abort request made ABORTED are not handed out.
        claimed = [to_instance(row) for row in cur if row[4] == _CLAIMED]
        claimed.sort(key=lambda inst: (inst.run_at_us, inst.id))
        # A claimed schedule occurrence: its next one, in this transaction.
        return _pg_schedules.after_claim(cast("Queries", self), session, claimed, now_us)

    def start(
        self, owner: str, items: Sequence[tuple[int, int]], now_us: int, session: Session
    ) -> list[bool]:
        params = {
            "ids": int_array(iid for iid, _ in items),
            "tokens": int_array(token for _, token in items),
            "owner": owner,
            "now": now_us,
        }
        applied = {row[0] for row in session.execute(self.start_sql, params)}
        return [iid in applied for iid, _ in items]

    def finish(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        if any(f.state is State.RUNNING for f in finishes):
            return self._finish_with_starts(owner, finishes, now_us, session)
        return self._finish(owner, finishes, now_us, session)

    def _finish_with_starts(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        """Starts of at-least-once runs (finishes to RUNNING) first, then the outcomes:
        one transaction."""
        starts = [f for f in finishes if f.state is State.RUNNING]
        cur = session.execute(
            self.finish_running_sql,
            {
                "ids": int_array(f.id for f in starts),
                "tokens": int_array(f.claim_token for f in starts),
                "started": int_array(f.started_us for f in starts),
                "owner": owner,
                "now": now_us,
            },
        )
        started = {row[0] for row in cur}
        rest = [f for f in finishes if f.state is not State.RUNNING]
        ended = iter(self._finish(owner, rest, now_us, session) if rest else [])
        return [f.id in started if f.state is State.RUNNING else next(ended) for f in finishes]

    def _finish(
        self, owner: str, finishes: Sequence[Finish], now_us: int, session: Session
    ) -> list[bool]:
        # A row matches one update per statement, so only an id's first finish may apply.
        first: dict[int, int] = {}
        for n, f in enumerate(finishes):
            first.setdefault(f.id, n)
        batch = sorted((finishes[n] for n in first.values()), key=lambda f: f.id)
        cur = session.execute(
            self.finish_sql,
            {
                "ids": int_array(f.id for f in batch),
                "tokens": int_array(f.claim_token for f in batch),
                "states": int_array(_FINISH_WRITES[f.state] for f in batch),
                "attempts": int_array(f.attempts for f in batch),
                "errors": [f.error for f in batch],
                "run_ats": int_array(f.run_at_us for f in batch),
                "started": int_array(f.started_us for f in batch),
                "finished": int_array(f.finished_us for f in batch),
                "error_types": [f.error_type for f in batch],
                "results": [f.result for f in batch],
                "outputs": [f.output for f in batch],
                "owner": owner,
                "now": now_us,
            },
        )
        applied = {row[0] for row in cur}
        # A retry or a give-back is new work for any node's Puller.
        again = [
            f.run_at_us or now_us for f in batch if f.state is State.PENDING and f.id in applied
        ]
        if again:
            self.announce(session, _pg_cluster.PENDING_WORK, str(min(again)))
        return [f.id in applied and first[f.id] == n for n, f in enumerate(finishes)]

    def release(self, owner: str, now_us: int, ids: Sequence[int] | None, session: Session) -> int:
        params: dict[str, Any] = {"owner": owner, "now": now_us, "interrupted": INTERRUPTED}
        query = self.release_sql
        if ids is not None:
            query = self.evict_sql
            params["ids"] = list(ids)
        back = [row[0] for row in session.execute(query, params)]
        if ids is None:
            self.cluster.forget_empty_claims(owner, session)
        pending = [due for due in back if due is not None]
        if pending:  # rows given back are new work for the other nodes' Pullers
            self.announce(session, _pg_cluster.PENDING_WORK, str(min(pending)))
        return len(back)

    def renew(self, owner: str, lease: timedelta, session: Session) -> int:
        row = session.execute(self.renew_sql, {"owner": owner, "lease": lease}).fetchone()
        return 0 if row is None else int(row[0])

    def request_abort(self, instance_id: int, now_us: int, session: Session) -> AbortResult:
        row = session.execute(self.lock_one_sql, {"id": instance_id}).fetchone()
        if row is None:
            return AbortResult(found=False)
        state, owner = State(row[0]), row[1]
        params = {"id": instance_id, "now": now_us}
        if state is State.PENDING:
            session.execute(self.abort_pending_sql, params)
            if row[2] is not None and row[3] is not None:  # its schedule goes on
                _pg_schedules.after_abort(cast("Queries", self), session, row[2], row[3], now_us)
            self.announce(session, _pg_cluster.ABORT)
            return AbortResult(found=True, state=apply(state, Event.ABORT), previous=state)
        if state in (State.CLAIMED, State.RUNNING):
            session.execute(self.abort_held_sql, params)
            self.announce(session, _pg_cluster.ABORT, owner or "")
            return AbortResult(found=True, state=state, owner=owner, requested=True, previous=state)
        return AbortResult(found=True, state=state, owner=owner, previous=state)

    def abort_requests(self, owner: str, session: Session) -> list[int]:
        return [row[0] for row in session.execute(self.abort_requests_sql, {"owner": owner})]
