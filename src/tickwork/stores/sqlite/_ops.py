"""The SQL of the claim life cycle (claim, start, give back, renew, abort) and of
retention, run synchronously on the store's own thread. :class:`Ops` is every operation of
the store: inserts are :mod:`._inserts`', finishes :mod:`._finish`', reads
:mod:`._reads`', the write transaction :mod:`._write`'.

Each public method of :class:`Ops` is one transaction (``BEGIN IMMEDIATE`` for writes),
so a batch costs one commit whatever its size. Per-row work goes through ``executemany``
on statements that sqlite3's statement cache keeps prepared; id lists travel as one JSON
parameter (``json_each``) so the SQL text, and so the prepared statement, never varies.

Fenced writes first read the rows they may touch (one statement), decide in Python with
the shared rules of :mod:`tickwork.stores._rules`, then write only what passed; the
IMMEDIATE transaction makes read and write one atomic step.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from tickwork.model import AbortResult, Instance
from tickwork.state import HELD, Event, State, apply
from tickwork.stores._rules import release_event
from tickwork.stores._sql import states
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.sqlite import _schedules as _sqlite_schedules
from tickwork.stores.sqlite._finish import FinishOps
from tickwork.stores.sqlite._inserts import InsertOps
from tickwork.stores.sqlite._reads import COLS, STATES, ClaimedRows, to_instance
from tickwork.stores.sqlite._tokens import TokenOps
from tickwork.stores.sqlite._write import Deltas, ids_json

if TYPE_CHECKING:
    from collections.abc import Sequence

_CLAIM_PENDING: Final = states(
    "UPDATE instances SET state = {CLAIM}, owner = ?, claim_token = ?, lease_until = ?, "
    "updated = ? WHERE id IN (SELECT id FROM instances INDEXED BY ix_instances_pending "
    "WHERE state = {PENDING} AND run_at <= ? "
    f"ORDER BY run_at, id LIMIT ?) RETURNING {COLS}"
)
#: Claims PENDING rows and takes over CLAIMED ones and at-least-once RUNNING ones (both
#: events write CLAIMED; a run taken over is not running any more: no start time).
_CLAIM_IDS: Final = states(
    "UPDATE instances SET state = {TAKE_OVER}, owner = ?, claim_token = ?, lease_until = ?, "
    "started_us = NULL, repeatable = 0, "
    f"updated = ? WHERE id IN (SELECT value FROM json_each(?)) RETURNING {COLS}"
)
_CLAIM_ABORTED: Final = states(
    "SELECT id, task FROM instances INDEXED BY ix_instances_abort "
    "WHERE abort_requested = 1 AND state = {PENDING}"
)
_CLAIM_ABORT: Final = states(
    "UPDATE instances SET state = {CLAIM_ABORT@PENDING}, abort_requested = 0, updated = ? "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
_PENDING_DUE: Final = states(
    "SELECT run_at, id FROM instances INDEXED BY ix_instances_pending "
    "WHERE state = {PENDING} AND run_at <= ? ORDER BY run_at, id LIMIT ?"
)
_OLDEST_LEASE: Final = states(
    "SELECT min(lease_until) FROM instances INDEXED BY ix_instances_held WHERE state IN ({HELD})"
)
_LAPSED: Final = states(
    "SELECT id, state, abort_requested, task, repeatable, run_at FROM instances "
    "INDEXED BY ix_instances_held WHERE state IN ({HELD}) AND lease_until < ? "
    "AND owner IS NOT ?"
)
#: The rows a start may make RUNNING (the fence is checked in Python: see Ops.start).
_START: Final = states(
    "UPDATE instances SET state = {START}, started_us = ?, updated = ? WHERE id = ?"
)
_HELD_BY: Final = states(
    "SELECT id, state, abort_requested, task, repeatable FROM instances "
    "WHERE owner = ? AND state IN ({HELD})"
)
_HELD_IDS: Final = states(
    "SELECT id, state, abort_requested, task, repeatable FROM instances "
    "WHERE id IN (SELECT value FROM json_each(?)) AND owner = ? AND state IN ({HELD})"
)
_RENEW: Final = states("UPDATE instances SET lease_until = ? WHERE owner = ? AND state IN ({HELD})")
_ALL_HELD: Final = states(
    "SELECT id, state, abort_requested, task, repeatable FROM instances WHERE state IN ({HELD})"
)
_ABORT: Final = states(
    "UPDATE instances SET state = {ABORT}, abort_requested = 0, updated = ? WHERE id = ?"
)
_PRUNABLE: Final = states(
    "SELECT id, task, state, last_started IS NOT NULL FROM instances "
    "INDEXED BY ix_instances_ended_at "
    "WHERE state >= {SUCCEEDED} AND updated < ? ORDER BY updated LIMIT ?"
)
_RELEASE: Final = states(
    "UPDATE instances SET state = ?1, error = coalesce(?2, error), attempts = attempts + ?3, "
    "owner = CASE WHEN ?1 = {PENDING} THEN NULL ELSE owner END, claim_token = NULL, "
    "lease_until = NULL, abort_requested = 0, started_us = NULL, repeatable = 0, updated = ?4 "
    "WHERE id = ?5"
)


class Ops(InsertOps, FinishOps, TokenOps):
    """The store operations on one connection (autocommit mode, used from one thread)."""

    def claim(
        self, owner: str, due_before: int, limit: int, now: int, lease: int
    ) -> list[Instance] | ClaimedRows:
        """Claim due rows: as Instances, or, when none is a schedule occurrence, as the
        rows themselves (the caller makes the Instances: see ``ClaimedRows``)."""
        if limit <= 0:
            return []
        with self._write() as deltas:
            aborted = self._c.execute(_CLAIM_ABORTED).fetchall()
            if aborted:
                self._c.execute(_CLAIM_ABORT, (now, ids_json(i for i, _ in aborted)))
                ended = apply(State.PENDING, Event.CLAIM_ABORT)
                for _, task in aborted:
                    deltas[(task, State.PENDING)] -= 1
                    deltas[(task, ended)] += 1
            takeable, running = self._expired(owner, due_before, limit, now, deltas)
            token = self._next("last_token", 1)
            head = (owner, token, now + lease, now)
            if not takeable:
                got = self._c.execute(_CLAIM_PENDING, (*head, due_before, limit)).fetchall()
                taken: set[int] = set()
            else:
                pending = self._c.execute(_PENDING_DUE, (due_before, limit)).fetchall()
                chosen = [i for _, i in itertools.islice(heapq.merge(pending, takeable), limit)]
                taken = {i for _, i in takeable}
                got = self._c.execute(_CLAIM_IDS, (*head, ids_json(chosen))).fetchall()
            for task, n in Counter(r[1] for r in got if r[0] not in taken).items():
                deltas[(task, State.PENDING)] -= n
                deltas[(task, apply(State.PENDING, Event.CLAIM))] += n
            for r in got:  # an at-least-once run taken over: it runs again
                if r[0] in running:
                    deltas[(r[1], State.RUNNING)] -= 1
                    deltas[(r[1], apply(State.RUNNING, Event.TAKE_OVER))] += 1
            if all(r[10] is None for r in got):  # no schedule occurrence among them
                return ClaimedRows(got)
            out = sorted(map(to_instance, got), key=lambda i: (i.run_at_us, i.id))
            # A claimed schedule occurrence: its next one, in this transaction.
            return _sqlite_schedules.after_claim(self, deltas, out, now)

    def _expired(
        self, owner: str, due_before: int, limit: int, now: int, deltas: Deltas
    ) -> tuple[list[Any], set[int]]:
        """Deal with held rows whose lease expired before ``now``; returns the ones that
        may be taken over (CLAIMED, or RUNNING at-least-once), as sorted ``(run_at, id)``,
        at most ``limit``, and the ids of the RUNNING ones among them."""
        (oldest,) = self._c.execute(_OLDEST_LEASE).fetchone()
        if oldest is None or oldest >= now:
            return [], set()
        # Never the claimer's own rows: it still holds them (see MemoryStore.claim).
        rows = self._c.execute(_LAPSED, (now, owner)).fetchall()
        ended = [r for r in rows if (r[1] == State.RUNNING and not r[4]) or r[2]]
        self._release_rows(ended, now, deltas, Event.LAPSE)
        takeable = sorted((r[5], r[0]) for r in rows if r not in ended and r[5] <= due_before)
        running = {r[0] for r in rows if r[1] == State.RUNNING and r not in ended}
        return takeable[:limit], running

    def _release_rows(self, rows: Sequence[Any], now: int, deltas: Deltas, kind: Event) -> None:
        """Give back held rows given as ``(id, state, abort_requested, task, repeatable,
        ...)``; ``kind`` is GIVE_BACK, EVICT or LAPSE (see ``_rules.release_event``)."""
        params = []
        for iid, state, abort, task, repeatable, *_ in rows:
            target = apply(STATES[state], release_event(kind, bool(abort), bool(repeatable)))
            ran = int(state == State.RUNNING and not repeatable)  # an at-most-once attempt
            error = INTERRUPTED if target is State.FAILED else None
            params.append((int(target), error, ran, now, iid))
            deltas[(task, state)] -= 1
            deltas[(task, int(target))] += 1
        self._c.executemany(_RELEASE, params)

    def start(self, owner: str, items: Sequence[tuple[int, int]], now: int) -> list[bool]:
        if not items:
            return []
        with self._write() as deltas:
            view = self._view(i for i, _ in items)
            out = []
            started = []
            for iid, token in items:
                v = view.get(iid)
                ok = v is not None and v[0] == owner and v[1] == token and v[2] in HELD
                if ok and v is not None and v[2] == State.CLAIMED:
                    v[2] = apply(State.CLAIMED, Event.START)
                    started.append((now, now, iid))
                    deltas[(v[3], State.CLAIMED)] -= 1
                    deltas[(v[3], v[2])] += 1
                out.append(ok)
            self._c.executemany(_START, started)
        return out

    def release(self, owner: str, now: int, ids: Sequence[int] | None) -> int:
        with self._write() as deltas:
            if ids is None:
                rows = self._c.execute(_HELD_BY, (owner,))
            else:
                rows = self._c.execute(_HELD_IDS, (ids_json(ids), owner))
            held = rows.fetchall()
            self._release_rows(held, now, deltas, Event.GIVE_BACK if ids is None else Event.EVICT)
        return len(held)

    def renew(self, owner: str, now: int, lease: int) -> int:
        with self._write():
            cur = self._c.execute(_RENEW, (now + lease, owner))
        return cur.rowcount

    def recover(self, now: int) -> int:
        with self._write() as deltas:
            held = self._c.execute(_ALL_HELD).fetchall()
            self._release_rows(held, now, deltas, Event.GIVE_BACK)
        return len(held)

    def request_abort(self, instance_id: int, now: int) -> AbortResult:
        with self._write() as deltas:
            found = self._c.execute(
                "SELECT state, owner, task, schedule_id, fire_at FROM instances WHERE id = ?",
                (instance_id,),
            ).fetchone()
            if found is None:
                return AbortResult(found=False)
            state, owner, task = STATES[found[0]], found[1], found[2]
            if state is State.PENDING:
                self._c.execute(_ABORT, (now, instance_id))
                deltas[(task, State.PENDING)] -= 1
                deltas[(task, apply(state, Event.ABORT))] += 1
                if found[3] is not None and found[4] is not None:  # its schedule goes on
                    _sqlite_schedules.after_abort(self, deltas, found[3], found[4], now)
                return AbortResult(found=True, state=apply(state, Event.ABORT), previous=state)
            if state in HELD:
                self._c.execute(
                    "UPDATE instances SET abort_requested = 1 WHERE id = ?", (instance_id,)
                )
                return AbortResult(
                    found=True, state=state, owner=owner, requested=True, previous=state
                )
            return AbortResult(found=True, state=state, owner=owner, previous=state)

    def prune(self, before: int, limit: int) -> int:
        if limit <= 0:
            return 0
        with self._write() as deltas:
            old = self._c.execute(_PRUNABLE, (before, limit)).fetchall()
            if old:
                self._c.execute(
                    "DELETE FROM instances WHERE id IN (SELECT value FROM json_each(?))",
                    (ids_json(i for i, _, _, _ in old),),
                )
                for _, task, state, _ in old:
                    deltas[(task, state)] -= 1
            history = self._c.execute(
                "DELETE FROM history WHERE seq IN (SELECT seq FROM history "
                "INDEXED BY ix_history_finished WHERE finished < ? ORDER BY finished LIMIT ?)",
                (before, limit),
            ).rowcount
        # an instance's last attempt went with its row (see _sqlite_schema V5)
        return len(old) + sum(int(r[3]) for r in old) + history
