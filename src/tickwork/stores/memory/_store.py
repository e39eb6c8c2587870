"""An in-process store: the whole Store protocol, held in dicts and sorted lists.

Nothing survives the process, but everything else is faithful (claims, leases, fencing,
dedup, history, abort requests), so the actors and tests run against the same contract
as on a durable store. Every method is O(log n) per instance touched: PENDING rows live
in a sorted index by ``(run_at, id)``, held rows in one by lease expiry.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from typing import TYPE_CHECKING

import attrs
import trio
from sortedcontainers import SortedList

from tickwork.errors import InvalidArgument, StoreError, StoreLocked
from tickwork.model import (
    DEFAULT_MAX_PARAMS_BYTES,
    LIST_PARAMS_BYTES,
    AbortResult,
    Attempt,
    Finish,
    Instance,
    InstanceFilter,
    NewRow,
    check_max_params_bytes,
)
from tickwork.state import HELD, NEW_STATES, TERMINAL, Event, State, apply
from tickwork.stores._rules import finish_event, finished_state, history_state, release_event
from tickwork.stores.base import INTERRUPTED
from tickwork.stores.memory._nodes import MemoryNodes
from tickwork.stores.memory._schedules import MemoryScheduleMethods
from tickwork.stores.memory._tokens import MemoryTokens

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable, Iterator, Sequence

    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.cluster import NodeInfo

__all__ = ["MemoryStore"]


def _listed(inst: Instance) -> Instance:
    """``inst`` as a listing gives it: params over LIST_PARAMS_BYTES left out."""
    if len(inst.params) <= LIST_PARAMS_BYTES:
        return inst
    return attrs.evolve(inst, params=b"", params_size=len(inst.params))


class MemoryStore(MemoryTokens, MemoryScheduleMethods):
    """The Store protocol in memory, for tests and for schedulers that need no durability.

    One object is one database: closing and opening it again (a simulated restart) keeps
    its contents. Like a single-node durable store it admits one node at a time.
    ``change_token()`` is None, as nothing else can write to it.
    """

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

    # -- life ---------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        """Open the store; with ``node_id``, as the one node allowed to run on it.

        Raises:
            StoreLocked: another node has it open.
        """
        await trio.lowlevel.checkpoint()
        if node_id is not None:
            if self._node is not None and self._node != node_id:
                raise StoreLocked(
                    f"this MemoryStore is already used by node {self._node!r}; "
                    "close that scheduler first or give this one its own MemoryStore"
                )
            if self._node is None:
                self._nodes.register(node_id)
            self._node = node_id
        self._open = True

    async def aclose(self) -> None:
        """Close the store and release the node lock. Idempotent; the contents stay."""
        await trio.lowlevel.checkpoint()
        if self._node is not None:
            self._nodes.unregister(self._node)
        self._open = False
        self._node = None

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record what ``node_id`` runs (see :class:`~tickwork.stores.cluster.NodeRegistry`)."""
        self._check_open()
        await self._nodes.record_node(node_id, tasks=tasks, max_params_bytes=max_params_bytes)

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that opened this store, newest first; alive while open."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._nodes.listing(sum(len(ids) for ids in self._held.values()))

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
            new = attrs.evolve(
                row,
                state=target,
                owner=None,
                claim_token=None,
                lease_until_us=None,
                updated_us=now_us,
                started_us=None,
            )
        else:
            ran = row.state is State.RUNNING and not repeatable
            new = attrs.evolve(
                row,
                state=target,
                attempts=row.attempts + 1 if ran else row.attempts,
                error=INTERRUPTED if target is State.FAILED else row.error,
                claim_token=None,
                lease_until_us=None,
                updated_us=now_us,
                started_us=None,
            )
        self._put(new)

    # -- writes -------------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances and return their ids in order; duplicates get the existing id."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        self._check_params(rows)
        for row in rows:
            if row.state not in NEW_STATES:
                raise InvalidArgument(
                    f"a new instance starts PENDING or terminal, not {row.state.name}"
                )
        ids: list[int] = []
        for row in rows:
            fire = None
            if row.schedule_id is not None and row.fire_at_us is not None:
                fire = (row.schedule_id, row.fire_at_us)
            existing = None
            if row.dedup_key is not None:
                existing = self._dedup.get(row.dedup_key)
            if existing is None and fire is not None:
                existing = self._fires.get(fire)
            if existing is not None:
                ids.append(existing)
                continue
            self._last_id += 1
            iid = self._last_id
            self._put(
                Instance(
                    id=iid,
                    task=row.task,
                    run_at_us=row.run_at_us,
                    params=row.params,
                    state=row.state,
                    error=row.error,
                    schedule_id=row.schedule_id,
                    fire_at_us=row.fire_at_us,
                    dedup_key=row.dedup_key,
                    max_attempts=row.max_attempts,
                    timeout_us=row.timeout_us,
                    created_us=now_us,
                    updated_us=now_us,
                )
            )
            if row.dedup_key is not None:
                self._dedup[row.dedup_key] = iid
            if fire is not None:
                self._fires[fire] = iid
            ids.append(iid)
        return ids

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        """Claim up to ``limit`` due instances in ``(run_at, id)`` order. See Store.claim."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return []
        # A PENDING row keeps an abort requested while it was held (a retry written
        # after the request): it ends now, whatever its due time.
        for iid in sorted(self._abort):
            row = self._rows[iid]
            if row.state is State.PENDING:
                self._put(
                    attrs.evolve(row, state=apply(row.state, Event.CLAIM_ABORT), updated_us=now_us)
                )
        # Expired leases: a dead (or stalled) node's rows. At-most-once RUNNING rows and rows
        # with an abort requested end now; CLAIMED ones, and at-least-once RUNNING ones,
        # compete with PENDING ones by due time.
        # Never the claimer's own rows: it still holds them in memory (its lease only looks
        # expired, e.g. after a wall-clock jump), and taking them again would run them twice.
        takeable: list[tuple[int, int]] = []
        for _, iid in list(self._leases.irange(maximum=(now_us - 1, float("inf")))):
            row = self._rows[iid]
            if row.owner == owner:
                continue
            ended = row.state is State.RUNNING and iid not in self._repeatable
            if ended or iid in self._abort:
                self._release_one(row, now_us, Event.LAPSE)
            elif row.run_at_us <= due_before_us:
                takeable.append((row.run_at_us, iid))
        takeable.sort()
        merged = heapq.merge(self._due_pending(due_before_us), takeable)
        chosen = [iid for _, iid in itertools.islice(merged, limit)]
        self._last_token += 1
        token = self._last_token
        lease_until = now_us + lease_us
        out = []
        for iid in chosen:
            row = self._rows[iid]
            event = Event.CLAIM if row.state is State.PENDING else Event.TAKE_OVER
            new = attrs.evolve(
                row,
                state=apply(row.state, event),
                owner=owner,
                claim_token=token,
                lease_until_us=lease_until,
                updated_us=now_us,
                started_us=None,
            )
            self._put(new)
            out.append(new)
        return self._after_claim(out, now_us)

    def _due_pending(self, due_before_us: int) -> Iterator[tuple[int, int]]:
        return iter(self._pending.irange(maximum=(due_before_us, float("inf"))))

    def _holds(self, owner: str, iid: int, token: int) -> Instance | None:
        row = self._rows.get(iid)
        if row is None or row.state not in HELD or row.owner != owner:
            return None
        return row if row.claim_token == token else None

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        """Make RUNNING durable for held ``(id, claim_token)`` pairs. Fenced per row."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        out = []
        for iid, token in items:
            row = self._holds(owner, iid, token)
            if row is not None and row.state is State.CLAIMED:
                self._put(
                    attrs.evolve(
                        row,
                        state=apply(row.state, Event.START),
                        updated_us=now_us,
                        started_us=now_us,
                    )
                )
            out.append(row is not None)
        return out

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        """Write outcomes, fenced per row; finishes with ``started_us`` add history."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        for f in finishes:
            finish_event(f.state, abort_requested=False)  # a target no finish may write
        out = []
        for f in finishes:
            row = self._holds(owner, f.id, f.claim_token)
            target = None
            if row is not None:
                target = finished_state(row.state, f.state, f.id in self._abort)
            if row is None or target is None:
                out.append(False)
                continue
            if f.state is State.RUNNING:  # RUN: an at-least-once run started; the claim kept
                if row.state is not State.RUNNING:
                    self._put(
                        attrs.evolve(row, state=target, updated_us=now_us, started_us=f.started_us)
                    )
                    self._repeatable.add(f.id)
                out.append(True)
                continue
            if target is State.PENDING:
                new = attrs.evolve(
                    row,
                    state=target,
                    attempts=f.attempts,
                    error=f.error,
                    run_at_us=row.run_at_us if f.run_at_us is None else f.run_at_us,
                    owner=None,
                    claim_token=None,
                    lease_until_us=None,
                    updated_us=now_us,
                    started_us=None,
                )
            else:
                new = attrs.evolve(
                    row,
                    state=target,
                    attempts=f.attempts,
                    error=f.error,
                    claim_token=None,
                    lease_until_us=None,
                    updated_us=now_us,
                    started_us=None,
                )
            self._put(new)
            if f.started_us is not None:
                self._history.setdefault(f.id, []).append(
                    Attempt(
                        instance_id=f.id,
                        attempt=f.attempts,
                        node=owner,
                        started_us=f.started_us,
                        finished_us=now_us if f.finished_us is None else f.finished_us,
                        state=history_state(f.state),
                        error_type=f.error_type,
                        error=f.error,
                        result=f.result,
                        output=f.output,
                    )
                )
            out.append(True)
        return out

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        """Give back what ``owner`` holds (``ids``, or all). See Store.release."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return self._release(owner, now_us, ids)

    def _release(self, owner: str, now_us: int, ids: Iterable[int] | None) -> int:
        held = self._held.get(owner, set())
        targets = sorted(held if ids is None else held.intersection(ids))
        kind = Event.GIVE_BACK if ids is None else Event.EVICT
        for iid in targets:
            self._release_one(self._rows[iid], now_us, kind)
        return len(targets)

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        """Extend the lease of everything ``owner`` holds; returns how many rows."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        held = sorted(self._held.get(owner, ()))
        for iid in held:
            self._put(attrs.evolve(self._rows[iid], lease_until_us=now_us + lease_us))
        return len(held)

    async def recover(self, now_us: int) -> int:
        """Release every claim of every owner (only one node can use this store)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return sum(self._release(owner, now_us, None) for owner in list(self._held))

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        """Abort a PENDING instance now, or record the request on a held one."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        row = self._rows.get(instance_id)
        if row is None:
            return AbortResult(found=False)
        if row.state is State.PENDING:
            aborted = attrs.evolve(row, state=apply(row.state, Event.ABORT), updated_us=now_us)
            self._put(aborted)
            self._after_abort(row, now_us)
            return AbortResult(found=True, state=aborted.state, previous=row.state)
        if row.state in HELD:
            self._abort.add(instance_id)
            return AbortResult(
                found=True, state=row.state, owner=row.owner, requested=True, previous=row.state
            )
        return AbortResult(found=True, state=row.state, owner=row.owner, previous=row.state)

    # -- reads --------------------------------------------------------------------------

    async def abort_requests(self, owner: str) -> list[int]:
        """Ids held by ``owner`` with an abort requested."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return sorted(iid for iid in self._abort if iid in self._held.get(owner, ()))

    async def next_pending_at(self) -> int | None:
        """The earliest ``run_at_us`` of a PENDING row, or None."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return int(self._pending[0][0]) if self._pending else None

    async def get(self, instance_id: int) -> Instance | None:
        """One instance, or None."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return self._rows.get(instance_id)

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> list[Instance]:
        """Instances newest first (id descending), filtered; ``before_id`` pages."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return []
        top = self._last_id + 1 if before_id is None else min(before_id, self._last_id + 1)
        ids: Iterable[int]
        if state is None:
            ids = range(top - 1, 0, -1)  # ids are 1..last_id (minus what prune deleted)
        else:
            ids = self._by_state[state].irange(maximum=top, inclusive=(True, False), reverse=True)
        rows = (r for i in ids if (r := self._rows.get(i)) is not None)
        if task is not None:
            rows = (r for r in rows if r.task == task)
        if where is not None:
            rows = (r for r in rows if where.matches(r))
        return [_listed(r) for r in itertools.islice(rows, limit)]

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return sum(
            n
            for (s, t), n in self._counts.items()
            if (state is None or s is state) and (task is None or t == task)
        )

    async def count_by_state(self) -> dict[State, int]:
        """Stored instances per state, every state present."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        out = dict.fromkeys(State, 0)
        for (s, _), n in self._counts.items():
            out[s] += n
        return out

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """Recorded attempts of one instance, oldest first."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return list(self._history.get(instance_id, ()))

    async def change_token(self) -> int | None:
        """None: nothing outside this process can write to a MemoryStore (no polling)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return None

    # -- retention ----------------------------------------------------------------------

    async def prune(self, before_us: int, limit: int) -> int:
        """Delete up to ``limit`` terminal instances ended before ``before_us`` and up to
        ``limit`` history rows finished before it. See Store.prune.

        A scan of the terminal rows (this store is for tests and small deployments).
        """
        await trio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return 0
        old = sorted(
            (row.updated_us, iid)
            for state in TERMINAL
            for iid in self._by_state[state]
            if (row := self._rows[iid]).updated_us < before_us
        )[:limit]
        for _, iid in old:
            row = self._rows.pop(iid)
            self._by_state[row.state].remove(iid)
            self._counts[(row.state, row.task)] -= 1
            if row.dedup_key is not None and self._dedup.get(row.dedup_key) == iid:
                del self._dedup[row.dedup_key]
            if row.schedule_id is not None and row.fire_at_us is not None:
                fire = (row.schedule_id, row.fire_at_us)
                if self._fires.get(fire) == iid:
                    del self._fires[fire]
        attempts = sorted(
            (a.finished_us, iid, n)
            for iid, rows in self._history.items()
            for n, a in enumerate(rows)
            if a.finished_us < before_us
        )[:limit]
        drop: dict[int, set[int]] = {}
        for _, iid, n in attempts:
            drop.setdefault(iid, set()).add(n)
        for iid, positions in drop.items():
            kept = [a for n, a in enumerate(self._history[iid]) if n not in positions]
            if kept:
                self._history[iid] = kept
            else:
                del self._history[iid]
        return len(old) + len(attempts)
