"""The PostgreSQL store's API tokens (schema version 7: the ``tokens`` table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from tickwork.stores.tokens import Token

if TYPE_CHECKING:
    from tickwork.stores.postgres._thread import ThreadSession

__all__ = ["V7_TOKENS", "TokenQueries"]

V7_TOKENS: Final[tuple[str, ...]] = (
    """CREATE TABLE {s}.tokens (
        digest text PRIMARY KEY,
        id text NOT NULL UNIQUE,
        scope text NOT NULL CHECK (scope IN ('read', 'admin')),
        name text NOT NULL,
        created_us bigint NOT NULL
    )""",
)


class TokenQueries:
    """The statements, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        from tickwork.stores.postgres._migrations import render as r  # noqa: PLC0415 - a cycle

        self._add = r(
            "INSERT INTO {s}.tokens (digest, id, scope, name, created_us) "
            "VALUES (%(digest)s, %(id)s, %(scope)s, %(name)s, %(created)s)",
            schema,
        )
        self._all = r("SELECT id, scope, name, created_us FROM {s}.tokens ORDER BY 4, 1", schema)
        self._one = r(
            "SELECT id, scope, name, created_us FROM {s}.tokens WHERE digest = %(digest)s",
            schema,
        )
        self._rm = r("DELETE FROM {s}.tokens WHERE id = %(id)s", schema)

    def add(self, token: Token, token_digest: str, session: ThreadSession) -> None:
        session.execute(
            self._add,
            {
                "digest": token_digest,
                "id": token.id,
                "scope": token.scope,
                "name": token.name,
                "created": token.created_us,
            },
        )

    def all(self, session: ThreadSession) -> list[Token]:
        return [Token(r[0], r[1], r[2], r[3]) for r in session.execute(self._all)]

    def one(self, token_digest: str, session: ThreadSession) -> Token | None:
        r = session.execute(self._one, {"digest": token_digest}).fetchone()
        return None if r is None else Token(r[0], r[1], r[2], r[3])

    def remove(self, token_id: str, session: ThreadSession) -> bool:
        return session.execute(self._rm, {"id": token_id}).rowcount > 0
