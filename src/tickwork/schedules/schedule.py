"""Recurring schedules, pure: the stored record, its policies, and checking a definition.

A :class:`Schedule` is a trigger (:class:`~tickwork.schedules.triggers.Cron` or
:class:`~tickwork.schedules.triggers.Interval`) plus what to run and the policies that decide what
happens to occurrences that come late (``misfire``) or while the previous one still runs
(``overlap``). The store keeps it in its own table; its occurrences are ordinary
instances carrying ``schedule_id`` and ``fire_at_us``. Which occurrence rows to write and
when is :mod:`tickwork.schedules.plan`'s business; this module does no I/O.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from datetime import datetime, timedelta
from typing import Final, TypeVar, final

import attrs

from tickwork._time import check_duration, from_us, td_us, to_us
from tickwork.errors import InvalidArgument
from tickwork.model import params_bytes
from tickwork.notify import Notify
from tickwork.schedules.triggers import Cron, Interval

__all__ = [
    "DEFAULT_CATCHUP_LIMIT",
    "DEFAULT_GRACE",
    "Misfire",
    "Overlap",
    "Schedule",
    "ScheduleWrite",
    "TriggerFields",
    "check_schedule_id",
    "default_schedule_id",
    "new_schedule",
    "trigger_fields",
    "trigger_from_fields",
]

#: Within this time after its due time an occurrence still counts as on time.
DEFAULT_GRACE: Final = timedelta(minutes=1)
#: ``misfire="run_all"`` runs at most this many missed occurrences per catch-up.
DEFAULT_CATCHUP_LIMIT: Final = 100
MAX_CATCHUP_LIMIT: Final = 100_000
_ID = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")


class Misfire(enum.Enum):
    """What a catch-up does with occurrences claimed more than ``grace`` after their time."""

    #: The first late occurrence runs; the other missed ones are recorded MISSED.
    RUN_ONCE = "run_once"
    #: Every missed occurrence runs, in order, up to ``catchup_limit``; the rest MISSED.
    RUN_ALL = "run_all"
    #: Every missed occurrence is recorded MISSED; the next future one is scheduled.
    SKIP = "skip"


class Overlap(enum.Enum):
    """What happens when an occurrence comes due while the previous one still runs."""

    #: Both run.
    ALLOW = "allow"
    #: The new one is recorded MISSED with the reason.
    SKIP = "skip"
    #: The new one runs once the previous one ends; at most one waits (another is MISSED).
    QUEUE = "queue"
    #: The running one is cancelled (ABORTED with the reason); the new one then runs.
    CANCEL_PREVIOUS = "cancel_previous"


E = TypeVar("E", "Misfire", "Overlap")


def _policy(kind: type[E], field: str, value: object) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(repr(m.value) for m in kind)
        raise InvalidArgument(f"{field} must be one of {accepted}, got {value!r}") from None


@final
@attrs.frozen
class Schedule:
    """A recurring schedule as stored: what ``get_schedule`` and ``list_schedules`` return.

    Times are UTC microseconds (``*_us``); the properties give aware datetimes and
    timedeltas. ``last_fire_us`` is the fire time of the latest occurrence written for
    it, which is the next one to fire while the schedule runs normally; ``ended`` is True
    once its trigger has no fire time left before ``end_at``.
    """

    id: str
    task: str
    trigger: Cron | Interval
    params: bytes = b""
    start_at_us: int | None = None
    end_at_us: int | None = None
    jitter_us: int = 0
    misfire: Misfire = Misfire.RUN_ONCE
    grace_us: int = td_us(DEFAULT_GRACE)
    catchup_limit: int = DEFAULT_CATCHUP_LIMIT
    overlap: Overlap = Overlap.SKIP
    paused: bool = False
    last_fire_us: int | None = None
    ended: bool = False
    created_us: int = 0
    updated_us: int = 0
    #: where to post notices of its occurrences (failed, missed, overdue); None: the
    #: task's own ``notify``, if any
    notify: Notify | None = None

    @property
    def start_at(self) -> datetime | None:
        """No fire time before it (None: from when the schedule was added)."""
        return None if self.start_at_us is None else from_us(self.start_at_us)

    @property
    def end_at(self) -> datetime | None:
        """No fire time after it (None: forever)."""
        return None if self.end_at_us is None else from_us(self.end_at_us)

    @property
    def jitter(self) -> timedelta:
        return timedelta(microseconds=self.jitter_us)

    @property
    def grace(self) -> timedelta:
        return timedelta(microseconds=self.grace_us)

    @property
    def last_fire_at(self) -> datetime | None:
        return None if self.last_fire_us is None else from_us(self.last_fire_us)

    @property
    def created_at(self) -> datetime:
        return from_us(self.created_us)

    @property
    def updated_at(self) -> datetime:
        return from_us(self.updated_us)

    def definition(self) -> tuple[object, ...]:
        """What ``add_schedule`` compares: everything a user defines, not the run state."""
        return (
            self.task,
            self.trigger,
            self.params,
            self.start_at_us,
            self.end_at_us,
            self.jitter_us,
            self.misfire,
            self.grace_us,
            self.catchup_limit,
            self.overlap,
            self.notify,
        )

    def differences(self, other: Schedule) -> list[str]:
        """The names of the definition fields in which ``other`` differs."""
        names = (
            "task", "trigger", "params", "start_at", "end_at", "jitter", "misfire",
            "grace", "catchup_limit", "overlap", "notify",
        )  # fmt: skip
        mine, theirs = self.definition(), other.definition()
        return [n for n, a, b in zip(names, mine, theirs, strict=True) if a != b]

    def next_fire_after(self, after_us: int) -> int | None:
        """The first fire time after ``after_us`` within ``start_at``/``end_at``, or None."""
        if self.start_at_us is not None:
            after_us = max(after_us, self.start_at_us - 1)
        fire = _next_after(self.trigger, after_us)
        if fire is None or (self.end_at_us is not None and fire > self.end_at_us):
            return None
        return fire


@final
@attrs.frozen
class ScheduleWrite:
    """What a store did for ``add_schedule`` / ``resume_schedule``.

    ``change`` is ``"created"``, ``"unchanged"``, ``"replaced"``, ``"resumed"`` or
    ``"running"`` (resume of a schedule that was not paused). ``next_run_us`` is the due
    time of the occurrence the call wrote, if it wrote one (the node wakes its Puller
    for it).
    """

    schedule: Schedule
    change: str
    next_run_us: int | None = None


def check_schedule_id(value: object) -> str:
    """A schedule id: 1-200 characters, no whitespace or control characters.

    Raises:
        InvalidArgument: anything else.
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(
            f"schedule_id must be 1-200 characters without spaces or control characters "
            f"(e.g. 'nightly-report'), got {value!r}"
        )
    return value


def default_schedule_id(task: str, trigger: Cron | Interval, params: bytes) -> str:
    """The id of a schedule added without one: derived from task, trigger and params, so
    adding the same schedule again is a no-op rather than a second schedule."""
    text = f"{task}\x00{trigger.describe()}\x00{params.hex()}"
    return "sched-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _optional_time(field: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{field} must be an aware datetime or None, got {value!r}")
    return to_us(value, what=field)


def _duration(field: str, value: object, *, default: timedelta) -> int:
    if value is None:
        return td_us(default)
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidArgument(f"{field} must be a timedelta >= 0 (or None), got {value!r}")
    return td_us(check_duration(value, what=field))


def new_schedule(
    task: str,
    trigger: object,
    *,
    params: object = b"",
    schedule_id: str | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    jitter: timedelta | None = None,
    misfire: Misfire | str = Misfire.RUN_ONCE,
    grace: timedelta | None = None,
    catchup_limit: int = DEFAULT_CATCHUP_LIMIT,
    overlap: Overlap | str = Overlap.SKIP,
    paused: bool = False,
    notify: Notify | None = None,
) -> Schedule:
    """Check an ``add_schedule`` call and build the :class:`Schedule` to store.

    Raises:
        InvalidArgument: the message names the field and the accepted forms.
    """
    if not isinstance(task, str) or not task:
        raise InvalidArgument(f"task must be a non-empty task name, got {task!r}")
    if not isinstance(trigger, Cron | Interval):
        raise InvalidArgument(
            "trigger must be tickwork.Cron('*/5 * * * *', 'Europe/Berlin') or "
            f"tickwork.Interval(timedelta(minutes=5)), got {trigger!r}"
        )
    packed = params_bytes(params)
    start_us = _optional_time("start_at", start_at)
    end_us = _optional_time("end_at", end_at)
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise InvalidArgument(
            f"end_at ({end_at}) must be after start_at ({start_at}); leave end_at None to "
            "run forever"
        )
    if (
        not isinstance(catchup_limit, int)
        or isinstance(catchup_limit, bool)
        or not 1 <= catchup_limit <= MAX_CATCHUP_LIMIT
    ):
        raise InvalidArgument(
            f"catchup_limit must be an integer from 1 to {MAX_CATCHUP_LIMIT}, got {catchup_limit!r}"
        )
    if not isinstance(paused, bool):
        raise InvalidArgument(f"paused must be True or False, got {paused!r}")
    if notify is not None and not isinstance(notify, Notify):
        raise InvalidArgument(f"notify must be a tickwork.Notify or None, got {notify!r}")
    sid = default_schedule_id(task, trigger, packed) if schedule_id is None else schedule_id
    return Schedule(
        id=check_schedule_id(sid),
        task=task,
        trigger=trigger,
        params=packed,
        start_at_us=start_us,
        end_at_us=end_us,
        jitter_us=_duration("jitter", jitter, default=timedelta(0)),
        misfire=_policy(Misfire, "misfire", misfire),
        grace_us=_duration("grace", grace, default=DEFAULT_GRACE),
        catchup_limit=catchup_limit,
        overlap=_policy(Overlap, "overlap", overlap),
        paused=paused,
        notify=notify,
    )


# -- storage form of a trigger ---------------------------------------------------------------

#: ``(kind, cron expr, cron zone, interval every_us, interval start_us)``: kind is
#: ``"cron"`` or ``"interval"``, and the other kind's fields are None.
TriggerFields = tuple[str, str | None, str | None, int | None, int | None]


def trigger_fields(trigger: Cron | Interval) -> TriggerFields:
    """A trigger as stored: Cron as (expression, zone), Interval as (every, start)."""
    if isinstance(trigger, Cron):
        return ("cron", trigger.expr, trigger.timezone, None, None)
    start = None if trigger.start is None else to_us(trigger.start)
    return ("interval", None, None, td_us(trigger.every), start)


def trigger_from_fields(fields: TriggerFields) -> Cron | Interval:
    """The trigger a store row describes (Cron objects are cached: parsing costs).

    Raises:
        ValueError: an unknown kind (a row written by a newer tickwork).
    """
    kind, expr, zone, every_us, start_us = fields
    if kind == "cron" and expr is not None and zone is not None:
        return _cron(expr, zone)
    if kind == "interval" and every_us is not None:
        return _interval(every_us, start_us)
    raise ValueError(f"unknown stored trigger {fields!r}")


@functools.lru_cache(maxsize=16_384)
def _next_after(trigger: Cron | Interval, after_us: int) -> int | None:
    """``trigger.next_after_us``, remembered: triggers are pure, and schedules that share
    an expression usually share their fire times too (every ``0 * * * *`` schedule asks
    the same question at each hour), so a claim of thousands of them computes it once."""
    return trigger.next_after_us(after_us)


@functools.lru_cache(maxsize=16_384)
def _cron(expr: str, zone: str) -> Cron:
    return Cron(expr, zone)


@functools.lru_cache(maxsize=4096)
def _interval(every_us: int, start_us: int | None) -> Interval:
    return Interval(
        timedelta(microseconds=every_us), None if start_us is None else from_us(start_us)
    )
