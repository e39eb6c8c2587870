"""FaultyStore: a Store wrapper that fails chosen calls on demand, and can "crash".

A :class:`tickwork.stores.StoreWrapper` (the node's retrying wrapper is one too): every
call of the Store protocol reaches a real store (memory, SQLite, ...) through one gate,
:meth:`FaultyStore._call`, where a test injects faults:

* ``fail(method, times, error)`` - the next ``times`` calls of ``method`` raise ``error``
  (a ``StoreUnavailable`` by default: what the node must retry) *before* reaching the
  inner store, so a failed call changed nothing, as with a real one-transaction store;
* ``break_(method, error)`` / ``heal()`` - fail every call until healed (an outage);
* ``crash_now()`` / ``arm_crash(after_writes, apply)`` - the process "dies": from then on
  every call raises :class:`Crashed` and nothing more reaches the inner store. With
  ``arm_crash`` the crash happens at the n-th write from now, which is applied first when
  ``apply`` is true (the commit landed, the reply was lost) or refused when false (the
  process died before committing). ``on_crash`` callbacks run at that moment (the
  harness cancels the node there: a hard stop with no graceful shutdown).

After a crash, ``aclose()`` closes the inner store without any further write (a killed
process's connection and node lock die with it) and ``revive()`` makes the wrapper usable
again: reopening it is a restart on the same database.
"""

from __future__ import annotations

import inspect
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

import tickwork
from tickwork.errors import StoreError, StoreUnavailable
from tickwork.model import Finish
from tickwork.stores import StoreWrapper
from tickwork.stores.base import Store

T = TypeVar("T")

#: Store calls that write (a crash point sits between any two of them).
WRITES = frozenset(
    {"insert", "claim", "start", "finish", "release", "renew", "recover", "request_abort", "prune"}
)


class Crashed(StoreError):
    """The simulated process died: this call (and every later one) never happened.

    A StoreError but not a StoreUnavailable: the node does not retry it.
    """


class FaultyStore(StoreWrapper):
    """See the module docstring."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.writes = 0
        #: every outcome write the inner store accepted, in order
        self.finished: list[Finish] = []
        self.crashed = False
        #: calls under way (a test driving time by hand waits for them: see TrioPortal.busy)
        self.in_flight = 0
        self.on_crash: list[Callable[[], None]] = []
        self._queued: dict[str, deque[BaseException]] = {}
        self._broken: dict[str, BaseException] = {}
        self._crash_in: int | None = None
        self._crash_applies = False
        self._crash_method: str | None = None
        self._closed_inner = False

    # -- fault controls -----------------------------------------------------------------

    def fail(self, method: str, times: int = 1, error: BaseException | None = None) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` (default StoreUnavailable)."""
        queue = self._queued.setdefault(method, deque())
        for _ in range(times):
            queue.append(error or StoreUnavailable(f"injected fault in {method}"))

    def break_(self, method: str = "*", error: BaseException | None = None) -> None:
        """Every call of ``method`` (``"*"``: every method) fails until :meth:`heal`."""
        self._broken[method] = error or StoreUnavailable(f"injected outage of {method}")

    def heal(self) -> None:
        self._broken.clear()
        self._queued.clear()

    def arm_crash(self, after_writes: int, *, apply: bool, method: str | None = None) -> None:
        """Crash at the ``after_writes``-th write from now (1 = the next write), counting
        only calls of ``method`` if given."""
        assert after_writes >= 1
        self._crash_in = after_writes
        self._crash_applies = apply
        self._crash_method = method

    def disarm(self) -> None:
        """Forget an armed crash that has not happened."""
        self._crash_in = None

    def crash_now(self) -> None:
        if not self.crashed:
            self.crashed = True
            self._crash_in = None
            for callback in self.on_crash:
                callback()

    def revive(self) -> None:
        """After a crash and ``aclose``: the database is there again for a new process."""
        self.crashed = False
        self._closed_inner = False
        self._crash_in = None
        self.heal()

    async def peek(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``fn(inner)`` past the fault gate (a test's own read, allowed even after a
        crash), counted in :attr:`in_flight` like every call: a test driving time by hand
        must not move the clock while its own read is on the store's thread."""
        self.in_flight += 1
        try:
            return await fn(self.inner)
        finally:
            self.in_flight -= 1

    # -- the gate every call goes through -----------------------------------------------

    async def _call(self, method: str, fn: Callable[[], Awaitable[T]]) -> T:
        self.in_flight += 1
        try:
            return await self._gate(method, fn)
        finally:
            self.in_flight -= 1

    async def _gate(self, method: str, fn: Callable[[], Awaitable[T]]) -> T:
        self.calls[method] += 1
        if self.crashed:
            await trio.lowlevel.checkpoint()
            raise Crashed(f"{method}: the process has crashed")
        broken = self._broken.get(method) or self._broken.get("*")
        queued = self._queued.get(method)
        error = broken if broken is not None else (queued.popleft() if queued else None)
        if error is not None:
            self.failed[method] += 1
            await trio.lowlevel.checkpoint()
            raise error
        armed = self._crash_in is not None and self._crash_method in (None, method)
        if method not in WRITES or not armed:
            if method in WRITES:
                self.writes += 1
            return await fn()
        assert self._crash_in is not None
        self._crash_in -= 1
        if self._crash_in > 0:
            self.writes += 1
            return await fn()
        # the crash point
        if self._crash_applies:
            self.writes += 1
            with trio.CancelScope(shield=True):
                await fn()
        self.crash_now()
        raise Crashed(f"{method}: the process crashed during this call")

    # -- life ---------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        if self.crashed:
            raise Crashed("open: the process has crashed")
        self._closed_inner = False
        self.in_flight += 1
        try:
            await self.inner.open(node_id=node_id)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        if self._closed_inner:
            return
        self._closed_inner = True
        self.in_flight += 1
        try:
            await self.inner.aclose()
        finally:
            self.in_flight -= 1

    # -- the protocol: StoreWrapper forwards every method through _call ----------------

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        accepted = await super().finish(owner, finishes, now_us)
        self.finished.extend(f for f, ok in zip(finishes, accepted, strict=True) if ok)
        return accepted

    def __getattr__(self, name: str) -> Any:
        # Methods beyond the Store protocol (the nodes table, a cluster store's heartbeat
        # and change notices, tokens) pass through the same gate: a crash stops them too.
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr) or name.startswith("_"):
            return attr  # a value, or a plain method (a cluster store's granted_lease_us)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, lambda: attr(*args, **kwargs))

        return call


class Node:
    """One scheduler node on a FaultyStore, run in a child task so that a test can stop
    it gracefully (``stop``) or crash it (``crash``: the store refuses every further
    call and the node's task tree is cancelled at once: no graceful shutdown, nothing
    more reaches the database, as when the process is killed)."""

    def __init__(self, store: FaultyStore, **options: Any) -> None:
        self.store = store
        self.options = options
        self.sched: tickwork.Scheduler | None = None
        self._scope: trio.CancelScope | None = None
        self._stop = trio.Event()
        self._done = trio.Event()
        store.on_crash.append(self._on_crash)

    def _on_crash(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def start(self, nursery: trio.Nursery) -> tickwork.Scheduler:
        self._stop = trio.Event()
        self._done = trio.Event()
        sched: tickwork.Scheduler = await nursery.start(self._run)
        return sched

    async def _run(
        self, task_status: trio.TaskStatus[tickwork.Scheduler] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with trio.CancelScope() as self._scope:
                try:
                    async with tickwork.open_scheduler(self.store, **self.options) as sched:
                        self.sched = sched
                        task_status.started(sched)
                        await self._stop.wait()
                except* Crashed:
                    pass
        finally:
            self._scope = None
            self.sched = None
            self._done.set()

    async def stop(self) -> None:
        """Leave the open_scheduler block: a graceful shutdown."""
        self._stop.set()
        await self._done.wait()

    async def crash(self) -> None:
        """Kill the node now; afterwards the store can be opened again (a restart)."""
        self.store.crash_now()
        await self.wait_crashed()

    async def wait_crashed(self) -> None:
        """Wait for a crash (``crash`` or an armed crash point) to end the node."""
        await self._done.wait()
        assert self.store.crashed
        await self.store.aclose()
        self.store.revive()
