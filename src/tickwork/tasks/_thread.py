"""WorkerThread: a thread of a task's own for a blocking client library (pika, kombu).

Such clients are not thread-safe: their connection must be used from one thread. The
task's calls run on that thread one at a time, in order; the trio side waits without
holding a worker thread of trio's pool. A call whose caller was cancelled still runs to
its end (a hand-off cannot be taken back halfway); its answer is dropped.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["WorkerThread"]

T = TypeVar("T")
_Call = tuple[Callable[[], Any], Callable[[outcome.Outcome[Any]], None]]


class WorkerThread:
    """Runs calls on one thread; :meth:`close` ends it after the calls already queued."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, deliver = item
            deliver(outcome.capture(fn))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the thread and return what it returned (or raise what it raised)."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def arrived(result: outcome.Outcome[T]) -> None:
            box.append(result)
            done.set()

        def deliver(result: outcome.Outcome[T]) -> None:
            # If the caller's trio run is gone, nobody waits for this answer.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(arrived, result)

        self._calls.put((fn, deliver))
        await done.wait()
        return box[0].unwrap()

    async def close(self, last: Callable[[], object] | None = None) -> None:
        """Run ``last`` (e.g. closing the connection) after the queued calls, then end."""
        if last is not None:
            self._calls.put((last, lambda _: None))
        self._calls.put(None)
        await trio.to_thread.run_sync(self._thread.join, abandon_on_cancel=True)
