"""API tokens for the HTTP API, stored hashed: the protocol a store implements to keep
them, and the record it keeps.

A token is ``tw_<id>_<secret>``: ``id`` (8 hex digits) names it in listings and
``tickwork token rm``; the whole text is shown once, when it is made, and the store keeps
only its SHA-256 digest (the secret is 256 random bits, so a fast hash is enough: there
is nothing to guess). Every built-in store implements :class:`TokenStore`; a user's own
store may leave it out, and then a node has no tokens (its HTTP API stays on loopback).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, Protocol, final, runtime_checkable

import attrs

from tickwork.errors import InvalidArgument

__all__ = [
    "SCOPES",
    "Token",
    "TokenStore",
    "check_scope",
    "create_token",
    "digest",
    "find_token",
    "list_tokens",
    "new_secret",
    "revoke_token",
]

#: ``read``: GET only; ``admin``: everything.
SCOPES: Final = ("read", "admin")
_PREFIX: Final = "tw_"


@final
@attrs.frozen
class Token:
    """A stored token (never its secret)."""

    id: str
    scope: str
    name: str
    created_us: int


def check_scope(scope: object) -> str:
    """Raises: InvalidArgument: not ``read`` or ``admin``."""
    if scope not in SCOPES:
        raise InvalidArgument(f"scope must be 'read' or 'admin', got {scope!r}")
    return str(scope)


def new_secret() -> tuple[str, str]:
    """A new token's id and its full text ``tw_<id>_<secret>``."""
    token_id = secrets.token_hex(4)
    return token_id, f"{_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def digest(text: str) -> str:
    """What the store keeps of a token: the SHA-256 of its text, in hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@runtime_checkable
class TokenStore(Protocol):
    """What a store needs to keep API tokens."""

    async def add_token(self, token: Token, token_digest: str) -> None:
        """Store a token under its digest (ids and digests are unique)."""
        ...

    async def tokens(self) -> list[Token]:
        """Every token, oldest first."""
        ...

    async def token_by_digest(self, token_digest: str) -> Token | None:
        """The token whose text has this digest, or None (an indexed lookup)."""
        ...

    async def remove_token(self, token_id: str) -> bool:
        """Delete (revoke) a token; False if there was none with this id."""
        ...


def _token_store(store: object) -> TokenStore:
    if not isinstance(store, TokenStore):
        raise InvalidArgument(f"{type(store).__name__} keeps no API tokens (no TokenStore)")
    return store


async def create_token(store: object, scope: str, name: str, now_us: int) -> tuple[Token, str]:
    """Make and store a token; returns it and its full text (shown once, never stored).

    Raises:
        InvalidArgument: a bad scope or name, or a store without tokens.
    """
    check_scope(scope)
    if not isinstance(name, str) or len(name) > 200 or any(not c.isprintable() for c in name):
        raise InvalidArgument(f"name must be at most 200 printable characters, got {name!r}")
    token_id, text = new_secret()
    token = Token(token_id, scope, name, now_us)
    await _token_store(store).add_token(token, digest(text))
    return token, text


async def find_token(store: object, text: str) -> Token | None:
    """The stored token whose text is ``text``, or None (also for a malformed text)."""
    if not isinstance(store, TokenStore):
        return None
    if not text.startswith(_PREFIX) or len(text) > 200:
        return None
    return await store.token_by_digest(digest(text))


async def list_tokens(store: object) -> list[Token]:
    """Every token, oldest first (none for a store that keeps none)."""
    return await store.tokens() if isinstance(store, TokenStore) else []


async def revoke_token(store: object, token_id: str) -> bool:
    """Delete a token by id; False if there was none."""
    return await _token_store(store).remove_token(token_id)
