"""What every ``tickwork`` command shares: the common options, logging, the database as a
client, and how params given as JSON are packed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import trio
from click.core import ParameterSource

from tickwork.cli._db import DB, DbTarget, open_store
from tickwork.cli._format import display_utc, dump_json
from tickwork.cli._reporting import setup_logging
from tickwork.errors import InvalidArgument
from tickwork.model import pack
from tickwork.tasks import validate_builtin_params

if TYPE_CHECKING:
    from tickwork.stores.base import Store

__all__ = [
    "EXIT_INTERRUPTED",
    "checked_params",
    "client",
    "db_option",
    "emit",
    "force_option",
    "json_option",
    "log_options",
    "packed",
    "require_db",
    "setup_cli_logging",
    "utc_option",
]

F = TypeVar("F", bound=Callable[..., Any])

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: the exit status after an interrupt (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Keep a logging option in ``ctx.meta`` (shared by the group and its commands).

    The group's option comes from the command line only; a command's own may come from
    the environment or a config file (``tickwork run``), which must not win over it.
    """
    if value is None or param.name is None:
        return
    key = f"tickwork.{param.name}"
    if key in ctx.meta and ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
        return
    ctx.meta[key] = value


def log_options(f: F) -> F:
    """``--log-level`` and ``--log-format``: accepted before and after the command name."""
    f = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default=None,
        expose_value=False,
        callback=_remember,
        help="Log lines as text, or as one JSON object per line.  [default: text]",
    )(f)
    return click.option(
        "--log-level",
        type=click.Choice(_LEVELS, case_sensitive=False),
        default=None,
        expose_value=False,
        callback=_remember,
        help="Log threshold (logs go to stderr).  [default: INFO for run, else WARNING]",
    )(f)


def _set_utc(ctx: click.Context, param: click.Parameter, value: object) -> None:
    del ctx, param
    if value:
        display_utc(True)  # noqa: FBT003 - the flag's value


def utc_option(f: F) -> F:
    """``--utc``: times in UTC in text views (before or after the command name)."""
    return click.option(
        "--utc",
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_set_utc,
        help="Show times in UTC instead of the local time zone (--json is always UTC).",
    )(f)


def db_option(f: F) -> F:
    """``--db``: a SQLite file or a PostgreSQL URI (or ``$TICKWORK_DB``)."""
    return click.option(
        "--db",
        type=DB,
        default=Path("tickwork.db"),
        envvar="TICKWORK_DB",
        show_envvar=True,
        show_default=True,
        help="The SQLite database file, or a PostgreSQL URI "
        "(postgresql://user@host/dbname?schema=tickwork) for a cluster.",
    )(f)


def force_option(f: F) -> F:
    """``--force``: add work for a task that no node runs (see ``_cli_nodes``)."""
    return click.option(
        "--force",
        is_flag=True,
        help="Add it even if no node runs the task (it runs once a node with it starts).",
    )(f)


def json_option(f: F) -> F:
    """``--json``: print one JSON document instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
    )(f)


def setup_cli_logging(default_level: str) -> None:
    """Configure logs as ``--log-level`` / ``--log-format`` asked (before or after the command)."""
    meta = click.get_current_context().meta
    setup_logging(
        str(meta.get("tickwork.log_level", default_level)),
        str(meta.get("tickwork.log_format", "text")),
    )


def emit(doc: object, as_json: bool, text: str) -> None:
    """Print ``doc`` as JSON, or ``text``."""
    click.echo(dump_json(doc) if as_json else text)


def require_db(db: DbTarget, how_to_start: str) -> None:
    """Refuse to read a database that is not there (opening would create an empty one);
    ``how_to_start`` says which commands create one. A PostgreSQL server is asked when the
    store opens.
    """
    if isinstance(db, Path) and not db.exists():
        raise click.ClickException(f"no tickwork database at {db} ({how_to_start})")


@asynccontextmanager
async def client(db: DbTarget, *, read_only: bool = False) -> AsyncIterator[Store]:
    """Open ``db`` as a client: no node lock, so it works while a node runs on it.

    ``read_only`` for the reading commands: a SQLite file is opened read-only, so they
    work on read-only media and never create, migrate or write a file.
    """
    store = open_store(db, read_only=read_only)
    await store.open()
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


def packed(params: Any) -> bytes:
    """``--params`` (parsed JSON, or None) as the bytes a task receives.

    Raises:
        click.BadParameter: msgpack cannot hold it (an integer past 64 bits).
    """
    try:
        return b"" if params is None else pack(params)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="'--params'") from None


def checked_params(task: str, data: bytes) -> bytes:
    """``data`` after the params check of a built-in hand-off task (a bad URL, subject or
    queue name is refused now, exit status 2, not when the run comes due)."""
    try:
        validate_builtin_params(task, data)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="'--params'") from None
    return data
