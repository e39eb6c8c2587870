"""UTC integer microseconds: the one time representation at the storage boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tickwork.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000


def to_us(dt: datetime, *, what: str = "time") -> int:
    """Convert an aware datetime to integer microseconds since the epoch (UTC).

    Raises:
        InvalidArgument: ``dt`` is naive or not a datetime.
    """
    if not isinstance(dt, datetime):
        raise InvalidArgument(f"{what} must be a datetime, got {type(dt).__name__}")
    tz = dt.tzinfo
    if tz is not UTC and (tz is None or tz.utcoffset(dt) is None):
        raise InvalidArgument(
            f"{what} {dt.isoformat()} is a naive datetime; pass a timezone-aware one, "
            "e.g. datetime.now(timezone.utc)"
        )
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def td_us(td: timedelta) -> int:
    """A timedelta as integer microseconds."""
    return (td.days * 86_400 + td.seconds) * US_PER_SECOND + td.microseconds
