"""A store of one's own over plain dicts, written as a user would (``docs/stores.md``).

It imports only the public ``tickwork`` and ``tickwork.stores`` (a test checks), keeps
every table in one dict (``self.db``) and scans it: nothing clever, so that what it proves
is the extension point. The conformance suite (``tests/test_store_conformance.py``) runs
on it beside the built-in stores.

Each call is atomic: it awaits one checkpoint first and then reads and writes without
awaiting again. Every state it writes comes from ``apply``/``lookup`` with the event the
call means for the row (``finish_event``, ``release_event``...), as the built-in stores do.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from tickwork import InvalidArgument, StoreError, StoreLocked
from tickwork.stores import (
    HELD,
    INTERRUPTED,
    LIST_PARAMS_BYTES,
    TERMINAL,
    AbortResult,
    Attempt,
    Event,
    Finish,
    InFlight,
    Instance,
    InstanceFilter,
    LiveRow,
    NewRow,
    NodeInfo,
    OccurrenceInfo,
    Schedule,
    ScheduleMethods,
    ScheduleTx,
    Slot,
    State,
    after_abort,
    after_claim,
    apply,
    finish_event,
    finished_state,
    history_state,
    lookup,
    release_event,
)

T = TypeVar("T")


class DictStore(ScheduleMethods):
    """The Store protocol over one plain dict of tables (see the module docstring)."""

    def __init__(self) -> None:
        self.db: dict[str, Any] = {
            "instances": {},  # id -> Instance
            "history": {},  # id -> [Attempt]
            "aborts": set(),  # ids of held instances with an abort requested
            "repeatable": set(),  # ids of RUNNING at-least-once runs (RUN): they run again
            "schedules": {},  # id -> Schedule
            "slots": {},  # schedule id -> (instance id, claim token) admitted
            "nodes": {},  # node id -> NodeInfo
            "last_id": 0,
            "last_token": 0,
        }
        self._node: str | None = None
        self._open = False

    @property
    def _rows(self) -> dict[int, Instance]:
        rows: dict[int, Instance] = self.db["instances"]
        return rows

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        if not self._open:
            raise StoreError("the DictStore is not open")

    def _put(self, row: Instance) -> None:
        self._rows[row.id] = row
        if row.state in TERMINAL:
            self.db["aborts"].discard(row.id)
        if row.state is not State.RUNNING:
            self.db["repeatable"].discard(row.id)

    def _held_by(self, owner: str) -> list[Instance]:
        return [r for r in self._rows.values() if r.state in HELD and r.owner == owner]

    # -- life and the nodes table ---------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        await trio.lowlevel.checkpoint()
        if node_id is not None:
            if self._node not in (None, node_id):
                raise StoreLocked(f"node {self._node!r} has this store open")
            now = time.time_ns() // 1000
            self.db["nodes"][node_id] = NodeInfo(
                node_id, now, now, None, True, 0, None, None, os.getpid(), None
            )
            self._node = node_id
        self._open = True

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._node is not None:
            info = self.db["nodes"][self._node]
            self.db["nodes"][self._node] = attrs.evolve(info, stopped_us=time.time_ns() // 1000)
        self._node = None
        self._open = False

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        await self._enter()
        info = self.db["nodes"][node_id]
        tasks = tuple(sorted(set(tasks)))
        self.db["nodes"][node_id] = attrs.evolve(
            info, tasks=tasks, max_params_bytes=max_params_bytes
        )

    async def nodes(self) -> builtins.list[NodeInfo]:
        await self._enter()
        infos = sorted(self.db["nodes"].values(), key=lambda n: -n.started_us)
        return [
            attrs.evolve(
                n,
                alive=n.node_id == self._node,
                held=len(self._held_by(n.node_id)),
            )
            for n in infos
        ]

    # -- instances ------------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        await self._enter()
        self._check_params(rows)
        if any(r.state is not State.PENDING and r.state not in TERMINAL for r in rows):
            raise InvalidArgument("a new instance starts PENDING or terminal")
        ids = []
        for row in rows:
            existing = next(
                (
                    old.id
                    for old in self._rows.values()
                    if (row.dedup_key is not None and old.dedup_key == row.dedup_key)
                    or (
                        row.schedule_id is not None
                        and row.fire_at_us is not None
                        and (old.schedule_id, old.fire_at_us) == (row.schedule_id, row.fire_at_us)
                    )
                ),
                None,
            )
            ids.append(existing if existing is not None else self._new(row, now_us))
        return ids

    def _new(self, row: NewRow, now_us: int) -> int:
        self.db["last_id"] += 1
        iid: int = self.db["last_id"]
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
        return iid

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        await self._enter()
        if limit <= 0:
            return []
        aborts = self.db["aborts"]
        for row in list(self._rows.values()):
            if row.state is State.PENDING and row.id in aborts:
                aborted = apply(row.state, Event.CLAIM_ABORT)
                self._put(attrs.evolve(row, state=aborted, updated_us=now_us))
            elif (
                row.state in HELD
                and row.owner != owner
                and row.lease_until_us is not None
                and row.lease_until_us < now_us
                and (
                    (row.state is State.RUNNING and row.id not in self.db["repeatable"])
                    or row.id in aborts
                )
            ):
                self._release_one(row, now_us, Event.LAPSE)
        candidates = sorted(
            (r.run_at_us, r.id)
            for r in self._rows.values()
            if r.run_at_us <= due_before_us
            and (
                r.state is State.PENDING
                or (
                    (r.state is State.CLAIMED or r.id in self.db["repeatable"])
                    and r.owner != owner
                    and r.lease_until_us is not None
                    and r.lease_until_us < now_us
                )
            )
        )[:limit]
        self.db["last_token"] += 1
        claimed = []
        for _, iid in candidates:
            row = self._rows[iid]
            event = Event.CLAIM if row.state is State.PENDING else Event.TAKE_OVER
            new = attrs.evolve(
                row,
                state=apply(row.state, event),
                owner=owner,
                claim_token=self.db["last_token"],
                lease_until_us=now_us + lease_us,
                updated_us=now_us,
                started_us=None,
            )
            self._put(new)
            claimed.append(new)
        return after_claim(_Tx(self, now_us), claimed, now_us)

    def _holds(self, owner: str, iid: int, token: int) -> Instance | None:
        row = self._rows.get(iid)
        if row is None or row.state not in HELD or (row.owner, row.claim_token) != (owner, token):
            return None
        return row

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        await self._enter()
        out = []
        for iid, token in items:
            row = self._holds(owner, iid, token)
            if row is not None and row.state is State.CLAIMED:
                started = apply(row.state, Event.START)
                self._put(attrs.evolve(row, state=started, updated_us=now_us, started_us=now_us))
            out.append(row is not None)
        return out

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        await self._enter()
        for f in finishes:
            finish_event(f.state, abort_requested=False)  # refuses a target no finish writes
        out = []
        for f in finishes:
            row = self._holds(owner, f.id, f.claim_token)
            target = None
            if row is not None:
                target = finished_state(row.state, f.state, f.id in self.db["aborts"])
            if row is None or target is None:
                out.append(False)
                continue
            if f.state is State.RUNNING:  # RUN: an at-least-once run started; claim kept
                if row.state is not State.RUNNING:
                    self._put(
                        attrs.evolve(row, state=target, updated_us=now_us, started_us=f.started_us)
                    )
                    self.db["repeatable"].add(f.id)
                out.append(True)
                continue
            back = target is State.PENDING
            self._put(
                attrs.evolve(
                    row,
                    state=target,
                    attempts=f.attempts,
                    error=f.error,
                    run_at_us=f.run_at_us if back and f.run_at_us is not None else row.run_at_us,
                    owner=None if back else row.owner,
                    claim_token=None,
                    lease_until_us=None,
                    updated_us=now_us,
                    started_us=None,
                )
            )
            if f.started_us is not None:
                finished = now_us if f.finished_us is None else f.finished_us
                self.db["history"].setdefault(f.id, []).append(
                    Attempt(
                        instance_id=f.id,
                        attempt=f.attempts,
                        node=owner,
                        started_us=f.started_us,
                        finished_us=finished,
                        state=history_state(f.state),
                        error_type=f.error_type,
                        error=f.error,
                        result=f.result,
                        output=f.output,
                    )
                )
            out.append(True)
        return out

    def _release_one(self, row: Instance, now_us: int, kind: Event) -> None:
        repeatable = row.id in self.db["repeatable"]
        target = apply(row.state, release_event(kind, row.id in self.db["aborts"], repeatable))
        if target is State.PENDING:
            new = attrs.evolve(row, state=target, owner=None)
        else:
            ran = row.state is State.RUNNING and not repeatable
            new = attrs.evolve(
                row,
                state=target,
                attempts=row.attempts + 1 if ran else row.attempts,
                error=INTERRUPTED if target is State.FAILED else row.error,
            )
        self._put(
            attrs.evolve(
                new, claim_token=None, lease_until_us=None, updated_us=now_us, started_us=None
            )
        )

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        await self._enter()
        rows = [r for r in self._held_by(owner) if ids is None or r.id in ids]
        for row in rows:
            self._release_one(row, now_us, Event.GIVE_BACK if ids is None else Event.EVICT)
        return len(rows)

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        await self._enter()
        rows = self._held_by(owner)
        for row in rows:
            self._put(attrs.evolve(row, lease_until_us=now_us + lease_us))
        return len(rows)

    async def recover(self, now_us: int) -> int:
        # One node at a time (open's lock): every claim left is a dead run's.
        await self._enter()
        rows = [r for r in self._rows.values() if r.state in HELD]
        for row in rows:
            self._release_one(row, now_us, Event.GIVE_BACK)
        return len(rows)

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        await self._enter()
        row = self._rows.get(instance_id)
        if row is None:
            return AbortResult(found=False)
        if row.state is State.PENDING:
            self._put(attrs.evolve(row, state=apply(row.state, Event.ABORT), updated_us=now_us))
            if row.schedule_id is not None and row.fire_at_us is not None:
                after_abort(_Tx(self, now_us), row.schedule_id, row.fire_at_us, now_us)
            return AbortResult(found=True, state=State.ABORTED, previous=row.state)
        if row.state in HELD:
            self.db["aborts"].add(instance_id)
        return AbortResult(
            found=True,
            state=row.state,
            owner=row.owner,
            requested=row.state in HELD,
            previous=row.state,
        )

    async def abort_requests(self, owner: str) -> list[int]:
        await self._enter()
        return sorted(r.id for r in self._held_by(owner) if r.id in self.db["aborts"])

    async def next_pending_at(self) -> int | None:
        await self._enter()
        due = [r.run_at_us for r in self._rows.values() if r.state is State.PENDING]
        return min(due, default=None)

    async def get(self, instance_id: int) -> Instance | None:
        await self._enter()
        return self._rows.get(instance_id)

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> builtins.list[Instance]:
        await self._enter()
        rows = [
            r
            for _, r in sorted(self._rows.items(), reverse=True)
            if (state is None or r.state is state)
            and (task is None or r.task == task)
            and (before_id is None or r.id < before_id)
            and (where is None or where.matches(r))
        ][: max(limit, 0)]
        return [
            r
            if len(r.params) <= LIST_PARAMS_BYTES
            else attrs.evolve(r, params=b"", params_size=len(r.params))
            for r in rows
        ]

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        await self._enter()
        return sum(
            1
            for r in self._rows.values()
            if (state is None or r.state is state) and (task is None or r.task == task)
        )

    async def count_by_state(self) -> dict[State, int]:
        await self._enter()
        out = dict.fromkeys(State, 0)
        for r in self._rows.values():
            out[r.state] += 1
        return out

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        await self._enter()
        return list(self.db["history"].get(instance_id, ()))

    async def change_token(self) -> int | None:
        await self._enter()
        return None  # nothing else can write to it: the node need not poll

    async def prune(self, before_us: int, limit: int) -> int:
        await self._enter()
        old = sorted(
            (r.updated_us, r.id)
            for r in self._rows.values()
            if r.state in TERMINAL and r.updated_us < before_us
        )[: max(limit, 0)]
        for _, iid in old:
            del self._rows[iid]
        history = self.db["history"]
        attempts = sorted(
            (a.finished_us, iid, n)
            for iid, rows in history.items()
            for n, a in enumerate(rows)
            if a.finished_us < before_us
        )[: max(limit, 0)]
        for _, iid, n in sorted(attempts, key=lambda x: -x[2]):  # last first: keep positions
            del history[iid][n]
            if not history[iid]:
                del history[iid]
        return len(old) + len(attempts)

    # -- schedules: ScheduleMethods runs each operation in a transaction of ours ------------

    async def _run(
        self,
        now_us: int,
        fn: Callable[[ScheduleTx], T],
        *,
        write: bool = True,
    ) -> T:
        await self._enter()
        return fn(_Tx(self, now_us))


class _Tx:
    """The schedule primitives (:class:`~tickwork.stores.ScheduleTx`) over the dicts."""

    def __init__(self, store: DictStore, now_us: int) -> None:
        self._s = store
        self._rows = store._rows
        self._db = store.db
        self._now = now_us

    def load(self, ids: Sequence[str], *, lock: bool = True) -> dict[str, Schedule]:
        return {sid: self._db["schedules"][sid] for sid in ids if sid in self._db["schedules"]}

    def page(self, limit: int, after_id: str | None) -> builtins.list[Schedule]:
        table = self._db["schedules"]
        return [table[k] for k in sorted(table) if after_id is None or k > after_id][:limit]

    def save(self, schedules: Sequence[Schedule]) -> None:
        for s in schedules:
            self._db["schedules"][s.id] = s

    def delete(self, schedule_id: str) -> None:
        self._db["schedules"].pop(schedule_id, None)
        self._db["slots"].pop(schedule_id, None)

    def insert(self, rows: Sequence[NewRow]) -> None:
        taken = {(r.schedule_id, r.fire_at_us) for r in self._rows.values()}
        for row in rows:
            if (row.schedule_id, row.fire_at_us) not in taken:
                self._s._new(row, self._now)

    def _occurrences(self, schedule_id: str) -> builtins.list[Instance]:
        return [
            r
            for r in self._rows.values()
            if r.schedule_id == schedule_id and r.fire_at_us is not None
        ]

    def live(self, schedule_id: str) -> builtins.list[LiveRow]:
        rows = [r for r in self._occurrences(schedule_id) if not r.state.terminal]
        return sorted(
            (LiveRow(r.id, r.state, r.fire_at_us, r.run_at_us) for r in rows),  # type: ignore[arg-type]
            key=lambda r: (r.fire_us, r.id),
        )

    def end(self, items: Sequence[tuple[int, str]], event: Event, *, detach: bool) -> None:
        for iid, reason in items:
            row = self._rows.get(iid)
            state = None if row is None else lookup(row.state, event)
            if row is None or state is None:
                continue
            self._s._put(
                attrs.evolve(
                    row,
                    state=state,
                    error=reason,
                    claim_token=None,
                    lease_until_us=None,
                    fire_at_us=None if detach else row.fire_at_us,
                    updated_us=self._now,
                )
            )

    def detach(self, ids: Sequence[int], error: str) -> None:
        for iid in ids:
            row = self._rows.get(iid)
            if row is not None and row.state in HELD:
                self._s._put(attrs.evolve(row, fire_at_us=None, error=error, updated_us=self._now))

    def info(self, ids: Sequence[int]) -> dict[int, OccurrenceInfo]:
        out = {}
        for iid in ids:
            row = self._rows.get(iid)
            if row is not None and row.schedule_id is not None:
                held = row.state in HELD
                out[iid] = OccurrenceInfo(
                    iid,
                    row.schedule_id,
                    row.fire_at_us,
                    row.run_at_us,
                    row.error,
                    row.owner if held else None,
                    row.claim_token if held else None,
                )
        return out

    def slots(self, schedule_ids: Sequence[str]) -> dict[str, Slot]:
        out = {}
        for sid in schedule_ids:
            if sid not in self._db["schedules"]:
                continue
            iid, token = self._db["slots"].get(sid, (None, None))
            row = None if iid is None else self._rows.get(iid)
            if row is None:
                out[sid] = Slot(iid, token)
            else:
                out[sid] = Slot(iid, token, row.state, row.owner, row.claim_token, row.fire_at_us)
        return out

    def older(
        self, items: Sequence[tuple[str, int, str | None]], now_us: int
    ) -> dict[str, InFlight]:
        out = {}
        for sid, fire_us, owner in items:
            held = [
                r
                for r in self._occurrences(sid)
                if r.state in HELD
                and r.fire_at_us is not None
                and r.fire_at_us < fire_us
                and r.run_at_us <= now_us
                and r.owner != owner
            ]
            if held:
                first = min(held, key=lambda r: (r.fire_at_us, r.id))
                out[sid] = InFlight(first.id, first.owner, first.fire_at_us, waiting=True)
        return out

    def take(self, items: Sequence[tuple[str, int, int | None]]) -> None:
        for sid, iid, token in items:
            self._db["slots"][sid] = (iid, token)
