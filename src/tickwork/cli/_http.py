"""The command line's HTTP parts: ``tickwork run --http``'s address, and ``tickwork token
add|ls|rm`` (API tokens, kept hashed in the database)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import trio

from tickwork._time import from_us
from tickwork.cli._common import client, db_option, emit, json_option, log_options, require_db
from tickwork.cli._format import table
from tickwork.clock import SystemClock
from tickwork.stores.tokens import SCOPES, create_token, list_tokens, revoke_token

__all__ = ["DEFAULT_HTTP", "HTTP_ADDRESS", "token"]

DEFAULT_HTTP = "127.0.0.1:8377"
_HOW_TO_START = "start a node with `tickwork run` or add an instance with `tickwork add`"


if TYPE_CHECKING:
    # click >= 8.2 types ParamType by its value; older releases are not subscriptable.
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType


class HttpAddress(_ParamType):
    """``HOST:PORT``, ``PORT`` (on 127.0.0.1) or ``off``; an IPv6 host in brackets."""

    name = "HOST:PORT|off"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int] | None:
        if isinstance(value, tuple) or value is None:
            return value
        text = str(value).strip()
        if text.lower() in {"off", "no", "false", "0"}:
            return None
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "127.0.0.1", text
        host = host.strip("[]") or "127.0.0.1"
        if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            self.fail(f"{value!r} is not HOST:PORT (port 0..65535), PORT, or off", param, ctx)
        return host, int(port)


HTTP_ADDRESS = HttpAddress()


@click.group()
def token() -> None:
    """API tokens for the HTTP API and web UI (scopes: read, admin)."""


@token.command(name="add")
@click.option(
    "--scope", type=click.Choice(SCOPES), required=True, help="read: look only; admin: act too."
)
@click.option("--name", default="", help="What the token is for (shown by `token ls`).")
@db_option
@json_option
@log_options
def add_token(*, scope: str, name: str, db: Any, as_json: bool) -> None:
    """Make a token and print it once (only its hash is stored: keep it now)."""

    async def make() -> tuple[Any, str]:
        async with client(db) as store:
            return await create_token(store, scope, name, SystemClock().now_us())

    made, text = trio.run(make)
    emit({"id": made.id, "scope": made.scope, "name": made.name, "token": text}, as_json, text)


@token.command(name="ls")
@db_option
@json_option
@log_options
def list_all(*, db: Any, as_json: bool) -> None:
    """The tokens (id, scope, name, created), never their text."""
    require_db(db, _HOW_TO_START)

    async def read() -> list[Any]:
        async with client(db, read_only=True) as store:
            return await list_tokens(store)

    found = trio.run(read)
    docs = [
        {
            "id": t.id,
            "scope": t.scope,
            "name": t.name,
            "created": from_us(t.created_us).isoformat().replace("+00:00", "Z"),
        }
        for t in found
    ]
    rows = [[d["id"], d["scope"], d["name"], d["created"]] for d in docs]
    text = table(["ID", "SCOPE", "NAME", "CREATED"], rows) if rows else "no tokens"
    emit(docs, as_json, text)


@token.command(name="rm")
@click.argument("token_id", metavar="ID")
@db_option
@log_options
def remove(*, token_id: str, db: Any) -> None:
    """Revoke a token: requests and sessions that use it are refused from now on."""
    require_db(db, _HOW_TO_START)

    async def drop() -> bool:
        async with client(db) as store:
            return await revoke_token(store, token_id)

    if not trio.run(drop):
        raise click.ClickException(f"no token with id {token_id!r} in {db}")
    click.echo(f"revoked {token_id}")
