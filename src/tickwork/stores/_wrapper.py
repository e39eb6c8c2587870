"""StoreWrapper: one forwarding layer over the Store protocol.

A wrapper that adds behaviour around every store call (retry on fault, fault injection,
timing, logging) subclasses :class:`StoreWrapper` and overrides one method,
:meth:`StoreWrapper._call`, which every protocol call goes through with its method name.
A method added to :class:`~tickwork.stores.base.Store` is forwarded here, once, and every
wrapper has it (a test checks that every protocol method is).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
from tickwork.schedules.plan import OccurrenceCheck
from tickwork.schedules.schedule import Schedule, ScheduleWrite
from tickwork.state import State
from tickwork.stores.base import Store

__all__ = ["StoreWrapper"]

T = TypeVar("T")


class StoreWrapper:
    """A :class:`~tickwork.stores.base.Store` that forwards every call to ``inner``.

    Subclasses override :meth:`_call` to act around each call; ``open`` and ``aclose``
    (the store's life, not calls) are forwarded directly and may be overridden too.
    """

    def __init__(self, inner: Store) -> None:
        #: the wrapped store
        self.inner = inner

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:  # noqa: ARG002 - for subclasses
        """Run one store call. ``method`` is the protocol method's name; ``call`` makes
        the call to ``inner`` afresh each time it is awaited (so it may be retried)."""
        return await call()

    # -- life -------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        await self.inner.open(node_id=node_id)

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- instances --------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        return await self._call("insert", lambda: self.inner.insert(rows, now_us))

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        return await self._call(
            "claim", lambda: self.inner.claim(owner, due_before_us, limit, now_us, lease_us)
        )

    async def next_pending_at(self) -> int | None:
        return await self._call("next_pending_at", self.inner.next_pending_at)

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        return await self._call("start", lambda: self.inner.start(owner, items, now_us))

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        return await self._call("finish", lambda: self.inner.finish(owner, finishes, now_us))

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        return await self._call("release", lambda: self.inner.release(owner, now_us, ids))

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        return await self._call("renew", lambda: self.inner.renew(owner, now_us, lease_us))

    async def recover(self, now_us: int) -> int:
        return await self._call("recover", lambda: self.inner.recover(now_us))

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        return await self._call(
            "request_abort", lambda: self.inner.request_abort(instance_id, now_us)
        )

    async def abort_requests(self, owner: str) -> list[int]:
        return await self._call("abort_requests", lambda: self.inner.abort_requests(owner))

    async def get(self, instance_id: int) -> Instance | None:
        return await self._call("get", lambda: self.inner.get(instance_id))

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> builtins.list[Instance]:
        if where is None:  # a store written before ``where`` existed still lists
            return await self._call(
                "list",
                lambda: self.inner.list(state=state, task=task, limit=limit, before_id=before_id),
            )
        return await self._call(
            "list",
            lambda: self.inner.list(
                state=state, task=task, limit=limit, before_id=before_id, where=where
            ),
        )

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        return await self._call("count", lambda: self.inner.count(state=state, task=task))

    async def count_by_state(self) -> dict[State, int]:
        return await self._call("count_by_state", self.inner.count_by_state)

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        return await self._call("history", lambda: self.inner.history(instance_id))

    async def change_token(self) -> int | None:
        return await self._call("change_token", self.inner.change_token)

    async def prune(self, before_us: int, limit: int) -> int:
        return await self._call("prune", lambda: self.inner.prune(before_us, limit))

    # -- schedules --------------------------------------------------------------------

    async def add_schedule(
        self, schedule: Schedule, now_us: int, *, replace: bool = False
    ) -> ScheduleWrite:
        return await self._call(
            "add_schedule", lambda: self.inner.add_schedule(schedule, now_us, replace=replace)
        )

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._call("get_schedule", lambda: self.inner.get_schedule(schedule_id))

    async def list_schedules(
        self, *, limit: int = 1000, after_id: str | None = None
    ) -> builtins.list[Schedule]:
        return await self._call(
            "list_schedules", lambda: self.inner.list_schedules(limit=limit, after_id=after_id)
        )

    async def pause_schedule(self, schedule_id: str, now_us: int) -> Schedule | None:
        return await self._call(
            "pause_schedule", lambda: self.inner.pause_schedule(schedule_id, now_us)
        )

    async def resume_schedule(self, schedule_id: str, now_us: int) -> ScheduleWrite | None:
        return await self._call(
            "resume_schedule", lambda: self.inner.resume_schedule(schedule_id, now_us)
        )

    async def remove_schedule(self, schedule_id: str, now_us: int) -> bool:
        return await self._call(
            "remove_schedule", lambda: self.inner.remove_schedule(schedule_id, now_us)
        )

    async def check_occurrences(
        self, ids: Sequence[int], now_us: int, *, admit: Collection[int] = ()
    ) -> builtins.list[OccurrenceCheck]:
        return await self._call(
            "check_occurrences", lambda: self.inner.check_occurrences(ids, now_us, admit=admit)
        )
