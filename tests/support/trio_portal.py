"""Drive a trio world from synchronous code (hypothesis stateful tests).

A trio loop runs in a thread on a *manual* ``MockClock``: time moves only when the test
says so (``advance``), and after each move the test waits until every task is blocked,
so each step of a state machine sees a settled, deterministic node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio
import trio.testing

T = TypeVar("T")


class TrioPortal:
    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        #: Whether work outside trio's view is under way (a store call on a thread): while
        #: it says so, a settled-looking world is not settled and time does not move.
        self.busy: Callable[[], bool] = lambda: False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any, max_wait: float = 3600) -> T:
        """Run ``afn(*args)`` in the trio thread, then let every task settle.

        While the call is blocked on time, virtual time moves in 1 s steps (at most
        ``max_wait`` seconds: a call that waits longer fails instead of hanging).
        """

        async def call_and_settle() -> T:
            done = trio.Event()
            box: list[outcome.Outcome[T]] = []

            async def target() -> None:
                box.append(await outcome.acapture(afn, *args))
                done.set()

            self.nursery.start_soon(target)
            waited = 0
            while not done.is_set():
                await self._settle()
                if not done.is_set():
                    if waited >= max_wait:
                        raise TimeoutError(f"{afn!r} still blocked after {max_wait} s")
                    self.clock.jump(1)
                    waited += 1
            await self._settle()
            return box[0].unwrap()

        return trio.from_thread.run(call_and_settle, trio_token=self.token)

    def advance(self, seconds: float, *, resolution: float = 0.25) -> None:
        """Move virtual time forward by ``seconds``, from one deadline to the next.

        After each jump the world settles; the next jump goes to the earliest deadline
        (a sleep ending, a timeout), as trio's autojump does, so every timer fires at its
        own time, give or take ``resolution`` (short timers, such as a node's 20 ms note
        delay, would otherwise cost a settle each). Fixed 10 s steps would not do: a 1 s
        run held its worker until the next step, and a node that ran everything on time
        looked late.
        """

        async def go() -> None:
            end = self.clock.current_time() + seconds
            while (remaining := end - self.clock.current_time()) > 0:
                to_next = trio.lowlevel.current_statistics().seconds_to_next_deadline
                self.clock.jump(min(remaining, max(to_next, resolution)))
                await self._settle()

        trio.from_thread.run(go, trio_token=self.token)

    async def _settle(self) -> None:
        """Wait until every task is blocked and nothing is :attr:`busy`."""
        await trio.testing.wait_all_tasks_blocked()
        while self.busy():
            # A thread's result wakes its task through the run loop: give it real time.
            time.sleep(0.0005)  # virtual time must not move meanwhile
            await trio.testing.wait_all_tasks_blocked()

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(timeout=30)
        if self._error is not None:
            raise self._error
