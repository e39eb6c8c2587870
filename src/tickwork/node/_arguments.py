"""Checks of the Scheduler's arguments, refused with ``InvalidArgument`` before anything
is stored (helpers of :class:`tickwork.Scheduler`'s methods)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from tickwork._time import to_us
from tickwork.errors import InvalidArgument
from tickwork.model import InstanceFilter, NewInstance, NewRow, check_params_size, validate_new
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.schedules.schedule import Schedule
    from tickwork.task import TaskRegistry

__all__ = ["check_limit", "check_state", "instance_filter", "new_rows", "schedule_allowed"]

#: schedule_many validates this many items between checkpoints (~0.5 ms on a slow machine:
#: a due run waits at most that long behind it; 500 made p99 lateness at 2,000/s ~3 ms)
_VALIDATE_SLICE = 100


async def new_rows(
    registry: TaskRegistry, instances: Iterable[NewInstance], max_params_bytes: int
) -> list[NewRow]:
    """Every item of ``schedule_many`` checked, as rows to store: one bad item refuses all."""
    rows = []
    known: set[str] = set()
    for k, new in enumerate(instances):
        if k and k % _VALIDATE_SLICE == 0:
            await trio.lowlevel.checkpoint()  # a big batch does not hold up due runs
        if not isinstance(new, NewInstance):
            raise InvalidArgument(f"schedule_many takes tickwork.NewInstance items, got {new!r}")
        if new.task not in known:
            registry.require(new.task)
            known.add(new.task)
        row = validate_new(new, max_params_bytes)
        check = registry.validators.get(row.task)
        if check is not None:
            check(row.params)
        rows.append(row)
    return rows


def schedule_allowed(registry: TaskRegistry, schedule: Schedule, max_params_bytes: int) -> None:
    """A new schedule's task is registered and accepts its params."""
    registry.require(schedule.task)
    check_params_size(len(schedule.params), max_params_bytes, "schedule params")
    check = registry.validators.get(schedule.task)
    if check is not None:
        check(schedule.params)


def check_state(state: object) -> None:
    if state is not None and not isinstance(state, State):
        raise InvalidArgument(f"state must be a tickwork.State, got {state!r}")


def check_limit(limit: object) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise InvalidArgument(f"limit must be an integer in 1..10000, got {limit!r}")


def instance_filter(
    *,
    before_id: object,
    schedule_id: object,
    due_after: datetime | None,
    due_before: datetime | None,
    ended_after: datetime | None,
    ended_before: datetime | None,
    upcoming: object,
) -> InstanceFilter:
    """``Scheduler.list``'s filters, checked."""
    if before_id is not None and (not isinstance(before_id, int) or isinstance(before_id, bool)):
        raise InvalidArgument(f"before_id must be an integer, got {before_id!r}")
    if schedule_id is not None and not isinstance(schedule_id, str):
        raise InvalidArgument(f"schedule_id must be a string, got {schedule_id!r}")
    where = InstanceFilter(
        schedule_id=schedule_id,
        due_from_us=None if due_after is None else to_us(due_after, what="due_after"),
        due_until_us=None if due_before is None else to_us(due_before, what="due_before"),
        ended_from_us=None if ended_after is None else to_us(ended_after, what="ended_after"),
        ended_until_us=None if ended_before is None else to_us(ended_before, what="ended_before"),
    )
    if upcoming is not None and not isinstance(upcoming, bool):
        raise InvalidArgument(f"upcoming must be True, False or None, got {upcoming!r}")
    return where
