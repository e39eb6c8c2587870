"""Parsing the command line's values: durations, times, states, JSON and task specs.

Every parser raises :class:`ValueError` with a message meant for the user; the click
parameter types below turn that into a usage error (exit status 2) naming the option.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import click

from tickwork._time import MAX_DURATION, to_us
from tickwork.errors import InvalidArgument
from tickwork.node.mode import MIN_LEASE
from tickwork.state import State
from tickwork.stores.base import Store
from tickwork.stores.sqlite import SQLiteStore
from tickwork.task import _NAME as TASK_NAME
from tickwork.task import Task
from tickwork.tasks.bash import BashTask

__all__ = [
    "BASH_KEYS",
    "DB",
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
    "DbTarget",
    "PostgresTarget",
    "bash_params",
    "open_store",
    "parse_db",
    "parse_duration",
    "parse_id",
    "parse_json",
    "parse_lease",
    "parse_positive_duration",
    "parse_size",
    "parse_state",
    "parse_task_name",
    "parse_time",
    "resolve_tasks",
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
#: The keys of the bash task's params (see ``BashTask.params``).
BASH_KEYS = ("cmd", "timeout", "env", "cwd", "user")
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
        if not isinstance(value, str):
            return value  # already converted (a default)
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


def resolve_tasks(spec: str) -> list[Task]:
    """The tasks named by one ``module:attr`` spec (``attr`` may be dotted).

    The attribute may be a :class:`~tickwork.task.Task` instance, a Task subclass (it is
    instantiated with no arguments), or a list or tuple of those. The current directory
    is importable, as for ``python -m``.

    Raises:
        ValueError: a malformed spec, a module that does not import, a missing attribute,
            or something that is not a task; the message says which.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{spec!r} is not of the form module:attr (e.g. myapp.tasks:Greet)")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        raise ValueError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    return [_as_task(spec, item) for item in items]


def _as_task(spec: str, obj: object) -> Task:
    if isinstance(obj, Task):
        return obj
    if isinstance(obj, type) and issubclass(obj, Task):
        try:
            return obj()
        except Exception as exc:  # noqa: BLE001 - the user's constructor may raise anything
            raise ValueError(
                f"{spec}: cannot instantiate {obj.__name__}() ({type(exc).__name__}: {exc}); "
                "name an instance instead"
            ) from None
    raise ValueError(
        f"{spec} is {obj!r}, not a tickwork.Task instance, a Task subclass, or a list of them"
    )


def bash_params(
    command: tuple[str, ...],
    params: Any,
    *,
    cwd: str | None = None,
    env: tuple[tuple[str, str], ...] = (),
    default_cwd: str | None = None,
) -> bytes:
    """The bash task's params from the words after ``--`` and/or ``--params``.

    The words are quoted with :func:`shlex.join`, so each stays one argument; ``--params``
    may add ``timeout``, ``env`` and ``cwd``, or carry the whole thing with ``cmd``.
    ``cwd`` (``--cwd``) and ``env`` (``--env`` pairs) are added to them; without a
    directory, ``default_cwd`` is used (``add`` passes the caller's: the command runs
    where it was added, as in a shell).

    Raises:
        click.UsageError: no command, or two; a directory or variable given twice; bad
            params (``BadParameter``).
    """
    spec = {} if params is None else params
    if not isinstance(spec, dict):
        raise click.BadParameter(
            'bash params must be a JSON object like {"cmd": "echo hi"}', param_hint="'--params'"
        )
    unknown = sorted(set(spec) - set(BASH_KEYS))
    if unknown:
        raise click.BadParameter(
            f"unknown bash params {unknown}; bash takes {list(BASH_KEYS)}",
            param_hint="'--params'",
        )
    if command:
        if "cmd" in spec:
            raise click.UsageError("give the command either after -- or as cmd in --params")
        spec = {**spec, "cmd": shlex.join(command)}
    if "cmd" not in spec:
        raise click.UsageError("the bash task needs a command: put it after -- or in --params")
    spec = _with_place(spec, cwd or default_cwd if "cwd" not in spec else cwd, env)
    try:
        return BashTask.params(
            spec["cmd"],
            timeout=spec.get("timeout"),
            env=spec.get("env"),
            cwd=spec.get("cwd"),
            user=spec.get("user"),
        )
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="'--params'") from None


def _with_place(spec: dict[str, Any], cwd: str | None, env: tuple[tuple[str, str], ...]) -> Any:
    """``spec`` with a directory and ``--env`` added."""
    if cwd is not None and "cwd" in spec:
        raise click.UsageError("give the directory either with --cwd or as cwd in --params")
    if cwd is not None:
        spec = {**spec, "cwd": cwd}
    given = spec.get("env") or {}
    if env and isinstance(given, dict):  # not a dict: BashTask.params says what is wrong
        merged = dict(given)
        for name, value in env:
            if name in merged:
                raise click.UsageError(f"environment variable {name} is given twice")
            merged[name] = value
        spec = {**spec, "env": merged}
    return spec


# -- --db: a SQLite file or a PostgreSQL database ---------------------------------------------

_PG_SCHEMES = ("postgresql://", "postgres://")


@attrs.frozen
class PostgresTarget:
    """A ``--db`` naming a PostgreSQL database: a libpq URI and the tickwork schema in it."""

    dsn: str
    schema: str = "tickwork"

    def __str__(self) -> str:
        """The URI with its password masked (for logs and ``stats``)."""
        parts = urlsplit(self.dsn)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
        shown = urlunsplit(parts._replace(netloc=netloc))
        return f"{shown} (schema {self.schema})"


#: What ``--db`` names.
DbTarget = Path | PostgresTarget


def parse_db(text: str) -> DbTarget:
    """A SQLite file path, or a ``postgresql://`` (or ``postgres://``) URI.

    The URI may carry the tickwork schema as a ``schema`` query parameter
    (``postgresql://user@host/db?schema=jobs``; default ``tickwork``); every other
    parameter goes to libpq as given.

    Raises:
        ValueError: an empty path.
    """
    if not text.strip():
        raise ValueError("--db must name a SQLite file or a postgresql:// URI")
    if not text.startswith(_PG_SCHEMES):
        return Path(text)
    parts = urlsplit(text)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return PostgresTarget(dsn, schemas[-1] if schemas else "tickwork")


DB = _ParserType("db", parse_db)


def open_store(db: DbTarget, *, read_only: bool = False) -> Store:
    """The store ``--db`` names (not opened yet): a SQLiteStore or a PostgresStore.

    ``read_only``: a SQLite file is opened read-only (``SQLiteStore(read_only=True)``).

    Raises:
        click.UsageError: a PostgreSQL URI without psycopg installed.
        click.BadParameter: a malformed URI or schema name.
    """
    if isinstance(db, PostgresTarget):
        try:
            from tickwork.stores.postgres import PostgresStore  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise click.UsageError(
                f"--db {db} needs the PostgreSQL driver: pip install 'tickwork[postgres]' ({exc})"
            ) from None
        try:
            return PostgresStore(db.dsn, schema=db.schema)
        except InvalidArgument as exc:
            raise click.BadParameter(str(exc), param_hint="'--db'") from None
    return SQLiteStore(db, read_only=read_only)
