"""The schedule operations of every store, written once over a few primitives.

A store provides a :class:`ScheduleTx`: primitive reads and writes of the schedules
table and of occurrence rows, valid inside one of its transactions (a MemoryStore call,
a SQLite ``BEGIN IMMEDIATE``, a PostgreSQL transaction in which ``load`` locks the
schedule rows). The functions below decide what to write with the pure planner
(:mod:`tickwork.schedules.plan`), so the three stores cannot disagree.

Invariants they keep:

* A schedule that is neither paused nor ended has its *head* (the occurrence at
  ``last_fire_us``) stored; the occurrence after the head is written in the transaction
  that claims the head (:func:`after_claim`), insert-or-ignore on ``(schedule_id,
  fire_at)``, so two claimers can never write it twice.
* Removing or replacing a schedule *detaches* its unfinished occurrences (``fire_at`` set
  to NULL, the reason in ``error``): PENDING ones end ABORTED at once, held ones are
  recorded ABORTED by their node when they come due. Detached rows free their fire
  times, so a re-added schedule can use them again.
* A schedule whose overlap policy is not ``allow`` has at most one *admitted occurrence*
  cluster-wide: see :mod:`tickwork.stores._schedule_admission`. The row form of a
  schedule in the SQL stores is :mod:`tickwork.stores._schedule_rows`'.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol, final

import attrs

from tickwork.errors import InvalidArgument
from tickwork.model import Instance, NewRow
from tickwork.schedules.plan import (
    PAUSED,
    REMOVED,
    REPLACED,
    InFlight,
    Occurrence,
    OccurrenceInfo,
    Plan,
    Slot,
    claim_plan,
    first_plan,
)
from tickwork.schedules.schedule import (
    Schedule,
    ScheduleWrite,
)
from tickwork.state import Event, State

__all__ = [
    "LiveRow",
    "ScheduleTx",
    "add",
    "after_abort",
    "after_claim",
    "pause",
    "remove",
    "resume",
]


@final
@attrs.frozen
class LiveRow:
    """An occurrence row still attached to its schedule and not ended."""

    id: int
    state: State
    fire_us: int
    run_us: int


class ScheduleTx(Protocol):
    """A store's primitives for schedules, inside one of its transactions."""

    def load(self, ids: Sequence[str], *, lock: bool = True) -> dict[str, Schedule]:
        """The stored schedules with these ids; ``lock``: held until the transaction ends."""
        ...

    def page(self, limit: int, after_id: str | None) -> builtins.list[Schedule]:
        """Schedules in id order, after ``after_id``."""
        ...

    def save(self, schedules: Sequence[Schedule]) -> None:
        """Insert or update schedules (one statement, however many)."""
        ...

    def delete(self, schedule_id: str) -> None:
        """Delete one schedule (its occurrence rows stay)."""
        ...

    def insert(self, rows: Sequence[NewRow]) -> None:
        """Insert occurrence rows; a row whose ``(schedule_id, fire_at)`` exists is skipped."""
        ...

    def live(self, schedule_id: str) -> builtins.list[LiveRow]:
        """The schedule's attached rows that are PENDING, CLAIMED or RUNNING."""
        ...

    def end(self, items: Sequence[tuple[int, str]], event: Event, *, detach: bool) -> None:
        """Apply ``event`` (MISFIRE, SKIP_LATE or DETACH) to PENDING rows, or to rows this
        transaction claimed: they end MISSED or
        ABORTED) with the reason; ``detach`` also clears ``fire_at``."""
        ...

    def detach(self, ids: Sequence[int], error: str) -> None:
        """Clear ``fire_at`` of held rows and note ``error``: their node records them at
        due time (see :func:`tickwork.schedules.plan.check`)."""
        ...

    def info(self, ids: Sequence[int]) -> dict[int, OccurrenceInfo]:
        """What :func:`tickwork.schedules.plan.check` needs of these rows."""
        ...

    def slots(self, schedule_ids: Sequence[str]) -> dict[str, Slot]:
        """Lock these schedules until the transaction ends, then read each one's admitted
        occurrence and that instance row as it is now (read after the lock is granted, so
        what the previous lock holder wrote is seen). A missing schedule is left out."""
        ...

    def older(
        self, items: Sequence[tuple[str, int, str | None]], now_us: int
    ) -> dict[str, InFlight]:
        """For each ``(schedule id, fire time, owner)``: the schedule's CLAIMED or RUNNING
        occurrence with the earliest fire time before that one, due by ``now_us`` and held
        by another owner, if any (``waiting=True``)."""
        ...

    def take(self, items: Sequence[tuple[str, int, int | None]]) -> None:
        """Record ``(schedule id, instance id, claim token)``: the schedule's admitted
        occurrence (only for schedules locked by :meth:`slots` in this transaction)."""
        ...


def _apply(tx: ScheduleTx, s: Schedule, plan: Plan, now_us: int) -> Schedule:
    """Write ``plan`` for ``s`` on behalf of the API (a first plan ends nothing)."""
    if plan.end:
        tx.end(plan.end, Event.SKIP_LATE, detach=False)
    if plan.insert:
        tx.insert(plan.insert)
    new = attrs.evolve(s, last_fire_us=plan.last_fire_us, ended=plan.ended, updated_us=now_us)
    tx.save([new])
    return new


def _detach_all(tx: ScheduleTx, schedule_id: str, reason: str) -> None:
    live = tx.live(schedule_id)
    pending = [(r.id, reason) for r in live if r.state is State.PENDING]
    if pending:
        tx.end(pending, Event.DETACH, detach=True)
    held = [r.id for r in live if r.state is not State.PENDING]
    if held:
        tx.detach(held, reason)


def add(tx: ScheduleTx, s: Schedule, now_us: int, *, replace: bool) -> ScheduleWrite:
    """Store a new schedule and its first occurrence; idempotent for an equal definition.

    Raises:
        InvalidArgument: a schedule with this id and another definition exists, and
            ``replace`` is False.
    """
    old = tx.load([s.id]).get(s.id)
    change = "created"
    created = now_us
    if old is not None:
        if old.definition() == s.definition():
            return ScheduleWrite(old, "unchanged")
        if not replace:
            fields = ", ".join(old.differences(s))
            raise InvalidArgument(
                f"schedule {s.id!r} already exists with a different {fields}; pass "
                "replace=True (CLI: --replace) to replace it (its pending occurrences are "
                "aborted), or use another schedule id"
            )
        _detach_all(tx, s.id, REPLACED)
        change, created = "replaced", old.created_us
    s = attrs.evolve(s, last_fire_us=None, ended=False, created_us=created, updated_us=now_us)
    if s.paused:
        tx.save([s])
        return ScheduleWrite(s, change)
    plan = first_plan(s, now_us)
    return ScheduleWrite(_apply(tx, s, plan, now_us), change, plan.next_run_us)


def pause(tx: ScheduleTx, schedule_id: str, now_us: int) -> Schedule | None:
    """Mark a schedule paused; None if there is none.

    Nothing more is written for it: claims stop writing next occurrences, and an
    occurrence that comes due while it is paused is recorded MISSED by the node.
    """
    s = tx.load([schedule_id]).get(schedule_id)
    if s is None or s.paused:
        return s
    s = attrs.evolve(s, paused=True, updated_us=now_us)
    tx.save([s])
    return s


def resume(tx: ScheduleTx, schedule_id: str, now_us: int) -> ScheduleWrite | None:
    """Unpause a schedule and make sure its next occurrence exists; None if there is none.

    Occurrences still PENDING from before the pause and already late are recorded MISSED
    (they came due while it was paused); the next one after now is written unless an
    upcoming one is still pending. Also repairs an unpaused schedule whose head is gone.
    """
    s = tx.load([schedule_id]).get(schedule_id)
    if s is None:
        return None
    paused = s.paused
    s = attrs.evolve(s, paused=False, updated_us=now_us)
    if s.ended:
        tx.save([s])
        return ScheduleWrite(s, "resumed" if paused else "running")
    upcoming = [r for r in tx.live(s.id) if r.state is State.PENDING]
    if paused:  # what came due during the pause is not caught up (misfire is for downtime)
        threshold = now_us - s.grace_us
        stale = [r for r in upcoming if r.run_us < threshold]
        if stale:
            tx.end([(r.id, PAUSED) for r in stale], Event.SKIP_LATE, detach=False)
            upcoming = [r for r in upcoming if r not in stale]
    change = "resumed" if paused else "running"
    if any(r.fire_us == s.last_fire_us for r in upcoming):
        tx.save([s])
        return ScheduleWrite(s, change)
    plan = first_plan(s, now_us)
    return ScheduleWrite(_apply(tx, s, plan, now_us), change, plan.next_run_us)


def remove(tx: ScheduleTx, schedule_id: str, now_us: int) -> bool:  # noqa: ARG001
    """Delete a schedule: PENDING occurrences end ABORTED, held ones are recorded ABORTED
    by their node at due time, a running one finishes. False if there was none."""
    if schedule_id not in tx.load([schedule_id]):
        return False
    _detach_all(tx, schedule_id, REMOVED)
    tx.delete(schedule_id)
    return True


def _claim_plan(tx: ScheduleTx, s: Schedule, rows: list[Instance], now_us: int) -> Plan | None:
    """The plan for one schedule's claimed occurrences; None when there is nothing to do
    (neither its head nor a late one among them)."""
    threshold = now_us - s.grace_us
    mine = [Occurrence(i.id, i.fire_at_us or 0, i.run_at_us, claimed=True) for i in rows]
    late = any(o.run_us < threshold for o in mine)
    if not late and all(o.fire_us != s.last_fire_us for o in mine):
        return None
    pending: list[Occurrence] = []
    if late:  # a catch-up decides about all of the schedule's late occurrences at once
        taken = {o.id for o in mine}
        pending = [
            Occurrence(r.id, r.fire_us, r.run_us, claimed=False)
            for r in tx.live(s.id)
            if r.state is State.PENDING and r.run_us < threshold and r.id not in taken
        ]
    return claim_plan(s, mine, pending, now_us)


def after_claim(tx: ScheduleTx, claimed: list[Instance], now_us: int) -> list[Instance]:
    """In the claim's transaction: write what the claimed occurrences call for.

    For each schedule whose head was claimed, the next occurrence; for each schedule with
    late occurrences, the misfire policy's rows. Returns the claimed instances that still
    run (those the policy recorded MISSED are left out).
    """
    by_schedule: dict[str, list[Instance]] = {}
    for inst in claimed:
        if inst.schedule_id is not None and inst.fire_at_us is not None:
            by_schedule.setdefault(inst.schedule_id, []).append(inst)
    if not by_schedule:
        return claimed
    schedules = tx.load(sorted(by_schedule))
    # Written together for every schedule of the batch: a claim of 5,000 occurrences costs
    # three statements more, not three per schedule.
    ends: list[tuple[int, str]] = []
    inserts: list[NewRow] = []
    advanced: list[Schedule] = []
    for sid, rows in by_schedule.items():
        s = schedules.get(sid)
        if s is None or s.paused:
            continue  # the node records these at due time (check)
        plan = _claim_plan(tx, s, rows, now_us)
        if plan is None:
            continue
        ends += plan.end
        inserts += plan.insert
        advanced.append(
            attrs.evolve(s, last_fire_us=plan.last_fire_us, ended=plan.ended, updated_us=now_us)
        )
    if ends:
        tx.end(ends, Event.MISFIRE, detach=False)
    if inserts:
        tx.insert(inserts)
    if advanced:
        tx.save(advanced)
    gone = {iid for iid, _ in ends}
    return [i for i in claimed if i.id not in gone] if gone else claimed


def after_abort(tx: ScheduleTx, schedule_id: str, fire_us: int, now_us: int) -> int | None:
    """A user aborted the PENDING occurrence at ``fire_us``: if it was its schedule's
    head, write the next one (aborting one occurrence does not stop the schedule).
    Returns the new occurrence's due time, if any."""
    s = tx.load([schedule_id]).get(schedule_id)
    if s is None or s.paused or s.ended or s.last_fire_us != fire_us:
        return None
    plan = first_plan(s, now_us)
    _apply(tx, s, plan, now_us)
    return plan.next_run_us
