"""The MemoryStore's claim life cycle: claim, start, finish, give back, renew, abort.

Every state these write comes from :func:`tickwork.state.apply` with the event the call
means for the row (see :mod:`tickwork.stores._rules`).
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

import attrs
import trio

from tickwork.model import AbortResult, Attempt, Finish, Instance
from tickwork.state import HELD, Event, State, apply
from tickwork.stores._rules import finish_event, finished_state, history_state
from tickwork.stores.memory._rows import MemoryRows, let_go

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["MemoryClaims"]


class MemoryClaims(MemoryRows):
    """The Store protocol's claim and outcome methods in memory (a base of MemoryStore)."""

    if TYPE_CHECKING:  # from MemoryScheduleMethods, the schedules' side of these calls

        def _after_claim(self, claimed: list[Instance], now_us: int) -> list[Instance]: ...

        def _after_abort(self, row: Instance, now_us: int) -> None: ...

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
            moved = f.run_at_us if target is State.PENDING else None  # a retry's new time
            run_at_us = row.run_at_us if moved is None else moved
            self._put(
                let_go(row, target, now_us, attempts=f.attempts, error=f.error, run_at_us=run_at_us)
            )
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

    async def abort_requests(self, owner: str) -> list[int]:
        """Ids held by ``owner`` with an abort requested."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return sorted(iid for iid in self._abort if iid in self._held.get(owner, ()))
