"""Local wall-clock time against real time: UTC offset spans and Vixie cron's DST rules.

A trigger written in local time ("02:30 every day in Europe/Berlin") needs two facts
that `zoneinfo` does not hand out directly: where the zone's UTC offset changes, and
what a wall-clock rule means across such a change. This module answers both, working
in integer microseconds since the epoch (instants) and "wall microseconds" (the local
wall-clock reading written as if it were UTC), so no aware-datetime comparison (which
ignores ``fold`` within one zone) can mislead it.

Vixie cron's rules, which :func:`next_fire` implements:

- *wildcard* rules (minute or hour field starts with ``*``) follow real time: a wall
  time that occurs twice (fall back) fires twice; a skipped one (spring forward) never.
- *fixed-time* rules fire a repeated wall time once, at its first occurrence, and every
  matching wall time inside a spring-forward gap once, at the first instant after it.
"""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from tickwork.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Callable

US: Final = 1_000_000
_DAY_S: Final = 86_400
_ONE_US: Final = timedelta(microseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Every span search gives up after this many offset changes / year boundaries, far more
# than the 50 years cronsim itself searches before it gives up.
_MAX_SPANS: Final = 1_000


def load_zone(name: object) -> ZoneInfo:
    """The IANA zone called ``name``.

    Raises:
        InvalidArgument: ``name`` is not a str, names no IANA zone, or names the host's
            ``localtime`` (a schedule must mean the same on every node).
    """
    hint = "use an IANA name such as Europe/Berlin"
    if not isinstance(name, str):
        raise InvalidArgument(f"time zone must be a str, got {type(name).__name__}; {hint}")
    if name == "localtime":
        raise InvalidArgument(f"time zone 'localtime' depends on the host; {hint}")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a path-like or otherwise malformed key; OSError: a directory.
        raise InvalidArgument(f"unknown time zone {name!r}; {hint}") from None


@functools.lru_cache(maxsize=1024)
def _zone(key: str) -> ZoneInfo:
    """``ZoneInfo(key)``, kept: ZoneInfo's own cache holds only the last 8 zones strongly,
    and a node with schedules in hundreds of zones would re-read their files from disk."""
    return ZoneInfo(key)


def _offset_us(zone: ZoneInfo, instant_s: int) -> int:
    offset = (_EPOCH + timedelta(seconds=instant_s)).astimezone(zone).utcoffset()
    if offset is None:  # pragma: no cover - a ZoneInfo always has an offset
        raise AssertionError(zone)
    return offset // _ONE_US


def _year_start_s(year: int) -> int:
    return (datetime(year, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)


@functools.lru_cache(maxsize=4096)
def _year_changes(key: str, year: int) -> tuple[tuple[int, int, int], ...]:
    """``(instant_us, offset_before_us, offset_after_us)`` of each offset change in a UTC year.

    Probes the offset once a day and bisects each change down to the second. That is
    exact as long as two changes are more than a day apart: the closest pair in tzdata
    2026 is almost four days apart (Africa/Freetown, 1939).
    """
    zone = _zone(key)
    probe = _year_start_s(year) - 1
    end = _year_start_s(year + 1) - 1
    changes = []
    offset = _offset_us(zone, probe)
    while probe < end:
        nxt = min(probe + _DAY_S, end)
        after = _offset_us(zone, nxt)
        if after != offset:
            lo, hi = probe, nxt  # offset(lo) == offset, offset(hi) == after
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_us(zone, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            changes.append((hi * US, offset, after))
            offset = after
        probe = nxt
    return tuple(changes)


@functools.lru_cache(maxsize=4096)
def _window(key: str, year: int) -> tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]:
    """The changes of UTC years ``year - 1 .. year + 1``, with their instants for bisecting."""
    changes = _year_changes(key, year - 1) + _year_changes(key, year) + _year_changes(key, year + 1)
    return tuple(c[0] for c in changes), changes


@attrs.frozen
class Span:
    """A stretch of real time over which a zone's UTC offset does not change.

    ``start_us``/``end_us`` are real offset changes or, where none is near, artificial
    bounds a year or more away; at an artificial start ``before_us == offset_us``.
    """

    start_us: int  #: first instant of the span
    end_us: int  #: first instant after the span
    offset_us: int  #: the UTC offset throughout the span
    before_us: int  #: the UTC offset just before ``start_us``


def span_at(key: str, instant_us: int) -> Span:
    """The span of zone ``key`` that contains ``instant_us``.

    Raises:
        OverflowError, ValueError: the instant is within a year of datetime's range ends.
    """
    year = (_EPOCH + timedelta(microseconds=instant_us)).year
    instants, changes = _window(key, year)
    i = bisect.bisect_right(instants, instant_us)
    if i > 0:
        start, before, offset = changes[i - 1]
    else:
        # No change since the start of last year: the offset is the one the next change
        # leaves, or, with no change in sight either, the one in force now.
        has_next = i < len(changes)
        offset = changes[i][1] if has_next else _offset_us(_zone(key), instant_us // US)
        start, before = _year_start_s(year - 1) * US, offset
    end = changes[i][0] if i < len(changes) else _year_start_s(year + 2) * US
    return Span(start_us=start, end_us=end, offset_us=offset, before_us=before)


def next_fire(
    key: str,
    after_us: int,
    first_match: Callable[[int], int | None],
    *,
    fixed_time: bool,
) -> int | None:
    """The first instant strictly after ``after_us`` at which a local-time rule fires.

    Args:
        key: the IANA zone the rule's wall times are read in.
        after_us: an instant, microseconds since the epoch.
        first_match: given wall microseconds ``w``, the first matching wall time ``>= w``
            (wall microseconds), or None when there is none.
        fixed_time: apply Vixie cron's fixed-time rules (see the module docstring);
            otherwise the rule follows real time.

    Returns:
        An instant in microseconds, or None when ``first_match`` finds nothing or the
        search runs out of datetime's range.
    """
    instant = after_us + 1  # search for the first fire >= instant
    searched_from, match = 0, None  # the last search and its answer
    try:
        for _ in range(_MAX_SPANS):
            span = span_at(key, instant)
            wall = instant + span.offset_us
            if fixed_time and span.before_us > span.offset_us:
                # Fall back: wall times before start + before were already seen, and
                # fired, in the previous span; only their first occurrence counts.
                wall = max(wall, span.start_us + span.before_us)
            elif fixed_time and span.before_us < span.offset_us and instant == span.start_us:
                # Spring forward at this very instant: wall times in
                # [start + before, start + offset) were skipped; any match among
                # them fires once, now.
                wall = span.start_us + span.before_us
            if match is None or not searched_from <= wall <= match:
                # (Otherwise nothing matches in [searched_from, match): the answer
                # stands, which saves sparse rules a search per span.)
                searched_from, match = wall, first_match(wall)
            if match is None:
                return None
            if match < span.start_us + span.offset_us:
                return span.start_us  # only reachable through the gap branch above
            fire = match - span.offset_us
            if fire < span.end_us:
                return fire
            instant = span.end_us
    except (OverflowError, ValueError):
        return None  # ran past datetime's year 1..9999
    return None
