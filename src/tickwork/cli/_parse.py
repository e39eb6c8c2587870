"""Parsing the command line's values: durations, sizes, times, states, ids and JSON.

Every parser raises :class:`ValueError` with a message meant for the user; the click
parameter types below turn that into a usage error (exit status 2) naming the option.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tickwork._time import MAX_DURATION, to_us
from tickwork.errors import InvalidArgument
from tickwork.node.mode import MIN_LEASE
from tickwork.state import State
from tickwork.task import _NAME as TASK_NAME

__all__ = [
    "DURATION",
    "ID",
    "JSON",
    "LEASE",
    "MAX_ID",
    "POSITIVE_DURATION",
    "SIZE",
    "STATE",
    "TASK_NAME_TYPE",
    "TIME",
    "parse_duration",
    "parse_id",
    "parse_json",
    "parse_lease",
    "parse_positive_duration",
    "parse_size",
    "parse_state",
    "parse_task_name",
    "parse_time",
]

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
# "ms" is listed before "m" so that "500ms" is not read as "500m" followed by "s".
_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|[smhdw])")
_PLAIN = re.compile(rf"\s*({_NUMBER})\s*")
_DURATION_HELP = "use forms like 30s, 5m, 1h30m, 2d, 500ms, or plain seconds"
#: The largest instance id: the stores' ids are signed 64-bit integers.
MAX_ID = 2**63 - 1


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h30m``, ``2d``, ``500ms``, ``1.5h`` or plain seconds.

    Raises:
        ValueError: the text is not such a duration, or is longer than the span of years
            1-9999 (``MAX_DURATION``), past which no time or stored duration can go.
    """
    stripped = text.strip()
    too_long = ValueError(
        f"duration {text!r} is too long: at most {MAX_DURATION.days} days (years 1-9999)"
    )
    try:
        plain = _PLAIN.fullmatch(stripped)
        if plain:
            total = timedelta(seconds=float(plain.group(1)))
        else:
            total, pos = timedelta(0), 0
            seen: set[str] = set()
            while pos < len(stripped):
                part = _PART.match(stripped, pos)
                if part is None or part.group(2) in seen:
                    seen.clear()  # not a duration: refused below
                    break
                unit = part.group(2)
                seen.add(unit)
                total += float(part.group(1)) * _UNITS[unit]
                pos = part.end()
            if not seen:
                raise ValueError(f"invalid duration {text!r}: {_DURATION_HELP}")
    except OverflowError:
        raise too_long from None
    if total > MAX_DURATION:
        raise too_long
    return total


def parse_positive_duration(text: str) -> timedelta:
    """:func:`parse_duration`, refusing zero.

    Raises:
        ValueError: not a duration, or not longer than zero.
    """
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"duration must be longer than zero, got {text!r}")
    return value


def parse_lease(text: str) -> timedelta:
    """A lease: :func:`parse_duration`, at least ``MIN_LEASE`` (1 s).

    Raises:
        ValueError: not a duration, or shorter than the minimum (the message says it).
    """
    value = parse_duration(text)
    if value < MIN_LEASE:
        raise ValueError(
            f"a lease must be at least {MIN_LEASE.total_seconds():g}s (a node renews it "
            f"every third of it), got {text!r}"
        )
    return value


_SIZE = re.compile(r"\s*(\d+)\s*(b|kib|k|kb|mib|m|mb|gib|g|gb)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """A size in bytes: ``1048576``, ``512KiB``, ``4MiB``, ``1G`` (units are powers of 1024).

    Raises:
        ValueError: not such a size, or zero.
    """
    match = _SIZE.fullmatch(text)
    if match is None or len(match.group(1)) > 30:
        raise ValueError(f"invalid size {text!r}: use bytes, or KiB, MiB, GiB (e.g. 4MiB)")
    unit = (match.group(2) or "b")[0].lower()
    value = int(match.group(1)) * _SIZE_UNITS[unit]
    if value < 1:
        raise ValueError(f"size must be at least 1 byte, got {text!r}")
    return value


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time that carries a UTC offset (or ``Z``).

    Raises:
        ValueError: not ISO-8601, naive (local time is ambiguous across DST changes and
            machines, so the CLI refuses to guess), or outside years 1-9999 in UTC.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO-8601 with a UTC offset, "
            "e.g. 2026-12-01T09:00:00+01:00, or Z"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"time {text!r} has no time zone: add a UTC offset, "
            "e.g. 2026-12-01T09:00:00+01:00, or Z"
        )
    try:
        to_us(when, what="time")
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None
    return when


def parse_state(text: str) -> State:
    """A state by name, case-insensitively (``failed`` -> ``State.FAILED``).

    Raises:
        ValueError: no state has that name; the message lists the states.
    """
    try:
        return State[text.strip().upper()]
    except KeyError:
        names = ", ".join(s.name for s in State)
        raise ValueError(f"unknown state {text!r}; choose from {names}") from None


def parse_id(text: str) -> int:
    """An instance id: a positive integer, at most :data:`MAX_ID`.

    Raises:
        ValueError: anything else.
    """
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_ID:
        raise ValueError(f"instance ids are positive integers up to {MAX_ID}, got {text!r}")
    return value


def parse_task_name(text: str) -> str:
    """A task name as :class:`~tickwork.task.Task` requires it.

    Raises:
        ValueError: a name no task can carry.
    """
    if not TASK_NAME.match(text):
        raise ValueError(
            f"invalid task name {text!r}: use letters, digits and _ . : - "
            "(starting with a letter or _, at most 200 characters)"
        )
    return text


def parse_env_pair(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (for ``--env``) as a pair; the value may be empty or hold ``=``.

    Raises:
        ValueError: no ``=``, or an empty name.
    """
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_json(text: str) -> Any:
    """Parse a JSON document, or ``@PATH``: the JSON document in that file (``@-``: stdin).

    Raises:
        ValueError: not valid JSON, or a file that cannot be read; the message says which.
    """
    if text.startswith("@"):
        path = text[1:]
        if not path:
            raise ValueError("@ must be followed by a file name: --params @params.json")
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"cannot read {path}: {reason}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc}): {text!r}") from None


if TYPE_CHECKING:
    # click >= 8.2 types ParamType by its value; older releases are not subscriptable.
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType


class _ParserType(_ParamType):
    """A click parameter type around one of the parsers above."""

    def __init__(self, name: str, parser: Any) -> None:
        self.name = name
        self._parser = parser

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):  # TOML true/false: never a duration, size or id
            self.fail(f"expected a {self.name}, got {str(value).lower()}", param, ctx)
        if isinstance(value, int | float):
            value = str(value)  # a number in the config file: seconds, bytes, an id
        if not isinstance(value, str):
            return value  # already converted (a TOML table for JSON, a TOML datetime)
        try:
            return self._parser(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _ParserType("duration", parse_duration)
POSITIVE_DURATION = _ParserType("duration", parse_positive_duration)
LEASE = _ParserType("duration", parse_lease)
SIZE = _ParserType("size", parse_size)
TIME = _ParserType("time", parse_time)
STATE = _ParserType("state", parse_state)
JSON = _ParserType("json", parse_json)
ENV_PAIR = _ParserType("name=value", parse_env_pair)
ID = _ParserType("id", parse_id)
TASK_NAME_TYPE = _ParserType("name", parse_task_name)
