"""A plugin: your own actor in the node, with the scheduler and its events at hand.

``Escalate`` watches the node's event stream and, when a run of the watched task fails
for good, schedules a run of a paging task for it. It starts once the node is ready
(taking trio's ``task_status``, so the ``async with`` body waits for its subscription)
and is cancelled first when the node stops. If it raised, the node would stop and
``open_scheduler`` would raise ``tickwork.PluginCrashed``.

Run it: python examples/plugin.py  (in-memory store, about a second of real time)
"""

from __future__ import annotations

from datetime import timedelta

import trio

import tickwork


class Escalate(tickwork.Plugin):
    name = "escalate"

    def __init__(self, watched: str, page: str) -> None:
        self.watched = watched
        self.page = page

    def validate(self) -> None:  # called by open_scheduler, before the store opens
        if self.watched == self.page:
            raise tickwork.InvalidArgument("escalate: a task cannot page for itself")

    async def run(
        self,
        context: tickwork.PluginContext,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with context.subscribe() as events:
            task_status.started()
            async for event in events:
                if isinstance(event, tickwork.EventsLost):
                    print(f"escalate: {event.count} events lost")  # a slow subscriber
                elif event.task == self.watched and event.to_state is tickwork.State.FAILED:
                    await context.scheduler.schedule(
                        self.page, at=context.clock.now(), params={"failed": event.instance_id}
                    )


class Sync(tickwork.Task):
    name = "sync"

    async def run(self, params: bytes) -> None:
        source = tickwork.unpack(params)["source"]
        if source == "ftp":
            raise ConnectionError(f"{source}: connection refused")
        print(f"synced {source}")


class Page(tickwork.Task):
    name = "page"

    async def run(self, params: bytes) -> None:
        print(f"paging on-call: instance {tickwork.unpack(params)['failed']} failed")


async def main(clock: tickwork.Clock | None = None) -> None:
    clock = clock or tickwork.SystemClock()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(),
        tasks=[Sync(), Page()],
        clock=clock,
        plugins=[Escalate(watched="sync", page="page")],
    ) as scheduler:
        soon = clock.now() + timedelta(milliseconds=100)
        for i, source in enumerate(["s3", "ftp"]):
            at = soon + timedelta(milliseconds=100 * i)
            await scheduler.schedule("sync", at=at, params={"source": source})
        with scheduler.subscribe() as events:
            async for event in events:
                page = isinstance(event, tickwork.TransitionEvent) and event.task == "page"
                if page and event.to_state.terminal:
                    break
        for inst in reversed(await scheduler.list()):
            print(f"instance {inst.id} ({inst.task}): {inst.state.name}")


if __name__ == "__main__":
    trio.run(main)
