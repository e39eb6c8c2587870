"""What a schedule's overlap policy does with an occurrence that came due while another
of its occurrences is in flight: on this node (:func:`against_local`) or on another node
sharing the store (:func:`against_remote`). The bookkeeping of what is active and what
waits is :class:`~tickwork.actors.overlap.OverlapGuard`'s; these functions only decide,
appending to the schedule's waiting line, recording skips (``skip``) and cancelling
(``supersede``, or the other node's occurrence ids in ``aborts``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from tickwork.schedules.schedule import Overlap

if TYPE_CHECKING:
    from tickwork.model import Instance
    from tickwork.schedules.plan import InFlight, OccurrenceCheck

__all__ = ["against_local", "against_remote"]

Skip = Callable[["Instance", str], None]


def _newer(other: InFlight, inst: Instance) -> bool:
    """Is the other node's occurrence a later one of the schedule than ``inst``?"""
    if other.fire_us is not None and inst.fire_at_us is not None:
        return other.fire_us > inst.fire_at_us
    return other.id > inst.id


def _cancel_waiting(waiting: deque[Instance], newest: Instance, skip: Skip) -> None:
    """``cancel_previous``: the newest wins over every occurrence waiting before it."""
    while waiting:
        skip(waiting.popleft(), f"overlap=cancel_previous: superseded by occurrence {newest.id}")
    waiting.append(newest)


def against_local(
    inst: Instance,
    check: OccurrenceCheck | None,
    active: set[int],
    waiting: deque[Instance],
    *,
    skip: Skip,
    supersede: Callable[[int], None],
) -> None:
    """The policy against this node's own occurrences (``active``, or ``waiting`` here)."""
    overlap = Overlap.ALLOW if check is None else check.overlap
    if active:
        previous = min(active)
        why = f"occurrence {previous} of this schedule was still running"
    else:  # nothing runs here: the line waits for another node's occurrence
        why = f"occurrence {waiting[0].id} of this schedule still waited for the previous one"
    if check is not None and check.catchup:
        waiting.append(inst)
    elif overlap is Overlap.SKIP:
        skip(inst, f"overlap=skip: {why}")
    elif overlap is Overlap.QUEUE:
        if not waiting:
            waiting.append(inst)
        elif active:
            skip(
                inst,
                f"overlap=queue: occurrence {previous} was still running and "
                f"{waiting[0].id} already waited for it",
            )
        else:
            skip(inst, f"overlap=queue: {why}")
    else:  # CANCEL_PREVIOUS: the newest wins; it starts once the cancelled ones end
        _cancel_waiting(waiting, inst, skip)
        for iid in sorted(active):
            supersede(iid)


def against_remote(
    inst: Instance,
    check: OccurrenceCheck | None,
    other: InFlight,
    waiting: deque[Instance],
    aborts: list[int],
    *,
    skip: Skip,
    again: bool,
) -> None:
    """The policy against another node's occurrence of the schedule (``other``).

    ``again``: ``inst`` had already waited its turn here (it goes back to the front).
    """
    overlap = Overlap.ALLOW if check is None else check.overlap
    catchup = check is not None and check.catchup
    doing = "waiting to run" if other.waiting else "running"
    there = f"occurrence {other.id} of this schedule was still {doing} on node {other.node}"
    cancel = overlap is Overlap.CANCEL_PREVIOUS and not catchup
    if cancel and _newer(other, inst):
        skip(
            inst,
            f"overlap=cancel_previous: superseded by occurrence {other.id}, already "
            f"running on node {other.node}",
        )
    elif again:
        waiting.appendleft(inst)
        if cancel:
            aborts.append(other.id)  # again, in case the first request came too early
    elif catchup:
        waiting.append(inst)
    elif overlap is Overlap.SKIP:
        skip(inst, f"overlap=skip: {there}")
    elif overlap is Overlap.QUEUE:
        if other.waiting:  # the older one waits for the same turn: at most one waits
            skip(inst, f"overlap=queue: {there}")
        elif waiting:
            skip(inst, f"overlap=queue: {there} and {waiting[0].id} already waited")
        else:
            waiting.append(inst)
    else:  # CANCEL_PREVIOUS, the other one is older: cancel it, start when it ended
        _cancel_waiting(waiting, inst, skip)
        aborts.append(other.id)
