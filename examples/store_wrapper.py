"""Wrap a store: act around every call of another store (timing, logging, auditing).

``tickwork.stores.StoreWrapper(inner)`` forwards every method of the Store protocol to
``inner`` through one method, ``_call(method, call)``: override it, and every call, of
the node's actors and of your own code alike, passes through it.

Run it: python examples/store_wrapper.py  (in-memory store, about three seconds)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import trio

import tickwork
from tickwork.stores import Store, StoreWrapper

T = TypeVar("T")


class CallStats(StoreWrapper):
    """Counts the calls of each store method and adds up how long they took."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        started = trio.current_time()
        try:
            return await call()
        finally:
            self.calls[method] += 1
            self.seconds[method] += trio.current_time() - started


class Hello(tickwork.Task):
    name = "hello"

    async def run(self, params: bytes) -> None:
        print(f"hello {params.decode()}")


async def main(clock: tickwork.Clock | None = None) -> CallStats:
    store = CallStats(tickwork.MemoryStore())
    async with tickwork.open_scheduler(store, tasks=[Hello()], clock=clock) as sched:
        with sched.subscribe() as events:  # before scheduling: the first runs at once
            now = sched.now()
            news = [
                tickwork.NewInstance("hello", now + timedelta(seconds=s), b"%d" % s)
                for s in (0, 1, 2)
            ]
            await sched.schedule_many(news)
            ended = 0
            async for event in events:
                if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                    ended += 1
                    if ended == len(news):
                        break
    print(f"inserts: {store.calls['insert']}; outcomes written in {store.calls['finish']} calls")
    return store


if __name__ == "__main__":
    trio.run(main)
