"""The read side of the SQLite store, and the mapping of a row to an Instance.

Reads are single statements (no explicit transaction). Each uses an index chosen on
purpose (``INDEXED BY`` where SQLite's planner, without statistics, could pick a worse
one); ``tests/test_sqlite_store.py`` checks every statement's plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from tickwork.model import LIST_PARAMS_BYTES, Attempt, Instance, InstanceFilter
from tickwork.state import TERMINAL, State
from tickwork.stores._rules import HELD
from tickwork.stores._sql import states

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

COLS: Final = (
    "id, task, run_at, params, state, attempts, error, owner, claim_token, lease_until, "
    "schedule_id, fire_at, dedup_key, max_attempts, timeout_us, created, updated"
)
#: COLS for a listing: params larger than LIST_PARAMS_BYTES are left out (``b""``, their
#: size last). CASE is lazy and ``length()`` of a blob reads no overflow page, so a big
#: params value is never loaded.
LIST_COLS: Final = (
    COLS.replace(
        "params",
        f"CASE WHEN length(params) <= {LIST_PARAMS_BYTES} THEN params ELSE x'' END",
    )
    + f", CASE WHEN length(params) > {LIST_PARAMS_BYTES} THEN length(params) END, started_us"
)
#: COLS and the start of the run in progress: what a read (not a claim) returns.
READ_COLS: Final = COLS + ", started_us"
#: The State of each stored integer (the index).
STATES: Final = tuple(sorted(State))
_MAX_ID: Final = 2**63 - 1
_ABORT_REQUESTS: Final = states(
    "SELECT id FROM instances INDEXED BY ix_instances_abort "
    "WHERE abort_requested = 1 AND owner = ? AND state IN ({HELD}) ORDER BY id"
)
_NEXT_PENDING: Final = states(
    "SELECT min(run_at) FROM instances INDEXED BY ix_instances_pending WHERE state = {PENDING}"
)
_HELD_COUNT: Final = states("SELECT coalesce(sum(n), 0) FROM counts WHERE state IN ({HELD})")
# The terms of the partial indexes, as their definitions in _schema.py spell them.
_ENDED: Final = states("state >= {SUCCEEDED}")
_HELD: Final = states("state IN ({HELD})")
_PENDING: Final = states("state = {PENDING}")
#: Up to this many PENDING rows, list(state=PENDING) sorts them rather than walking ids.
_SORT_PENDING_MAX: Final = 200_000
#: A schedule's list walks at most this many of the newest ids before using its index.
_SCHEDULE_SCAN: Final = 20_000


def to_instance(r: Sequence[Any]) -> Instance:
    """A row selected as ``SELECT {COLS}`` as an Instance."""
    return Instance(
        r[0], r[1], r[2], r[3], STATES[r[4]], r[5], r[6], r[7], r[8], r[9],
        r[10], r[11], r[12], r[13], r[14], r[15], r[16],
    )  # fmt: skip


def to_read(r: Sequence[Any]) -> Instance:
    """A row selected as ``SELECT {READ_COLS}`` as an Instance."""
    return Instance(
        r[0], r[1], r[2], r[3], STATES[r[4]], r[5], r[6], r[7], r[8], r[9],
        r[10], r[11], r[12], r[13], r[14], r[15], r[16], None, r[17],
    )  # fmt: skip


def to_listed(r: Sequence[Any]) -> Instance:
    """A row selected as ``SELECT {LIST_COLS}`` as an Instance (params maybe left out)."""
    return Instance(
        r[0], r[1], r[2], r[3], STATES[r[4]], r[5], r[6], r[7], r[8], r[9],
        r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17], r[18],
    )  # fmt: skip


class ClaimedRows(list[tuple[Any, ...]]):
    """Claimed rows (``SELECT {COLS}``) not yet made Instances.

    The store's thread is the node's critical path during a burst, and building 5,000
    Instances holds the GIL for ~15 ms; the trio side makes them instead, in slices
    between checkpoints (``SQLiteStore.claim``).
    """


class Reads:
    """The read operations on one connection (used from the store's thread only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def abort_requests(self, owner: str) -> list[int]:
        cur = self._c.execute(_ABORT_REQUESTS, (owner,))
        return [int(r[0]) for r in cur]

    def next_pending_at(self) -> int | None:
        (value,) = self._c.execute(_NEXT_PENDING).fetchone()
        return None if value is None else int(value)

    def get(self, instance_id: int) -> Instance | None:
        r = self._c.execute(f"SELECT {READ_COLS} FROM instances WHERE id = ?", (instance_id,))
        found = r.fetchone()
        return None if found is None else to_read(found)

    def page(
        self,
        state: State | None,
        task: str | None,
        limit: int,
        before_id: int | None,
        where_also: InstanceFilter | None = None,
    ) -> list[Instance]:
        """Newest first. Ended rows come from their index in id order; PENDING and held
        rows from their own index and a top-N sort, unless PENDING rows are so many that
        walking ids down finds them sooner."""
        if limit <= 0:
            return []
        source, where = "instances", ["id < ?"]
        params: list[Any] = [_MAX_ID if before_id is None else before_id]
        if state is not None:
            # the literal terms make the partial indexes usable (SQLite matches them as text)
            if state in TERMINAL:
                source, cond = "instances INDEXED BY ix_instances_ended", _ENDED
            elif state in HELD:
                source, cond = "instances INDEXED BY ix_instances_held", _HELD
            else:
                pending, total = self.count(State.PENDING, None), self.count(None, None)
                sort = pending <= _SORT_PENDING_MAX or pending * 10 < total
                source = (
                    "instances INDEXED BY ix_instances_pending" if sort else "instances NOT INDEXED"
                )
                cond = _PENDING
            where += [cond, "state = ?"]
            params.append(int(state))
        if task is not None:
            if self.count(state, task) == 0:  # maintained counts: nothing to walk for
                return []
            if self._by_task(state, task, where_also):
                source = "instances INDEXED BY ix_instances_task"
            where.append("task = ?")
            params.append(task)
        if where_also is not None:
            terms, values = where_also.sql(("run_at", "updated"), "?")
            where += terms
            params += values
        if source == "instances" and where_also is not None and where_also.schedule_id:
            return self._schedule_page(where, params, limit)
        params.append(limit)
        cur = self._c.execute(
            f"SELECT {LIST_COLS} FROM {source} WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            params,
        )
        return [to_listed(r) for r in cur]

    def _by_task(self, state: State | None, task: str, also: InstanceFilter | None) -> bool:
        """Whether a task's listing walks the task index: unless a schedule's rows are
        asked for (their own path), or the state asked for has fewer rows than the task
        (then the state's index finds them sooner)."""
        if also is not None and also.schedule_id:
            return False
        return state is None or self.count(None, task) <= self.count(state, None)

    def _schedule_page(self, where: list[str], params: list[Any], limit: int) -> list[Instance]:
        """One schedule's instances, newest first, in two bounded steps.

        Walking ids down finds a busy schedule's rows at once, but walks the whole table
        for a schedule with few; its (schedule_id, fire_at) index finds those, but sorts
        every row of a busy one. So: the newest _SCHEDULE_SCAN ids first, then the rest
        through the index. Every row with a schedule_id has a fire_at (the only writer of
        schedule rows is the materialisation plan), so the index holds them all.
        """
        (newest,) = self._c.execute("SELECT coalesce(max(id), 0) FROM instances").fetchone()
        below = min(int(params[0]), int(newest) + 1)
        floor = max(below - _SCHEDULE_SCAN, 0)
        terms = " AND ".join(where)
        cur = self._c.execute(
            f"SELECT {READ_COLS} FROM instances WHERE {terms} AND id >= ? ORDER BY id DESC LIMIT ?",
            [*params, floor, limit],
        )
        found = [to_read(r) for r in cur]
        if len(found) < limit and floor > 0:
            cur = self._c.execute(
                f"SELECT {READ_COLS} FROM instances INDEXED BY ux_instances_fire "
                f"WHERE {terms} AND id < ? AND fire_at IS NOT NULL ORDER BY id DESC LIMIT ?",
                [*params, floor, limit - len(found)],
            )
            found += [to_read(r) for r in cur]
        return found

    def count(self, state: State | None, task: str | None) -> int:
        (n,) = self._c.execute(
            "SELECT coalesce(sum(n), 0) FROM counts "
            "WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR task = ?2)",
            (None if state is None else int(state), task),
        ).fetchone()
        return int(n)

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (for the nodes table's statements)."""
        return self._c

    def held(self) -> int:
        """Rows CLAIMED or RUNNING (from the maintained counts)."""
        (n,) = self._c.execute(_HELD_COUNT).fetchone()
        return int(n)

    def count_by_state(self) -> dict[State, int]:
        out = dict.fromkeys(State, 0)
        for s, n in self._c.execute("SELECT state, sum(n) FROM counts GROUP BY state"):
            out[STATES[s]] = int(n)
        return out

    def history(self, instance_id: int) -> list[Attempt]:
        cur = self._c.execute(
            "SELECT instance_id, attempt, node, started, finished, state, error_type, error, "
            "result, output FROM history WHERE instance_id = ? ORDER BY seq",
            (instance_id,),
        )
        out = [
            Attempt(r[0], r[1], r[2], r[3], r[4], STATES[r[5]], r[6], r[7], r[8], r[9]) for r in cur
        ]
        # the attempt that ended the instance is kept in its row (schema version 5)
        last = self._c.execute(
            "SELECT attempts, owner, last_started, last_finished, state, last_error_type, "
            "error, last_result, last_output FROM instances "
            "WHERE id = ? AND last_started IS NOT NULL",
            (instance_id,),
        ).fetchone()
        if last is not None:
            out.append(Attempt(instance_id, last[0], last[1], last[2], last[3],
                               STATES[last[4]], last[5], last[6], last[7], last[8]))  # fmt: skip
        return out

    def change_token(self) -> int:
        (value,) = self._c.execute("PRAGMA data_version").fetchone()
        return int(value)
