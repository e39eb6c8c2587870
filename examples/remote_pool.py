"""A dispatcher that hands runs to a pool of remote workers and records their outcomes.

The node still decides *when* each run starts (claims, leases, limits, timeouts, aborts,
retries); ``PoolDispatcher`` decides *where*: it sends a job to the pool and waits for
the reply, which becomes the run's outcome, recorded by the node like any other. Here the
pool is a few trio tasks joined by memory channels; in production the two channels are a
broker's queues (and the job key, ``(instance id, attempt)``, the idempotency key).

- ``resize`` runs go to the pool; ``report`` runs stay in the node (the default).
- A failure the pool reports is raised from ``dispatch``: the task's retries apply.
- An abort (or a timeout, or the end of the shutdown grace) cancels ``dispatch``: the
  pool is told to cancel the job, and a reply that comes later is dropped.

Run it: python examples/remote_pool.py  (in-memory store, a few seconds of real time)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import attrs
import trio

import tickwork

Key = tuple[int, int]  # (instance id, attempt): what the pool may deduplicate on


@attrs.frozen
class Job:
    key: Key
    task: str
    params: bytes


@attrs.frozen
class CancelJob:
    key: Key


@attrs.frozen
class Reply:
    key: Key
    value: Any = None
    error: str | None = None


class RemoteFailure(Exception):
    """The pool reported that the job failed."""


# -- the remote side: a pool of workers reading jobs and sending replies ------------------


async def serve_pool(
    jobs: trio.MemoryReceiveChannel[Job | CancelJob],
    replies: trio.MemorySendChannel[Reply],
    workers: int,
) -> None:
    limiter = trio.CapacityLimiter(workers)
    scopes: dict[Key, trio.CancelScope] = {}

    async def work(job: Job, scope: trio.CancelScope) -> None:
        params = tickwork.unpack(job.params)
        with scope:  # a job cancelled while it waits for a worker never starts
            async with limiter:
                await trio.sleep(params["seconds"])  # the work
                if params.get("fail_first") and job.key[1] == 1:
                    reply = Reply(job.key, error="worker ran out of memory")
                else:
                    reply = Reply(job.key, value=f"{params['image']} resized")
                await replies.send(reply)
        del scopes[job.key]

    async with trio.open_nursery() as nursery:
        async for message in jobs:
            if isinstance(message, CancelJob):
                if message.key in scopes:
                    print(f"pool: job {message.key} cancelled")
                    scopes[message.key].cancel()
            else:
                print(f"pool: job {message.key} {message.task} received")
                scopes[message.key] = trio.CancelScope()
                nursery.start_soon(work, message, scopes[message.key])


# -- the node side: the dispatcher --------------------------------------------------------


@attrs.define
class _Waiting:
    done: trio.Event = attrs.Factory(trio.Event)
    reply: Reply | None = None


class PoolDispatcher(tickwork.Dispatcher):
    def __init__(
        self,
        jobs: trio.MemorySendChannel[Job | CancelJob],
        replies: trio.MemoryReceiveChannel[Reply],
        remote: frozenset[str],
    ) -> None:
        self._jobs = jobs
        self._replies = replies
        self._remote = remote
        self._waiting: dict[Key, _Waiting] = {}

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        return self._reading_replies()

    @asynccontextmanager
    async def _reading_replies(self) -> AsyncIterator[None]:
        # entered before the node starts, left after its last run was recorded
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_replies)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _read_replies(self) -> None:
        async for reply in self._replies:
            waiting = self._waiting.get(reply.key)
            if waiting is None:  # aborted, timed out or interrupted meanwhile
                print(f"node: late reply for {reply.key} dropped")
                continue
            waiting.reply = reply
            waiting.done.set()

    async def dispatch(self, run: tickwork.RunContext) -> Any:
        if run.task.name not in self._remote:
            return await super().dispatch(run)  # this one runs in the node
        key = (run.instance.id, run.instance.attempts + 1)
        waiting = self._waiting[key] = _Waiting()
        try:
            await self._jobs.send(Job(key, run.task.name, run.instance.params))
            await waiting.done.wait()
        except trio.Cancelled:
            with trio.move_on_after(5) as scope:  # tell the pool, briefly, then go on
                scope.shield = True
                await self._jobs.send(CancelJob(key))
            raise
        finally:
            del self._waiting[key]
        reply = waiting.reply
        if reply is None or reply.error is not None:
            raise RemoteFailure(reply.error if reply else "no reply")
        return reply.value


class Resize(tickwork.Task):
    """Runs in the pool: the node knows its name and policy (retries, timeout) only."""

    name = "resize"
    max_attempts = 2
    timeout = timedelta(minutes=10)


class Report(tickwork.Task):
    name = "report"

    async def run(self, params: bytes) -> str:
        del params  # a report takes none
        print("node: report ran in the node")
        return "report done"


async def _all_ended(scheduler: tickwork.Scheduler, ids: list[int]) -> bool:
    return all([(await scheduler.get(iid)).state.terminal for iid in ids])


async def main(clock: tickwork.Clock | None = None) -> None:
    clock = clock or tickwork.SystemClock()
    to_pool, pool_jobs = trio.open_memory_channel[Job | CancelJob](16)
    pool_replies, from_pool = trio.open_memory_channel[Reply](16)
    async with trio.open_nursery() as remote:
        remote.start_soon(serve_pool, pool_jobs, pool_replies, 2)
        dispatcher = PoolDispatcher(to_pool, from_pool, remote=frozenset({"resize"}))
        async with tickwork.open_scheduler(
            tickwork.MemoryStore(), tasks=[Resize(), Report()], clock=clock, dispatcher=dispatcher
        ) as scheduler:
            at = clock.now() + timedelta(milliseconds=100)
            ids = [
                await scheduler.schedule("resize", at=at, params={"image": "a.png", "seconds": 1}),
                await scheduler.schedule(
                    "resize", at=at, params={"image": "b.png", "seconds": 1, "fail_first": True}
                ),
                await scheduler.schedule("resize", at=at, params={"image": "c.png", "seconds": 60}),
                await scheduler.schedule("report", at=at),
            ]
            await clock.sleep_until(at + timedelta(milliseconds=500))
            await scheduler.abort(ids[2])  # the long one: the pool is told to cancel it
            with scheduler.subscribe() as events:
                while not await _all_ended(scheduler, ids):
                    await events.receive()
            for iid in ids:
                inst = await scheduler.get(iid)
                print(f"instance {iid}: {inst.state.name} after {inst.attempts} attempt(s)")
        remote.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
