"""Plugins (tickwork.Plugin): started on a ready node, stopped first, a crash stops the node."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio

import tickwork
from tests.support.helpers import Recording, settle, wait_until
from tickwork import State
from tickwork._groups import leaves
from tickwork.testing import VirtualClock


class Scheduling(tickwork.Plugin):
    """Schedules one run of ``rec`` from inside the node, then waits for the stop."""

    name = "scheduling"

    def __init__(self) -> None:
        self.events: list[tuple[int, State]] = []
        self.seen_at_stop: dict[str, Any] = {}

    async def run(self, context: tickwork.PluginContext) -> None:
        scheduler = context.scheduler
        assert context.node_id == scheduler.node_id == "n1"
        with context.subscribe() as events:
            at = context.clock.now() + timedelta(seconds=1)
            await scheduler.schedule("rec", at=at)
            try:
                async for event in events:
                    if isinstance(event, tickwork.TransitionEvent):
                        self.events.append((event.instance_id, event.to_state))
            finally:
                # stopped before the node stops claiming: the API still answers
                with trio.CancelScope(shield=True):
                    self.seen_at_stop["running"] = scheduler.statistics().executor.running
                    self.seen_at_stop["pending"] = await scheduler.count(state=State.PENDING)


async def test_plugin_uses_the_scheduler_and_events_and_stops_before_the_drain(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    plugin = Scheduling()
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, node_id="n1", plugins=[plugin]
    ) as sched:
        await wait_until(lambda: (1, State.SUCCEEDED) in plugin.events)
        assert plugin.events == [(1, State.CLAIMED), (1, State.RUNNING), (1, State.SUCCEEDED)]
        task.sleep = timedelta(seconds=10)
        slow = await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
        await wait_until(lambda: sched.statistics().executor.running == 1)
    # the plugin ended while the run was still in progress; the run then finished (grace)
    assert plugin.seen_at_stop == {"running": 1, "pending": 0}
    assert len(task.runs) == 2
    assert slow in task.successes


class Ready(tickwork.Plugin):
    """Takes trio's task_status: the body waits for it to be ready."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def run(
        self,
        context: tickwork.PluginContext,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.sleep(1)  # connecting somewhere, say
        self.order.append("plugin ready")
        task_status.started()
        await trio.sleep_forever()


async def test_plugin_taking_task_status_is_ready_before_the_body_runs(autojump_clock):
    order: list[str] = []
    async with tickwork.open_scheduler(tickwork.MemoryStore(), plugins=[Ready(order)]):
        order.append("body")
    assert order == ["plugin ready", "body"]


class Crashing(tickwork.Plugin):
    name = "reaper"

    def __init__(self, after: float) -> None:
        self.after = after

    async def run(self, context: tickwork.PluginContext) -> None:
        await trio.sleep(self.after)
        raise ZeroDivisionError("bad arithmetic")


async def test_plugin_crash_stops_the_node_with_a_clear_error(autojump_clock, caplog):
    clock = VirtualClock()
    task = Recording(clock)
    task.sleep = timedelta(seconds=1)
    store = tickwork.MemoryStore()
    body_cancelled = False
    iid = 0

    async def node() -> None:
        nonlocal body_cancelled, iid
        async with tickwork.open_scheduler(
            store, tasks=[task], clock=clock, plugins=[Crashing(after=60)]
        ) as sched:
            iid = await sched.schedule("rec", at=clock.now() + timedelta(seconds=59.5))
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                body_cancelled = True
                raise

    with pytest.raises(BaseException) as info:
        await node()
    [error] = leaves(info.value)
    assert isinstance(error, tickwork.PluginCrashed)
    assert str(error) == (
        "plugin 'reaper' crashed: ZeroDivisionError: bad arithmetic; the node stopped"
    )
    assert isinstance(error.__cause__, ZeroDivisionError)
    assert body_cancelled
    [record] = [r for r in caplog.records if r.name == "tickwork.plugins"]
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith("plugin 'reaper' crashed; node ")
    assert record.exc_info is not None
    assert record.exc_info[1] is error.__cause__
    # stopped as when the body raises: the run in progress was cancelled and its claim
    # given back, so it runs again on the next node (at least once)
    assert len(task.runs) == 1
    assert task.successes == []
    async with tickwork.open_scheduler(store, tasks=[task], clock=clock) as again:
        await settle(again)
        assert (await again.get(iid)).state is State.SUCCEEDED
    assert len(task.runs) == 2


async def test_plugin_crash_before_started_means_the_node_never_starts(autojump_clock):
    class Fails(tickwork.Plugin):
        async def run(
            self,
            context: tickwork.PluginContext,
            *,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            raise OSError("cannot connect")

    entered = False

    async def node() -> None:
        nonlocal entered
        async with tickwork.open_scheduler(tickwork.MemoryStore(), plugins=[Fails()]):
            entered = True  # pragma: no cover

    with pytest.raises(BaseException) as info:
        await node()
    [error] = leaves(info.value)
    assert str(error) == "plugin 'Fails' crashed: OSError: cannot connect; the node stopped"
    assert not entered


async def test_plugin_that_returns_leaves_the_node_running(autojump_clock):
    class Once(tickwork.Plugin):
        async def run(self, context: tickwork.PluginContext) -> None:
            await context.scheduler.schedule("rec", at=context.clock.now())

    clock = VirtualClock()
    task = Recording(clock)
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, plugins=[Once()]
    ) as sched:
        await wait_until(lambda: task.successes)
        later = await sched.schedule("rec", at=clock.now() + timedelta(minutes=1))
        await settle(sched)
        assert (await sched.get(later)).state is State.SUCCEEDED


async def test_plugins_are_cancelled_when_the_node_is_cancelled_from_outside(autojump_clock):
    stopped: list[str] = []

    class Waits(tickwork.Plugin):
        async def run(self, context: tickwork.PluginContext) -> None:
            try:
                await trio.sleep_forever()
            finally:
                stopped.append("waits")

    with trio.move_on_after(5):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), plugins=[Waits()]):
            await trio.sleep_forever()
    assert stopped == ["waits"]


async def test_body_exception_comes_through_the_plugins_as_itself(autojump_clock):
    class Idle(tickwork.Plugin):
        async def run(self, context: tickwork.PluginContext) -> None:
            await trio.sleep_forever()

    with pytest.raises(KeyError, match="mine"):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), plugins=[Idle()]):
            raise KeyError("mine")


async def test_bad_plugins_are_refused_before_the_node_starts():
    class Checked(tickwork.Plugin):
        def __init__(self, every: float) -> None:
            self.every = every

        def validate(self) -> None:
            if self.every <= 0:
                raise tickwork.InvalidArgument(f"every must be positive, got {self.every}")

    async def refused(plugins: object) -> str:
        with pytest.raises(tickwork.InvalidArgument) as info:
            async with tickwork.open_scheduler(tickwork.MemoryStore(), plugins=plugins):  # type: ignore[arg-type]
                pass  # pragma: no cover
        return str(info.value)

    assert await refused([Checked(0)]) == "every must be positive, got 0"
    assert "plugins must be a list" in await refused(Checked(1))
    assert "pass an instance, not the class" in await refused([Checked])
    assert "must be tickwork.Plugin instances" in await refused([object()])
    assert await refused([Checked(1), Checked(2)]) == (
        "two plugins are named 'Checked'; plugin names must be unique"
    )
