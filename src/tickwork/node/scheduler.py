"""The Scheduler: what ``open_scheduler`` yields; the public face of a running node.

One class. It reaches its node only through a :class:`~tickwork.node.context.NodeContext`
(two channels into the actors, the store, their statistics); argument checks and the
operations shared with the CLI are helper functions of other modules, and its
recurring-schedule calls (``add_schedule`` and the rest) are written in
:mod:`tickwork.node._schedule_methods`, a mixin.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import final

import trio

from tickwork._time import from_us
from tickwork.errors import InvalidArgument, NotFound, SchedulerClosed
from tickwork.events import Subscription
from tickwork.model import Attempt, Instance, NewInstance
from tickwork.node import operations as _operations
from tickwork.node._abort_waiters import aborted_pending
from tickwork.node._arguments import (
    check_limit,
    check_state,
    instance_filter,
    new_rows,
)
from tickwork.node._schedule_methods import RecurringSchedules
from tickwork.node.context import NodeContext
from tickwork.node.listing import list_instances
from tickwork.node.statistics import SchedulerStatistics, node_statistics, this_node
from tickwork.state import State
from tickwork.stores.cluster import ClusterStore, NodeInfo, NodeRegistry
from tickwork.stores.tokens import Token, create_token, find_token, list_tokens, revoke_token
from tickwork.task import Task

__all__ = ["Scheduler", "SchedulerStatistics"]


@final
class Scheduler(RecurringSchedules):
    """A running node. ``open_scheduler`` builds it over the node's context."""

    def __init__(self, node: NodeContext) -> None:
        self._node = node
        self._store = node.store
        self._registry = node.registry
        self._clock = node.clock
        #: this node's name in the store
        self.node_id = node.settings.node_id
        #: the largest params this node accepts (``open_scheduler(max_params_bytes=...)``)
        self.max_params_bytes = node.settings.max_params_bytes
        self._closed = False

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The tasks this node runs, by name."""
        return self._registry

    @property
    def closed(self) -> bool:
        """Whether the ``open_scheduler`` block has ended (the node is stopped)."""
        return self._closed

    # -- creating instances -------------------------------------------------------

    async def schedule(
        self,
        task: str,
        *,
        at: datetime,
        params: object = b"",
        dedup_key: str | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | None = None,  # noqa: ASYNC109 - the run's timeout, not this call's
    ) -> int:
        """Store one instance of ``task`` due ``at`` (aware datetime) and return its id.

        ``params`` is stored as given if bytes, else packed with msgpack. ``dedup_key``
        makes the call idempotent. ``max_attempts`` and ``timeout`` override the task's.

        Raises:
            UnknownTask, InvalidArgument: refused before anything is stored.
        """
        new = NewInstance(
            task, at, params, dedup_key=dedup_key, max_attempts=max_attempts, timeout=timeout
        )
        (iid,) = await self.schedule_many([new])
        return iid

    async def schedule_many(self, instances: Iterable[NewInstance]) -> builtins.list[int]:
        """Store many instances in one transaction; returns their ids in order.

        Every item is validated first: one bad item refuses the whole call and stores
        nothing.
        """
        self._check_open()
        rows = await new_rows(self._registry, instances, self.max_params_bytes)
        if not rows:
            return []
        ids = await self._store.insert(rows, self._clock.now_us())
        await self._node.stored_pending(min(row.run_at_us for row in rows))
        return ids

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
        await self._node.stored_pending(now)
        return new_id

    # -- aborting -----------------------------------------------------------------

    async def abort(self, instance_id: int) -> State:
        """Abort an instance: pending, claimed or running (a running one is cancelled).

        Returns the state after the abort: ABORTED, or the terminal state it had already
        reached. An instance held by another node (cluster) is aborted by that node; then
        the state returned is its current one (CLAIMED or RUNNING) and the abort follows.
        The task's ``on_abort`` hook is called once, on the node (under
        ``hook_concurrency``, like every hook): ``abort`` does not wait for it.

        Raises ``NotFound`` if no instance has this id.
        """
        self._check_open()
        if not isinstance(instance_id, int) or isinstance(instance_id, bool):
            raise InvalidArgument(f"instance id must be an integer, got {instance_id!r}")
        waiters = self._node.actors.abort_waiters
        waiters.register(instance_id)  # before asking the store: see AbortWaiters
        try:
            result = await self._store.request_abort(instance_id, self._clock.now_us())
            if not result.found:
                raise NotFound(f"no instance with id {instance_id}")
            if result.requested and result.owner == self.node_id:
                await self._node.abort_held((instance_id,))
                return await waiters.wait(self._store, instance_id, self.node_id)
            if result.previous is State.PENDING and result.state is State.ABORTED:
                await aborted_pending(self._node, instance_id)
            assert result.state is not None  # noqa: S101 - found implies a state
            return result.state
        finally:
            waiters.forget(instance_id)

    # -- reading ------------------------------------------------------------------

    async def get(self, instance_id: int) -> Instance:
        """One instance as stored.

        Raises ``NotFound`` if no instance has this id.
        """
        self._check_open()
        inst = await self._store.get(instance_id)
        if inst is None:
            raise NotFound(f"no instance with id {instance_id}")
        return inst

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        schedule_id: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        ended_after: datetime | None = None,
        ended_before: datetime | None = None,
        upcoming: bool | None = None,
    ) -> builtins.list[Instance]:
        """Stored instances, newest first (by id), optionally filtered.

        Args:
            state, task, schedule_id: only instances with this state, task, schedule.
            due_after, due_before: only those due in ``[due_after, due_before)``.
            ended_after, ended_before: only ended (terminal) instances that ended in
                ``[ended_after, ended_before)``.
            limit: at most this many (1..10000).
            before_id: keyset pagination: only ids below it (pass the last id of the
                previous page).
            upcoming: True: only what is still to come (PENDING or CLAIMED, due from
                now); False: only the rest, the history (ended, running, overdue);
                None: both.

        A listing never loads big params: those over 4 KiB are left out (``params`` is
        ``b""`` and ``params_size`` their size); :meth:`get` returns them whole.

        Raises:
            InvalidArgument: a bad filter (naive datetime, limit out of range...).
        """
        self._check_open()
        check_state(state)
        check_limit(limit)
        where = instance_filter(
            before_id=before_id,
            schedule_id=schedule_id,
            due_after=due_after,
            due_before=due_before,
            ended_after=ended_after,
            ended_before=ended_before,
            upcoming=upcoming,
        )
        return await list_instances(
            self._store,
            state=state,
            task=task,
            limit=limit,
            before_id=before_id,
            where=where,
            upcoming=upcoming,
            now_us=self._clock.now_us(),
        )

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match (a durable count, from the store)."""
        self._check_open()
        check_state(state)
        return await self._store.count(state=state, task=task)

    async def counts(self) -> dict[State, int]:
        """Stored instances per state (every state, zero where none), from the store.

        On SQLite a lookup of maintained counts; on PostgreSQL exact up to 10,000 rows per
        state and the planner's estimate beyond (no full scan). Callers that ask often
        should still cache it (the HTTP layer counts at most every few seconds).
        """
        self._check_open()
        return await self._store.count_by_state()

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """The recorded attempts of one instance, oldest first."""
        self._check_open()
        return await self._store.history(instance_id)

    def subscribe(self, *, buffer: int = 10_000) -> Subscription:
        """A bounded stream of this node's transition events (see ``tickwork.events``)."""
        self._check_open()
        if not isinstance(buffer, int) or buffer < 1:
            raise InvalidArgument(f"buffer must be an integer >= 1, got {buffer!r}")
        return self._node.hub.subscribe(buffer)

    def statistics(self) -> SchedulerStatistics:
        """Counts per state, in-memory size, lag and rates of this node, from memory."""
        return node_statistics(self._node)

    def now(self) -> datetime:
        """The scheduler clock's wall time."""
        return from_us(self._clock.now_us())

    # -- recurring schedules: add_schedule and the rest come from RecurringSchedules
    #    (node/_schedule_methods.py; see docs/schedules.md)

    # -- operators: API tokens (see tickwork.stores.tokens) and nodes ---------------

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

        Raises ``NotFound`` if no token has this id.
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
        return [this_node(self._node), *(n for n in before if n.node_id != self.node_id)]

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerClosed("the scheduler was used after its open_scheduler block ended")

    def _close(self) -> None:
        self._closed = True
        self._node.close()
