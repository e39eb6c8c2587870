"""Triggers: pure rules that say when a schedule fires next.

A trigger answers one question, ``next_after(dt)``: the first fire time strictly after
``dt``, or None when there is none. It holds no state and does no I/O, so a schedule
can ask it again after a crash and get the same answer. Two triggers are equal when
they describe the same rule, which makes ``describe()`` usable as a schedule's stored
definition.

- :class:`Cron` - a cron expression read in an IANA time zone, with Vixie cron's
  daylight-saving rules (see ``docs/schedules.md``).
- :class:`Interval` - a fixed period of elapsed time.
- :func:`jitter_us` - a deterministic per-occurrence delay for spreading load.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Protocol, final
from zoneinfo import ZoneInfo

import attrs

from tickwork._time import check_duration, from_us, td_us, to_us
from tickwork.errors import InvalidArgument
from tickwork.schedules import cron as _cron
from tickwork.schedules import dst as _dst

__all__ = ["Cron", "Interval", "Trigger", "jitter_us"]


class Trigger(Protocol):
    """What the scheduler needs of a recurring rule."""

    @property
    def is_fixed_time(self) -> bool:
        """True if the rule names wall-clock times that DST can skip or repeat."""
        ...

    def next_after(self, dt: datetime) -> datetime | None:
        """The first fire time strictly after the aware ``dt``, or None."""
        ...

    def next_after_us(self, after_us: int) -> int | None:
        """:meth:`next_after` in UTC microseconds since the epoch, without datetimes."""
        ...

    def describe(self) -> str:
        """A stable, human-readable text that is equal for equal rules."""
        ...


def _canonical_expr(expr: object) -> str:
    return _cron.parse(expr).text


def _check_zone(_instance: object, _attribute: object, value: str) -> None:
    _dst.load_zone(value)


@final
@attrs.frozen
class Cron:
    """Fires when the local time in ``timezone`` matches the cron expression ``expr``.

    ``expr`` has 5 fields (``min hour day month weekday``), 6 fields with a leading
    seconds field, or is one of ``@yearly @annually @monthly @weekly @daily @midnight
    @hourly``. Names (``JAN``, ``MON``), ranges, steps, lists, ``L``/``LW`` in the day
    field and ``D#K``/``DL`` in the weekday field are accepted; day-of-month and
    day-of-week combine with OR unless one of them starts with ``*`` (as in Vixie cron).
    ``expr`` is stored canonically (single spaces, names upper-case), so equal rules
    compare equal.

    Across DST changes it behaves as Vixie cron does: a *fixed-time* expression (neither
    the minute nor the hour field starts with ``*``, e.g. ``30 2 * * *`` or ``@daily``)
    fires a repeated local time once, at its first occurrence, and fires once at the end
    of a spring-forward gap for any of its times the gap skipped. A *wildcard* expression
    (``0 * * * *``, ``@hourly``, ``*/15 * * * *``) follows real time: it fires in both
    passes of a repeated hour and not at all for skipped local times.

    Raises:
        InvalidArgument: a malformed or never-firing expression, or an unknown zone.
    """

    expr: str = attrs.field(converter=_canonical_expr)
    timezone: str = attrs.field(default="UTC", validator=_check_zone)
    _spec: _cron.CronSpec = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_spec", _cron.parse(self.expr))

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def is_fixed_time(self) -> bool:
        """Vixie cron's fixed-time job: neither minute nor hour field starts with ``*``."""
        return self._spec.fixed_time

    def next_after_us(self, after_us: int) -> int | None:
        """The first fire time strictly after ``after_us`` (UTC microseconds), or None.

        None means the expression matches no time within cronsim's 50-year search
        (e.g. ``0 0 29 2 MON`` matching nothing), or the search left years 1-9999.
        """
        fields = self._spec.fields
        return _dst.next_fire(
            self.timezone,
            after_us,
            lambda wall_us: _cron.first_match(fields, wall_us),
            fixed_time=self._spec.fixed_time,
        )

    def next_after(self, dt: datetime) -> datetime | None:
        """The first fire time strictly after ``dt``, in the schedule's zone, or None.

        Raises:
            InvalidArgument: ``dt`` is naive or not a datetime.
        """
        fire = self.next_after_us(to_us(dt, what="cron next_after time"))
        return None if fire is None else from_us(fire).astimezone(self.zone)

    def describe(self) -> str:
        """``cron '<expr>' in <zone>``: stable, and equal for equal triggers."""
        return f"cron {self.expr!r} in {self.timezone}"


def _check_every(_instance: object, _attribute: object, value: timedelta) -> None:
    if not isinstance(value, timedelta):
        raise InvalidArgument(f"interval every must be a timedelta, got {type(value).__name__}")
    if value <= timedelta(0):
        raise InvalidArgument(f"interval every must be positive, got {value!r}")
    check_duration(value, what="interval every")


def _utc_start(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return from_us(to_us(value, what="interval start"))


@final
@attrs.frozen
class Interval:
    """Fires every ``every`` of elapsed time, at ``start + k * every`` for k = 0, 1, 2 ...

    The arithmetic is in real (UTC) time: ``Interval(timedelta(days=1), start)`` keeps
    24 hours between fires, so across a DST change it moves by an hour on the local
    clock; use :class:`Cron` for "every day at 09:00 local".

    Without ``start`` the fires are anchored at the Unix epoch (1970-01-01T00:00Z), so
    they fall on round UTC times (``every=timedelta(hours=1)`` fires at each full UTC
    hour, ``minutes=15`` at :00, :15, :30, :45) and every node and every restart agrees
    on them without storing an anchor. With ``start`` the first fire is ``start`` itself
    and none is earlier. ``start`` is kept in UTC, and fire times are returned in UTC.

    Raises:
        InvalidArgument: ``every`` is not a positive timedelta, or ``start`` is naive.
    """

    every: timedelta = attrs.field(validator=_check_every)
    start: datetime | None = attrs.field(default=None, converter=_utc_start)

    @property
    def is_fixed_time(self) -> bool:
        """Always False: an interval counts elapsed time, which DST does not change."""
        return False

    def next_after_us(self, after_us: int) -> int:
        """The first fire time strictly after ``after_us`` (UTC microseconds); never None."""
        every = td_us(self.every)
        if self.start is None:
            anchor = 0
        else:
            anchor = to_us(self.start)
            if after_us < anchor:
                return anchor
        return anchor + ((after_us - anchor) // every + 1) * every

    def next_after(self, dt: datetime) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC; None only past year 9999.

        Raises:
            InvalidArgument: ``dt`` is naive or not a datetime.
        """
        fire = self.next_after_us(to_us(dt, what="interval next_after time"))
        try:
            return from_us(fire)
        except OverflowError:
            return None

    def describe(self) -> str:
        """``every <N>s from <ISO start>``: stable, and equal for equal triggers."""
        every = td_us(self.every)
        seconds = f"{every // 1_000_000}" if every % 1_000_000 == 0 else f"{every / 1e6:.6f}"
        start = (self.start or datetime(1970, 1, 1, tzinfo=UTC)).isoformat()
        return f"every {seconds}s from {start}"


def jitter_us(schedule_id: str, fire_at_us: int, jitter: int) -> int:
    """A delay in ``[0, jitter)`` microseconds, the same for the same schedule and fire time.

    It comes from a BLAKE2b hash of ``(schedule_id, fire_at_us)``, so every node and every
    restart computes the same delay for one occurrence, while different schedules that
    share a fire time spread over the window.

    Raises:
        InvalidArgument: ``jitter`` is negative.
    """
    if jitter < 0:
        raise InvalidArgument(f"jitter must be >= 0 microseconds, got {jitter}")
    if jitter == 0:
        return 0
    digest = hashlib.blake2b(
        f"{schedule_id}\x00{fire_at_us}".encode(), digest_size=8, person=b"tickwork-jitter"
    ).digest()
    # Multiply-shift maps 64 uniform bits onto [0, jitter) without modulo bias.
    return (int.from_bytes(digest, "big") * jitter) >> 64
