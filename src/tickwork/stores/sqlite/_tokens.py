"""The SQLite store's API tokens (schema version 7: the ``tokens`` table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from tickwork.stores.tokens import Token

if TYPE_CHECKING:
    import sqlite3

__all__ = ["V7_TOKENS", "TokenOps"]

V7_TOKENS: Final = """
CREATE TABLE tokens (
    digest TEXT PRIMARY KEY NOT NULL,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
"""


class TokenOps:
    """Token statements on the store's connection (a mixin of its ``Ops``)."""

    _c: sqlite3.Connection

    def add_token(self, token: Token, token_digest: str) -> None:
        self._c.execute(
            "INSERT INTO tokens (digest, id, scope, name, created) VALUES (?, ?, ?, ?, ?)",
            (token_digest, token.id, token.scope, token.name, token.created_us),
        )

    def tokens(self) -> list[Token]:
        cur = self._c.execute("SELECT id, scope, name, created FROM tokens ORDER BY created, id")
        return [Token(r[0], r[1], r[2], r[3]) for r in cur]

    def token_by_digest(self, token_digest: str) -> Token | None:
        r = self._c.execute(
            "SELECT id, scope, name, created FROM tokens WHERE digest = ?", (token_digest,)
        ).fetchone()
        return None if r is None else Token(r[0], r[1], r[2], r[3])

    def remove_token(self, token_id: str) -> bool:
        return self._c.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0
