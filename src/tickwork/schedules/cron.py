"""Cron expressions: checking them, and matching wall-clock times with cronsim.

All parsing and matching is cronsim's; this module only expands the ``@`` shortcuts,
puts the fields in cronsim's order, turns cronsim's terse errors into messages that say
which field is wrong and what is accepted, and classifies an expression as fixed-time
or wildcard the way Vixie cron does. cronsim is only ever given *naive* datetimes, so
its own time-zone handling never runs: :mod:`tickwork.schedules.dst` maps wall times to instants.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Final

import attrs
from cronsim import CronSim, CronSimError

from tickwork.errors import InvalidArgument

SHORTCUTS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
ACCEPTED: Final = (
    "accepted: 5 fields 'min hour day month weekday', 6 with leading seconds "
    "'sec min hour day month weekday', or @yearly/@annually/@monthly/@weekly/@daily/"
    "@midnight/@hourly"
)

# Seconds-first, as cronsim numbers them.
_NAMES: Final = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_RANGES: Final = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_FORMS: Final = "N, N-M, */S, N-M/S and comma lists of these"
_EXTRA_FORMS: Final = (
    "",
    "",
    "",
    "; also L (last day) and LW (last weekday)",
    "; also names JAN-DEC",
    (
        "; also names SUN-SAT (0 and 7 are Sunday), D#K (K-th weekday D of the month, "
        "K 1-5) and DL (last weekday D of the month)"
    ),
)
# A field is checked alone by putting it into an expression that is valid otherwise.
_NEUTRAL: Final = ("0", "0", "0", "*", "*", "*")

_DIGITS: Final = re.compile(r"[0-9]+")

_NAIVE_EPOCH: Final = datetime(1970, 1, 1)  # noqa: DTZ001 - wall clock, no zone on purpose
_ONE_US: Final = timedelta(microseconds=1)


@attrs.frozen
class CronSpec:
    """A checked cron expression."""

    #: canonical text: single spaces, names upper-case, a shortcut lower-case
    text: str
    #: the six fields, seconds first, exactly as cronsim reads them
    fields: str
    #: Vixie cron's "fixed-time job": neither minute nor hour field starts with ``*``
    fixed_time: bool


def parse(expr: object) -> CronSpec:
    """Check ``expr`` and classify it.

    Raises:
        InvalidArgument: ``expr`` is not a str, not a cron expression cronsim accepts, or
            one that can never fire (e.g. ``0 0 30 2 *``); the message names the field.
    """
    if not isinstance(expr, str):
        raise InvalidArgument(f"cron expression must be a str, got {type(expr).__name__}")
    return _parse(expr)


@functools.lru_cache(maxsize=1024)
def _parse(expr: str) -> CronSpec:
    if not expr.isascii():
        # Python reads '¹' and U+0661 as digits and 'ß'.upper() as 'SS', and splits fields at
        # Unicode spaces: none of that is cron, so nothing outside ASCII goes further.
        char = next(c for c in expr if not c.isascii())
        raise InvalidArgument(
            f"cron expression {expr!r} has a non-ASCII character {char!r} (U+{ord(char):04X}); "
            f"fields are ASCII digits, names and * , - / # L W; {ACCEPTED}"
        )
    parts = expr.split()
    if len(parts) == 1 and parts[0].startswith("@"):
        text = parts[0].lower()
        if text not in SHORTCUTS:
            raise InvalidArgument(
                f"cron expression {expr!r}: unknown shortcut {parts[0]!r}; {ACCEPTED}"
            )
        fields = ["0", *SHORTCUTS[text].split()]
    else:
        parts = [p.upper() for p in parts]
        text = " ".join(parts)
        if len(parts) not in (5, 6):
            raise InvalidArgument(f"cron expression {expr!r} has {len(parts)} fields; {ACCEPTED}")
        fields = parts if len(parts) == 6 else ["0", *parts]
    _check(expr, fields)
    fixed = not fields[1].startswith("*") and not fields[2].startswith("*")
    return CronSpec(text=text, fields=" ".join(fields), fixed_time=fixed)


def _check(expr: str, fields: list[str]) -> None:
    for i, value in enumerate(fields):
        probe = list(_NEUTRAL)
        probe[i] = value
        if not _accepted(probe):
            raise InvalidArgument(
                f"cron expression {expr!r}: {_NAMES[i]} field {value!r} {_reason(i, value)}; "
                f"{ACCEPTED}"
            )
    if not _accepted(fields):
        # Each field is fine alone; cronsim refuses days that no listed month has.
        raise InvalidArgument(
            f"cron expression {expr!r}: day-of-month field {fields[3]!r} never occurs in "
            f"month field {fields[4]!r}; {ACCEPTED}"
        )


def _accepted(fields: list[str]) -> bool:
    try:
        CronSim(" ".join(fields), _NAIVE_EPOCH)
    except CronSimError:
        return False
    return True


def _reason(index: int, value: str) -> str:
    lo, hi = _RANGES[index]
    # The numbers that are values (not steps after '/' nor counts after '#').
    values = re.split(r"[,-]", re.sub(r"[/#]\d*", "", value))
    if any(_DIGITS.fullmatch(v) and not lo <= int(v) <= hi for v in values):
        return f"out of range {lo}-{hi}"
    if re.search(r"/0+(?:,|$)", value):
        return "has a step of 0"
    return f"is not understood (accepted in this field: {_FORMS}{_EXTRA_FORMS[index]})"


def first_match(fields: str, wall_us: int) -> int | None:
    """The first wall time ``>= wall_us`` that ``fields`` matches, or None if there is none.

    Wall times are naive local readings in microseconds since 1970-01-01T00:00; cronsim
    searches up to 50 years ahead before it gives up.
    """
    # cronsim drops the microseconds of its start and returns matches strictly after it,
    # so starting one microsecond early makes the search inclusive.
    start = _NAIVE_EPOCH + timedelta(microseconds=wall_us - 1)
    try:
        found: datetime = next(CronSim(fields, start))
    except StopIteration:
        return None
    return (found - _NAIVE_EPOCH) // _ONE_US
