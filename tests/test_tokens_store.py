"""API tokens in every store (kept hashed), and the migrations that add them."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from tickwork.stores.tokens import (
    Token,
    TokenStore,
    create_token,
    digest,
    find_token,
    list_tokens,
    revoke_token,
)

if TYPE_CHECKING:
    from pathlib import Path


async def test_tokens_are_kept_hashed_and_revoked(store, kind, tmp_path):
    assert isinstance(store, TokenStore)
    assert await list_tokens(store) == []
    admin, admin_text = await create_token(store, "admin", "ops", 10)
    read, read_text = await create_token(store, "read", "", 20)
    assert admin_text != read_text
    assert [t.id for t in await list_tokens(store)] == [admin.id, read.id]
    assert await find_token(store, admin_text) == admin
    assert await find_token(store, read_text) == Token(read.id, "read", "", 20)
    assert await find_token(store, admin_text + "x") is None
    assert await find_token(store, "not a token") is None
    assert await store.token_by_digest(digest(admin_text)) == admin
    assert await revoke_token(store, admin.id)
    assert not await revoke_token(store, admin.id)
    assert await find_token(store, admin_text) is None
    assert [t.id for t in await list_tokens(store)] == [read.id]
    if kind == "sqlite":
        # only the digest is on disk, never the token's text
        raw = (tmp_path / "tickwork.db").read_bytes()
        assert read_text.encode() not in raw


async def test_token_refusals(store):
    from tickwork.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="scope"):
        await create_token(store, "root", "", 1)
    with pytest.raises(InvalidArgument, match="name"):
        await create_token(store, "read", "a\nb", 1)


async def test_a_sqlite_file_from_before_tokens_gets_the_tokens_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickwork.stores.sqlite import SQLiteStore
    from tickwork.stores.sqlite import _schema as _sqlite_schema
    from tickwork.stores.sqlite import _tokens as _sqlite_tokens

    db = tmp_path / "old.db"
    full = _sqlite_schema.MIGRATIONS
    before = full.index(_sqlite_tokens.V7_TOKENS)
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full[:before])
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", before)
    old = SQLiteStore(db)
    await old.open()
    await old.aclose()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full))
    new = SQLiteStore(db)
    await new.open()
    try:
        _, text = await create_token(new, "read", "", 1)
        assert await find_token(new, text) is not None
    finally:
        await new.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(full)


async def test_a_postgres_schema_from_before_tokens_gets_the_tokens_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg
    from tickwork.stores.postgres import PostgresStore
    from tickwork.stores.postgres import _migrations as _pg_migrations

    dsn = require_pg()
    schema = fresh_schema()
    full = _pg_migrations.MIGRATIONS
    before = tuple(m for m in full if m[0] < 7)  # tokens came in 7 (nodes tasks in 8)
    assert [m[0] for m in before] == list(range(1, 7))
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", before)
    try:
        old = PostgresStore(dsn, schema=schema)
        await old.open()
        await old.aclose()
        monkeypatch.setattr(_pg_migrations, "MIGRATIONS", full)
        new = PostgresStore(dsn, schema=schema)
        await new.open()
        try:
            _, text = await create_token(new, "admin", "", 1)
            assert await find_token(new, text) is not None
        finally:
            await new.aclose()
    finally:
        drop_schema(dsn, schema)
