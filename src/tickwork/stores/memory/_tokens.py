"""The MemoryStore's API tokens (a mixin: a dict by digest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from tickwork.errors import InvalidArgument
from tickwork.stores.tokens import Token

__all__ = ["MemoryTokens"]


class MemoryTokens:
    """``TokenStore`` in memory."""

    _token_rows: dict[str, Token]

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

    def _token_table(self) -> dict[str, Token]:
        self._check_open()
        if not hasattr(self, "_token_rows"):
            self._token_rows = {}
        return self._token_rows

    async def add_token(self, token: Token, token_digest: str) -> None:
        await trio.lowlevel.checkpoint()
        table = self._token_table()
        if token_digest in table or any(t.id == token.id for t in table.values()):
            raise InvalidArgument(f"a token with id {token.id!r} exists already")
        table[token_digest] = token

    async def tokens(self) -> list[Token]:
        await trio.lowlevel.checkpoint()
        return sorted(self._token_table().values(), key=lambda t: (t.created_us, t.id))

    async def token_by_digest(self, token_digest: str) -> Token | None:
        await trio.lowlevel.checkpoint()
        return self._token_table().get(token_digest)

    async def remove_token(self, token_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        table = self._token_table()
        for key, token in list(table.items()):
            if token.id == token_id:
                del table[key]
                return True
        return False
