"""The ``--db`` option's value: a SQLite file or a PostgreSQL database, and the store it opens."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import click

from tickwork.cli._parse import _ParserType
from tickwork.errors import InvalidArgument
from tickwork.stores.base import Store
from tickwork.stores.sqlite import SQLiteStore

__all__ = ["DB", "DbTarget", "PostgresTarget", "open_store", "parse_db"]


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
