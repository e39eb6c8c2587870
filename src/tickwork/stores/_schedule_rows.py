"""The row forms of a schedule and of its slot, shared by the SQL stores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tickwork.notify import notify_from_json, notify_to_json
from tickwork.schedules.plan import Slot
from tickwork.schedules.schedule import (
    Misfire,
    Overlap,
    Schedule,
    trigger_fields,
    trigger_from_fields,
)
from tickwork.state import State

__all__ = ["SCHEDULE_COLUMNS", "schedule_from_row", "schedule_row", "slots_from_rows"]


#: The columns of the schedules table, in the order of :func:`schedule_row`.
SCHEDULE_COLUMNS = (
    "id, task, trigger_kind, cron_expr, cron_tz, every_us, interval_start_us, params, "
    "start_at_us, end_at_us, jitter_us, misfire, grace_us, catchup_limit, overlap, paused, "
    "last_fire_us, ended, created_us, updated_us, notify"
)


def schedule_row(s: Schedule) -> tuple[object, ...]:
    """``s`` as a row of :data:`SCHEDULE_COLUMNS`."""
    return (
        s.id, s.task, *trigger_fields(s.trigger), s.params, s.start_at_us, s.end_at_us,
        s.jitter_us, s.misfire.value, s.grace_us, s.catchup_limit, s.overlap.value,
        s.paused, s.last_fire_us, s.ended, s.created_us, s.updated_us,
        None if s.notify is None else notify_to_json(s.notify),
    )  # fmt: skip


def schedule_from_row(r: Sequence[Any]) -> Schedule:
    """A row selected as :data:`SCHEDULE_COLUMNS` as a Schedule."""
    return Schedule(
        id=r[0],
        task=r[1],
        trigger=trigger_from_fields((r[2], r[3], r[4], r[5], r[6])),
        params=bytes(r[7]),
        start_at_us=r[8],
        end_at_us=r[9],
        jitter_us=r[10],
        misfire=Misfire(r[11]),
        grace_us=r[12],
        catchup_limit=r[13],
        overlap=Overlap(r[14]),
        paused=bool(r[15]),
        last_fire_us=r[16],
        ended=bool(r[17]),
        created_us=r[18],
        updated_us=r[19],
        notify=None if r[20] is None else notify_from_json(r[20]),
    )


def slots_from_rows(
    found: Sequence[Sequence[Any]], holders: Callable[[list[int]], Iterable[Sequence[Any]]]
) -> dict[str, Slot]:
    """Each schedule's :class:`Slot` from its ``(schedule id, admitted instance id, token)``
    rows; ``holders(ids)`` reads those instances' ``(id, state, owner, claim token, fire
    time)`` rows (an instance whose row is gone gives a slot with no state)."""
    held = [r[1] for r in found if r[1] is not None]
    rows = {r[0]: r for r in holders(held)} if held else {}
    out = {}
    for sid, iid, token in found:
        row = rows.get(iid)
        if row is None:
            out[sid] = Slot(iid, token)
        else:
            out[sid] = Slot(iid, token, State(row[1]), row[2], row[3], row[4])
    return out
