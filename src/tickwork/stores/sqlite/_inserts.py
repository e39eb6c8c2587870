"""The SQLite store's ``insert``: new instances, in as few statements as a batch allows.

Plain rows (no dedup key, no schedule) of one task and params go in one statement per
group; a batch with dedup keys or schedule occurrences is checked against what is stored
and against itself first, as if its rows were inserted one by one.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Final

from tickwork.errors import InvalidArgument
from tickwork.model import NewRow
from tickwork.state import NEW_STATES, State
from tickwork.stores._sql import states
from tickwork.stores.sqlite._write import Writes

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["InsertOps"]

_INSERT: Final = (
    "INSERT INTO instances (id, task, run_at, params, state, error, schedule_id, fire_at, "
    "dedup_key, max_attempts, timeout_us, created, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Plain rows, one step each (see Ops._insert_plain).
_INSERT_PLAIN: Final = states(
    "INSERT INTO instances (id, task, run_at, params, state, created, updated) "
    "VALUES (?, ?, ?, ?, {PENDING}, ?, ?)"
)
#: Plain rows sharing task and params at least this many times take one statement.
_GROUP_MIN: Final = 16
#: Plain rows of one task and params with consecutive ids: ?5 is the JSON array of their
#: run times, the first id ?1.
_INSERT_RUN: Final = states(
    "INSERT INTO instances (id, task, run_at, params, state, created, updated) "
    "SELECT ?1 + key, ?2, value, ?3, {PENDING}, ?4, ?4 FROM json_each(?5)"
)
#: Plain rows of one task and params: ?4 is the JSON array of their [id, run_at].
_INSERT_PAIRS: Final = states(
    "INSERT INTO instances (id, task, run_at, params, state, created, updated) "
    "SELECT json_extract(value, '$[0]'), ?1, json_extract(value, '$[1]'), ?2, {PENDING}, "
    "?3, ?3 FROM json_each(?4)"
)


def _is_plain(r: NewRow) -> bool:
    """A PENDING row with none of the optional columns (what schedule_many mostly makes)."""
    return (
        r.state is State.PENDING
        and r.error is None
        and r.schedule_id is None
        and r.fire_at_us is None
        and r.dedup_key is None
        and r.max_attempts is None
        and r.timeout_us is None
    )


def _insert_params(iid: int, r: NewRow, now: int) -> tuple[object, ...]:
    return (
        iid, r.task, r.run_at_us, r.params, r.state, r.error, r.schedule_id, r.fire_at_us,
        r.dedup_key, r.max_attempts, r.timeout_us, now, now,
    )  # fmt: skip


#: What makes a new row a duplicate: ("key", dedup_key) or ("fire", schedule_id, fire_at_us).
_Identity = tuple[str, ...] | tuple[str, str, int]


def _identities(r: NewRow) -> list[_Identity]:
    out: list[_Identity] = []
    if r.dedup_key is not None:
        out.append(("key", r.dedup_key))
    if r.schedule_id is not None and r.fire_at_us is not None:
        out.append(("fire", r.schedule_id, r.fire_at_us))
    return out


class InsertOps(Writes):
    """``Store.insert`` on the store's connection (a base of its ``Ops``)."""

    def insert(self, rows: Sequence[NewRow], now: int) -> list[int]:
        for r in rows:
            if r.state not in NEW_STATES:
                raise InvalidArgument(
                    f"a new instance starts PENDING or terminal, not {r.state.name}"
                )
        if not rows:
            return []
        with self._write() as deltas:
            if any(r.dedup_key is not None or r.schedule_id is not None for r in rows):
                ids, new, repeats = self._dedup(rows)
            else:  # the bulk path: every row is new
                ids, new, repeats = [0] * len(rows), list(range(len(rows))), {}
            if new:
                first = self._next("last_id", len(new)) - len(new) + 1
                for k, pos in enumerate(new):
                    ids[pos] = first + k
                plain = [p for p in new if _is_plain(rows[p])]
                if plain:  # the common bulk case: a few statements, no step per row
                    self._insert_plain(ids, rows, plain, now)
                if len(plain) < len(new):
                    self._c.executemany(
                        _INSERT,
                        [
                            _insert_params(ids[p], rows[p], now)
                            for p in new
                            if not _is_plain(rows[p])
                        ],
                    )
                deltas.update((rows[pos].task, int(rows[pos].state)) for pos in new)
            for pos, earlier in repeats.items():
                ids[pos] = ids[earlier]
        return ids

    def _insert_plain(
        self, ids: list[int], rows: Sequence[NewRow], plain: list[int], now: int
    ) -> None:
        """Insert the plain rows at positions ``plain``. Rows sharing their task and params
        (a burst of one job, say) go in one statement per group, ids and run times as
        JSON: every step of an ``executemany`` re-takes the GIL, which the trio thread
        holds most of the time, and one statement for 100,000 rows takes it once. Params
        differ per row otherwise (a JSON document cannot hold bytes), so the rest go
        through one ``executemany``. No container is made per row: this runs while the
        trio thread fires instances, and every list made here would outlive a young
        collection and add to the next full one (a tuple of plain values is untracked by
        the first collection it meets)."""
        sizes = Counter((rows[p].task, rows[p].params) for p in plain)
        groups: dict[tuple[str, bytes], list[int]] = {
            key: [] for key, size in sizes.items() if size >= _GROUP_MIN
        }
        single: list[tuple[int, str, int, bytes, int, int]] = []
        for p in plain:
            r = rows[p]
            members = groups.get((r.task, r.params)) if groups else None
            if members is None:
                single.append((ids[p], r.task, r.run_at_us, r.params, now, now))
            else:
                members.append(p)
        for (task, params), members in groups.items():
            first = ids[members[0]]
            if ids[members[-1]] - first == len(members) - 1:  # consecutive ids (a batch)
                run_ats = json.dumps([rows[p].run_at_us for p in members])
                self._c.execute(_INSERT_RUN, (first, task, params, now, run_ats))
            else:
                pairs = json.dumps([[ids[p], rows[p].run_at_us] for p in members])
                self._c.execute(_INSERT_PAIRS, (task, params, now, pairs))
        if single:
            self._c.executemany(_INSERT_PLAIN, single)

    def _dedup(self, rows: Sequence[NewRow]) -> tuple[list[int], list[int], dict[int, int]]:
        """Find duplicates: returns ``ids`` (the existing id, or 0 for a row to insert),
        the positions of the rows to insert, and ``{position: earlier position}`` for rows
        that repeat an earlier row of this batch."""
        # As if the rows were inserted one by one: each is checked against what is stored
        # and the new rows before it, its dedup key first. Values: a stored id (> 0) or
        # -(position + 1) of an earlier new row of this batch.
        known = self._stored(rows)
        ids: list[int] = []
        new: list[int] = []
        repeats: dict[int, int] = {}
        for pos, r in enumerate(rows):
            idents = _identities(r)
            found = next((known[i] for i in idents if i in known), None)
            if found is None:
                ids.append(0)
                new.append(pos)
                known.update((i, -(pos + 1)) for i in idents)
            elif found > 0:
                ids.append(found)
            else:
                ids.append(0)
                repeats[pos] = -found - 1
        return ids, new, repeats

    def _stored(self, rows: Sequence[NewRow]) -> dict[_Identity, int]:
        """The ids of stored instances that rows of the batch would duplicate."""
        keys = [r.dedup_key for r in rows if r.dedup_key is not None]
        out: dict[_Identity, int] = {}
        if keys:
            cur = self._c.execute(
                "SELECT dedup_key, id FROM instances "
                "WHERE dedup_key IN (SELECT value FROM json_each(?))",
                (json.dumps(keys),),
            )
            out.update((("key", str(k)), int(i)) for k, i in cur)
        fires = {
            (r.schedule_id, r.fire_at_us)
            for r in rows
            if r.schedule_id is not None and r.fire_at_us is not None
        }
        for fire in fires:
            found = self._c.execute(
                "SELECT id FROM instances WHERE schedule_id = ? AND fire_at = ?", fire
            ).fetchone()
            if found is not None:
                out[("fire", *fire)] = int(found[0])
        return out
