"""The Scheduler's operator methods (a mixin of :class:`tickwork.Scheduler`): retry an
ended instance, and the nodes that share the store. What the HTTP API and the CLI offer
beyond scheduling and reading."""

from __future__ import annotations

import builtins
import os
import socket
from typing import TYPE_CHECKING

import trio

from tickwork.errors import NotFound
from tickwork.node import operations as _operations
from tickwork.state import State
from tickwork.stores.cluster import ClusterStore, NodeInfo, NodeRegistry
from tickwork.stores.tokens import Token, create_token, find_token, list_tokens, revoke_token

if TYPE_CHECKING:
    from tickwork.actors.capacity import Capacity
    from tickwork.actors.executor import Executor
    from tickwork.actors.puller import Puller
    from tickwork.clock import Clock
    from tickwork.node.resilience import ResilientStore
    from tickwork.task import TaskRegistry

__all__ = ["OperationMethods"]


class OperationMethods:
    """``retry``, ``counts``, ``nodes`` and the API tokens; see ``docs/http.md``."""

    if TYPE_CHECKING:
        node_id: str
        _store: ResilientStore
        _registry: TaskRegistry
        _clock: Clock
        _puller: Puller
        _executor: Executor
        _capacity: Capacity
        _started_at: float
        max_params_bytes: int

        def _check_open(self) -> None: ...

    async def retry(self, instance_id: int) -> int:
        """Run a FAILED, ABORTED or MISSED instance again: returns the id of a new PENDING
        instance, due now, with the same task, params, ``max_attempts`` and timeout.

        The new instance's ``retry_of`` is ``instance_id``. Retrying one instance twice
        (or from two nodes at once) stores one retry: the second call returns its id.

        Raises:
            NotFound: no instance has this id.
            InvalidState: the instance has not ended in FAILED, ABORTED or MISSED.
            UnknownTask: its task is not registered on this node.
        """
        self._check_open()
        old = await self._store.get(_operations.check_id(instance_id))
        if old is not None:
            self._registry.require(old.task)
        now = self._clock.now_us()
        _, new_id = await _operations.retry(self._store, instance_id, now)
        self._puller.note_pending(now)
        return new_id

    @property
    def closed(self) -> bool:
        """Whether the ``open_scheduler`` block has ended (the node is stopped)."""
        return bool(getattr(self, "_closed", False))

    async def counts(self) -> dict[State, int]:
        """Stored instances per state (every state, zero where none), from the store.

        On SQLite a lookup of maintained counts; on PostgreSQL a count over the table, so
        callers that ask often should cache it (the HTTP layer counts at most every few
        seconds).
        """
        self._check_open()
        return await self._store.count_by_state()

    # -- API tokens (see tickwork.stores.tokens) ------------------------------------------

    async def add_token(self, scope: str, name: str = "") -> tuple[Token, str]:
        """Make an API token with ``scope`` (``"read"`` or ``"admin"``).

        Returns the stored token and its text: the text is not kept (only its hash), so
        this is the one time it can be shown.

        Raises:
            InvalidArgument: a bad scope or name, or a store that keeps no tokens.
        """
        self._check_open()
        return await create_token(self._store.inner, scope, name, self._clock.now_us())

    async def tokens(self) -> builtins.list[Token]:
        """The stored API tokens (never their text), oldest first."""
        self._check_open()
        return await list_tokens(self._store.inner)

    async def remove_token(self, token_id: str) -> None:
        """Revoke an API token by id.

        Raises:
            NotFound: no token has this id.
        """
        self._check_open()
        if not await revoke_token(self._store.inner, token_id):
            raise NotFound(f"no token with id {token_id!r}")

    async def authenticate(self, text: str) -> Token | None:
        """The stored token whose text is ``text``, or None (wrong, revoked, malformed)."""
        self._check_open()
        return await find_token(self._store.inner, text)

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that use this store, most recently started first.

        On a cluster store, every node that ever opened it (from its nodes table); on a
        single-node store, this node (its lock proves it is the only one, and its figures
        are live), then the nodes that ran on it before, from the store's nodes table.
        """
        self._check_open()
        inner = self._store.inner
        if isinstance(inner, ClusterStore):
            return await inner.nodes()
        before = await inner.nodes() if isinstance(inner, NodeRegistry) else []
        await trio.lowlevel.checkpoint()
        now = self._clock.now_us()
        uptime_us = int((trio.current_time() - self._started_at) * 1_000_000)
        running = self._executor.statistics().running
        me = NodeInfo(
            node_id=self.node_id,
            started_us=now - uptime_us,
            last_heartbeat_us=now,
            stopped_us=None,
            alive=True,
            held=self._capacity.statistics().held,
            running=running,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=_version(),
            tasks=tuple(sorted(self._registry)),
            max_params_bytes=self.max_params_bytes,
        )
        return [me, *(n for n in before if n.node_id != self.node_id)]


def _version() -> str:
    from tickwork import __version__  # noqa: PLC0415 - the package imports this module

    return __version__
