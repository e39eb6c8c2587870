"""UTC integer microseconds: the one time representation at the storage boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tickwork.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


#: The first and last instants tickwork stores: years 1 to 9999 in UTC, as ``datetime``.
MIN_US: int = _us(datetime.min.replace(tzinfo=UTC) - _EPOCH)
MAX_US: int = _us(datetime.max.replace(tzinfo=UTC) - _EPOCH)
#: The longest duration tickwork accepts (a window, lease, grace, timeout, interval ...):
#: the span of those years. Any stored time plus or minus it fits a signed 64-bit integer
#: of microseconds, which is what every store's columns hold.
MAX_DURATION: timedelta = datetime.max - datetime.min  # noqa: DTZ901 - a span, no zone


def to_us(dt: datetime, *, what: str = "time") -> int:
    """Convert an aware datetime to integer microseconds since the epoch (UTC).

    Raises:
        InvalidArgument: ``dt`` is naive, not a datetime, or outside years 1-9999 once
            converted to UTC (``9999-12-31T23:00-05:00`` is in year 10000 there).
    """
    if not isinstance(dt, datetime):
        raise InvalidArgument(f"{what} must be a datetime, got {type(dt).__name__}")
    tz = dt.tzinfo
    if tz is not UTC and (tz is None or tz.utcoffset(dt) is None):
        raise InvalidArgument(
            f"{what} {dt.isoformat()} is a naive datetime; pass a timezone-aware one, "
            "e.g. datetime.now(timezone.utc)"
        )
    us = _us(dt - _EPOCH)
    if not MIN_US <= us <= MAX_US:
        raise InvalidArgument(
            f"{what} {dt.isoformat()} is outside years 1-9999 in UTC, the times tickwork stores"
        )
    return us


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def td_us(td: timedelta) -> int:
    """A timedelta as integer microseconds."""
    return _us(td)


def check_duration(value: timedelta, *, what: str) -> timedelta:
    """``value`` if it is at most :data:`MAX_DURATION` long (either sign).

    Raises:
        InvalidArgument: a longer one, naming ``what``.
    """
    if abs(value) > MAX_DURATION:
        raise InvalidArgument(
            f"{what} {value} is too long: at most {MAX_DURATION.days} days (years 1-9999)"
        )
    return value
