"""The materialisation planner: which occurrence rows a schedule needs, and when.

Pure functions of a :class:`~tickwork.schedules.schedule.Schedule`, the occurrence rows that
exist, and ``now``; the three stores run them inside their own transactions
(:mod:`tickwork.stores._schedule_ops`), so every store writes the same rows.

* :func:`first_plan` - the next occurrence after now (``add_schedule``, ``resume``).
* :func:`claim_plan` - when occurrences of a schedule are claimed: if its latest
  occurrence (the *head*) is among them, the following one is written in the same
  transaction; if some are late (due more than ``grace`` before now), the misfire
  policy decides which late ones run and which are recorded MISSED.
* :func:`check` - at due time, on the node: may this occurrence run, and under which
  overlap policy?
* :func:`in_flight` - at due time, for a node about to start an occurrence whose overlap
  policy is not ``allow``: does another node run an occurrence of the same schedule (the
  schedule's *admitted occurrence*, see :class:`Slot`)?

Every skipped occurrence becomes a MISSED row with the reason; a catch-up writes at most
:data:`MISSED_ROWS_LIMIT` of them one by one, then one summary row for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs

from tickwork._time import from_us, td_us
from tickwork.model import NewRow
from tickwork.schedules.schedule import Misfire, Overlap, Schedule
from tickwork.schedules.triggers import Interval, jitter_us
from tickwork.state import State

__all__ = [
    "MISSED_ROWS_LIMIT",
    "PAUSED",
    "REMOVED",
    "REPLACED",
    "InFlight",
    "Occurrence",
    "OccurrenceCheck",
    "OccurrenceInfo",
    "Plan",
    "Slot",
    "check",
    "claim_plan",
    "due_at",
    "first_plan",
    "in_flight",
    "iso",
]

#: MISSED rows one catch-up writes one by one (beyond: one summary row).
MISSED_ROWS_LIMIT: Final = 100

REMOVED: Final = "schedule removed before this occurrence ran"
REPLACED: Final = "schedule replaced (add_schedule replace=True) before this occurrence ran"
PAUSED: Final = "schedule paused when this occurrence came due"


@final
@attrs.frozen
class Occurrence:
    """An existing occurrence row: claimed by this call, or still PENDING."""

    id: int
    fire_us: int
    run_us: int
    claimed: bool


@final
@attrs.frozen
class Plan:
    """What to write for one schedule.

    ``insert``: new occurrence rows (PENDING to run, MISSED to record a skip), written
    insert-or-ignore on ``(schedule_id, fire_at)``. ``end``: existing rows (claimed now,
    or PENDING) to make MISSED, with the reason. ``last_fire_us``/``ended``: the
    schedule's new head and whether its trigger has run out.
    """

    insert: list[NewRow]
    end: list[tuple[int, str]]
    last_fire_us: int | None
    ended: bool

    @property
    def next_run_us(self) -> int | None:
        """The earliest due time among the PENDING rows to insert."""
        runs = [r.run_at_us for r in self.insert if r.state is State.PENDING]
        return min(runs) if runs else None


def due_at(s: Schedule, fire_us: int) -> int:
    """When the occurrence at ``fire_us`` is due: the fire time plus its jitter."""
    return fire_us + jitter_us(s.id, fire_us, s.jitter_us)


def _row(
    s: Schedule, fire_us: int, state: State = State.PENDING, error: str | None = None
) -> NewRow:
    return NewRow(
        task=s.task,
        run_at_us=due_at(s, fire_us),
        params=s.params,
        schedule_id=s.id,
        fire_at_us=fire_us,
        state=state,
        error=error,
    )


def first_plan(s: Schedule, now_us: int) -> Plan:
    """The first occurrence after ``now_us`` (and after the current head, if any)."""
    after = now_us if s.last_fire_us is None else max(now_us, s.last_fire_us)
    fire = s.next_fire_after(after)
    if fire is None:
        return Plan([], [], s.last_fire_us, ended=True)
    return Plan([_row(s, fire)], [], fire, ended=False)


def iso(us: int) -> str:
    """A UTC time as ISO 8601 with a ``Z`` (the form of every reason's times)."""
    return from_us(us).isoformat().replace("+00:00", "Z")


@attrs.define
class _Skipped:
    """Late fire times beyond the one-by-one bound: the first, how many (None: not
    counted), the last known."""

    first: int
    count: int | None
    last: int

    def add(self, count: int | None, last: int) -> None:
        self.count = None if self.count is None or count is None else self.count + count
        self.last = last


def _span(s: Schedule, first: int, until: int) -> tuple[int | None, int]:
    """Fire times in ``[first, until]`` (``first`` is one): how many and the last.

    Exact for an interval; a cron expression is not counted (None, and ``first``): that
    would cost one step per fire time.
    """
    if isinstance(s.trigger, Interval):
        every = td_us(s.trigger.every)
        n = (until - first) // every + 1
        return n, first + (n - 1) * every
    return None, first


def _late_after(
    s: Schedule, head: int, threshold: int, budget: int
) -> tuple[list[int], _Skipped | None, int | None]:
    """From the head on: the late fire times (at most ``budget``), a summary of the late
    ones beyond, and the first fire time that is not late (None: the trigger ran out)."""
    late: list[int] = []
    skipped: _Skipped | None = None
    fire = s.next_fire_after(head)
    while fire is not None and due_at(s, fire) < threshold:
        if len(late) < budget:
            late.append(fire)
            fire = s.next_fire_after(fire)
            continue
        # Past the bound: jump to where fire times may stop being late (jitter < J).
        target = threshold - s.jitter_us - 1
        if s.end_at_us is not None:
            target = min(target, s.end_at_us)
        if fire < target:
            count, last = _span(s, fire, target)
            after = target
        else:
            count, last, after = 1, fire, fire
        if skipped is None:
            skipped = _Skipped(fire, count, last)
        else:
            skipped.add(count, last)
        fire = s.next_fire_after(after)
    return late, skipped, fire


def _reason(s: Schedule, run_us: int, now_us: int, kept: int | None) -> str:
    base = (
        f"misfire={s.misfire.value}: due {iso(run_us)}, but no node ran it before "
        f"{iso(now_us)} (more than grace={s.grace} late)"
    )
    if s.misfire is Misfire.RUN_ONCE:
        if kept is None:
            return base + "; coalesced into the occurrence that ran on time"
        return base + f"; coalesced into the run of the occurrence of {iso(kept)}"
    if s.misfire is Misfire.RUN_ALL:
        return base + f"; beyond catchup_limit={s.catchup_limit}"
    return base


def _runs(
    s: Schedule, items: list[tuple[int, Occurrence | None]], late_rows: list[Occurrence]
) -> tuple[set[int], int | None]:
    """The misfire policy: which late fire times run, and the one run_once keeps."""
    if s.misfire is Misfire.RUN_ALL:
        return {fire for fire, _ in items[: s.catchup_limit]}, None
    if s.misfire is Misfire.RUN_ONCE:
        first = next((o for o in late_rows if o.claimed), None)
        if first is not None:
            return {first.fire_us}, first.fire_us
    return set(), None


def claim_plan(
    s: Schedule, claimed: Sequence[Occurrence], pending: Sequence[Occurrence], now_us: int
) -> Plan:
    """Rows to write when occurrences of ``s`` are claimed (see the module docstring).

    Args:
        claimed: this schedule's occurrences the claim took.
        pending: its late PENDING occurrences the claim did not take (a catch-up decides
            about all of its late occurrences at once).
    """
    threshold = now_us - s.grace_us
    existing = sorted(
        {o.id: o for o in [*claimed, *pending]}.values(), key=lambda o: (o.fire_us, o.id)
    )
    late_rows = [o for o in existing if o.run_us < threshold]
    head_here = any(o.fire_us == s.last_fire_us for o in existing)
    new_late: list[int] = []
    skipped: _Skipped | None = None
    upcoming: int | None = None
    ended = s.ended
    if head_here and not s.ended and s.last_fire_us is not None:
        budget = MISSED_ROWS_LIMIT + (s.catchup_limit if s.misfire is Misfire.RUN_ALL else 0)
        new_late, skipped, upcoming = _late_after(s, s.last_fire_us, threshold, budget)
        ended = upcoming is None
    items: list[tuple[int, Occurrence | None]] = sorted(
        [(o.fire_us, o) for o in late_rows] + [(f, None) for f in new_late],
        key=lambda item: item[0],
    )
    runs, kept = _runs(s, items, late_rows)
    insert: list[NewRow] = []
    end: list[tuple[int, str]] = []
    for fire, occ in items:
        if fire in runs:
            if occ is None:
                insert.append(_row(s, fire))
            continue
        run_us = due_at(s, fire) if occ is None else occ.run_us
        reason = _reason(s, run_us, now_us, kept)
        if occ is None:
            insert.append(_row(s, fire, State.MISSED, reason))
        else:
            end.append((occ.id, reason))
    if skipped is not None:
        more = "more" if skipped.count is None else str(skipped.count - 1)
        text = (
            f"misfire={s.misfire.value}: this and {more} later occurrences up to "
            f"{iso(skipped.last)} were missed (no node ran them before {iso(now_us)}); a "
            f"catch-up records at most {MISSED_ROWS_LIMIT} missed occurrences one by one"
        )
        insert.append(_row(s, skipped.first, State.MISSED, text))
    if upcoming is not None:
        insert.append(_row(s, upcoming))
    last = s.last_fire_us
    if insert:
        last = max(r.fire_at_us for r in insert if r.fire_at_us is not None)
    return Plan(insert, end, last, ended)


@final
@attrs.frozen
class OccurrenceInfo:
    """What a store knows of an occurrence row for :func:`check`.

    ``fire_us`` is None once the row was detached from its schedule (the schedule was
    removed or replaced); ``error`` then says why. ``owner`` and ``claim_token``: the
    node holding the row and its claim (None when it is not held).
    """

    id: int
    schedule_id: str
    fire_us: int | None
    run_us: int
    error: str | None
    owner: str | None = None
    claim_token: int | None = None


@final
@attrs.frozen
class InFlight:
    """An occurrence of the same schedule, held by another node, that goes first: ``id``,
    the ``node`` holding it, and its fire time.

    ``waiting`` False: it was admitted and has not ended (it runs). True: it is an older
    occurrence that came due and was not admitted yet (it waits for its turn, or is about
    to be checked); the oldest goes first.
    """

    id: int
    node: str | None
    fire_us: int | None
    waiting: bool = False


@final
@attrs.frozen
class Slot:
    """A schedule's *admitted occurrence* as stored, read under the schedule's row lock.

    ``instance_id`` and ``token``: the occurrence a node last admitted (recorded when it
    was about to start) and the claim token it held then; None if none was. ``state``,
    ``owner``, ``row_token`` and ``fire_us``: that instance row now (``state`` None when
    the row is gone). Nothing is written when the occurrence ends: the slot is free as
    soon as its row is no longer held under the claim it was admitted with.
    """

    instance_id: int | None
    token: int | None
    state: State | None = None
    owner: str | None = None
    row_token: int | None = None
    fire_us: int | None = None


def in_flight(slot: Slot | None, asker: OccurrenceInfo) -> InFlight | None:
    """The occurrence that keeps ``asker`` from starting now, if any.

    The slot's occurrence counts while its row is CLAIMED or RUNNING under the claim it
    was admitted with (so not after it ended, went back to PENDING for a retry or a
    give-back, or was taken over by another node after its lease lapsed) and it is held by
    *another* node: a node decides about its own occurrences itself (the Executor's
    overlap guard knows which of them still run, including one that ended moments ago
    whose outcome is not yet written).
    """
    if slot is None or slot.instance_id is None or slot.instance_id == asker.id:
        return None
    if slot.state not in (State.CLAIMED, State.RUNNING) or slot.row_token != slot.token:
        return None
    if slot.owner == asker.owner:
        return None
    return InFlight(slot.instance_id, slot.owner, slot.fire_us)


@final
@attrs.frozen
class OccurrenceCheck:
    """May an occurrence that came due run now (the Executor asks at due time)?

    When ``run`` is False, ``state`` (MISSED or ABORTED) and ``reason`` say how to record
    it. ``catchup`` marks a late occurrence that ``misfire="run_all"`` runs: it waits for
    the previous one of its schedule instead of being skipped by the overlap policy.
    ``in_flight``: for an occurrence the caller asked to admit, the occurrence of another
    node that still runs (it was not admitted); None when it was admitted or not asked.
    """

    id: int
    run: bool
    state: State | None = None
    reason: str | None = None
    overlap: Overlap = Overlap.ALLOW
    catchup: bool = False
    in_flight: InFlight | None = None
    #: the schedule's misfire policy: it decides about occurrences that come due together
    #: before the first of them started (a backlog, e.g. after a restart)
    misfire: Misfire = Misfire.RUN_ONCE


def check(
    instance_id: int, info: OccurrenceInfo | None, s: Schedule | None, now_us: int
) -> OccurrenceCheck:
    """The verdict on one occurrence at due time (see :class:`OccurrenceCheck`)."""
    if info is None:  # not stored any more: nothing to check it against
        return OccurrenceCheck(instance_id, run=True)
    if info.fire_us is None:
        reason = info.error or REMOVED
        return OccurrenceCheck(instance_id, run=False, state=State.ABORTED, reason=reason)
    if s is None:
        return OccurrenceCheck(instance_id, run=False, state=State.ABORTED, reason=REMOVED)
    if s.paused:
        return OccurrenceCheck(instance_id, run=False, state=State.MISSED, reason=PAUSED)
    catchup = s.misfire is Misfire.RUN_ALL and info.run_us < now_us - s.grace_us
    return OccurrenceCheck(
        instance_id, run=True, overlap=s.overlap, catchup=catchup, misfire=s.misfire
    )
