"""Dispatchers (tickwork.Dispatcher): where runs go, with the node's guarantees kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

import tickwork
from tests.support.helpers import Recording, settle
from tickwork import State
from tickwork.testing import VirtualClock


class Logged(tickwork.Dispatcher):
    """Runs each task here (the default) and notes what it saw, and its lifespan."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def dispatch(self, run: tickwork.RunContext) -> Any:
        self.log.append(f"dispatch {run.instance.id} {run.task.name}")
        return await super().dispatch(run)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        self.log.append("open")
        yield
        self.log.append("close")

    def lifespan(self) -> Any:
        return self._lifespan()


async def test_dispatcher_gets_every_run_inside_its_lifespan_and_middleware(autojump_clock):
    clock = VirtualClock()
    task = Recording(clock)
    dispatcher = Logged()

    async def around(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        dispatcher.log.append("middleware")
        return await call_next()

    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[task], clock=clock, dispatcher=dispatcher,
        middleware=[around],
    ) as sched:  # fmt: skip
        assert dispatcher.log == ["open"]
        iid = await sched.schedule("rec", at=clock.now() + timedelta(seconds=1))
        await settle(sched)
        assert (await sched.get(iid)).state is State.SUCCEEDED
    assert dispatcher.log == ["open", "middleware", f"dispatch {iid} rec", "close"]
    assert len(task.runs) == 1


async def test_dispatcher_must_be_a_dispatcher():
    with pytest.raises(
        tickwork.InvalidArgument, match=r"dispatcher must be a tickwork\.Dispatcher"
    ):
        async with tickwork.open_scheduler(tickwork.MemoryStore(), dispatcher=object()):  # type: ignore[arg-type]
            pass  # pragma: no cover
