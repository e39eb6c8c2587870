"""The MemoryStore's rows and indexes, and the one place that changes a row (``_put``).

:class:`MemoryRows` is the base of :class:`~tickwork.stores.memory.MemoryStore`: every
dict and sorted index the store keeps, kept in step by :meth:`MemoryRows._put`, and the
give-back of one held row that release, recover and a lease takeover share.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
from sortedcontainers import SortedList

from tickwork.errors import StoreError
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, Attempt, Instance, check_max_params_bytes
from tickwork.state import HELD, TERMINAL, Event, State, apply
from tickwork.stores._rules import release_event
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.memory._nodes import MemoryNodes

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tickwork.schedules.schedule import Schedule

__all__ = ["MemoryRows", "let_go"]


class MemoryRows:
    """The state of a MemoryStore (a base class; see ``MemoryStore``)."""

    def __init__(self, *, max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> None:
        self.max_params_bytes = check_max_params_bytes(max_params_bytes)
        self._open = False
        self._node: str | None = None
        self._rows: dict[int, Instance] = {}
        self._last_id = 0
        self._last_token = 0
        self._abort: set[int] = set()
        # RUNNING rows of at-least-once runs: given back, they run again (_rules)
        self._repeatable: set[int] = set()
        self._pending: SortedList = SortedList()  # (run_at_us, id) of PENDING rows
        self._leases: SortedList = SortedList()  # (lease_until_us, id) of held rows
        self._held: dict[str, set[int]] = {}  # owner -> ids it holds
        self._by_state: dict[State, SortedList] = {s: SortedList() for s in State}
        self._counts: Counter[tuple[State, str]] = Counter()
        self._dedup: dict[str, int] = {}
        self._fires: dict[tuple[str, int], int] = {}
        self._history: dict[int, list[Attempt]] = {}
        self._schedules: dict[str, Schedule] = {}  # see _memory_schedules
        # schedule id -> its admitted occurrence (instance id, claim token): ScheduleTx.slots
        self._schedule_slots: dict[str, tuple[int, int | None]] = {}
        self._schedule_rows: dict[str, set[int]] = {}  # schedule id -> unfinished occurrences
        self._nodes = MemoryNodes()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the MemoryStore is not open; call `await store.open()` first")

    # -- the one place that changes a row -----------------------------------------------

    def _put(self, new: Instance) -> None:
        """Store ``new`` in place of the row with its id, keeping every index in step."""
        old = self._rows.get(new.id)
        if old is not None:
            if old.state is State.PENDING:
                self._pending.remove((old.run_at_us, old.id))
            if old.state in HELD:
                self._leases.remove((old.lease_until_us, old.id))
                self._held[old.owner].discard(old.id)  # type: ignore[index]
            if old.state is not new.state:
                self._by_state[old.state].remove(old.id)
                self._by_state[new.state].add(new.id)
            self._counts[(old.state, old.task)] -= 1
        else:
            self._by_state[new.state].add(new.id)
        self._counts[(new.state, new.task)] += 1
        if new.state is State.PENDING:
            self._pending.add((new.run_at_us, new.id))
        elif new.state in HELD:
            self._leases.add((new.lease_until_us, new.id))
            self._held.setdefault(new.owner, set()).add(new.id)  # type: ignore[arg-type]
        elif new.state in TERMINAL:
            self._abort.discard(new.id)
        if new.state is not State.RUNNING:
            self._repeatable.discard(new.id)
        self._rows[new.id] = new

    def _release_one(self, row: Instance, now_us: int, kind: Event) -> None:
        """Give back one held row (``kind``: GIVE_BACK, EVICT or LAPSE): see release_event."""
        repeatable = row.id in self._repeatable
        target = apply(row.state, release_event(kind, row.id in self._abort, repeatable))
        if target is State.PENDING:
            self._put(let_go(row, target, now_us))
            return
        ran = row.state is State.RUNNING and not repeatable
        self._put(
            let_go(
                row,
                target,
                now_us,
                attempts=row.attempts + 1 if ran else row.attempts,
                error=INTERRUPTED if target is State.FAILED else row.error,
            )
        )

    def _holds(self, owner: str, iid: int, token: int) -> Instance | None:
        row = self._rows.get(iid)
        if row is None or row.state not in HELD or row.owner != owner:
            return None
        return row if row.claim_token == token else None

    def _release(self, owner: str, now_us: int, ids: Iterable[int] | None) -> int:
        held = self._held.get(owner, set())
        targets = sorted(held if ids is None else held.intersection(ids))
        kind = Event.GIVE_BACK if ids is None else Event.EVICT
        for iid in targets:
            self._release_one(self._rows[iid], now_us, kind)
        return len(targets)


def let_go(row: Instance, target: State, now_us: int, **changes: Any) -> Instance:
    """``row`` moved to ``target`` and no longer held: its claim is cleared (and, back to
    PENDING, its owner too), with ``changes`` to its other fields."""
    if target is State.PENDING:
        changes["owner"] = None
    return attrs.evolve(
        row,
        state=target,
        claim_token=None,
        lease_until_us=None,
        updated_us=now_us,
        started_us=None,
        **changes,
    )
