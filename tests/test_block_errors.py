"""What comes out of ``async with open_scheduler(...)`` when its block raises.

A lone exception raised in the block comes out as itself (``except ValueError`` catches
it), with its own context and traceback, after the node stopped as cleanly as on a normal
exit. When more than one thing went wrong (the block raised and an actor crashed while
the node stopped) the ExceptionGroup is kept whole.
"""

from __future__ import annotations

import traceback
from datetime import timedelta

import pytest
import trio

import tickwork
from tests.support.faults import FaultyStore
from tests.support.helpers import Recording, wait_until
from tickwork import State
from tickwork._groups import leaves
from tickwork.testing import VirtualClock


class Boom(Exception):
    pass


async def test_a_lone_exception_from_the_block_comes_out_as_itself(autojump_clock):
    clock = VirtualClock()
    store = tickwork.MemoryStore()
    error = Boom("from the block")
    ids = []

    async def node() -> None:
        async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as s:
            ids.append(await s.schedule("rec", at=clock.now() + timedelta(minutes=5)))
            await wait_until(lambda: s.statistics().in_memory == 1)
            raise error

    with pytest.raises(Boom) as info:
        await node()
    assert info.value is error
    assert type(info.value) is Boom  # not an ExceptionGroup holding it
    # no cycle through the group that carried it out
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    # the node stopped as on a normal exit: the claim was given back
    await store.open()
    assert (await store.get(ids[0])).state is State.PENDING  # type: ignore[union-attr]
    await store.aclose()


async def test_the_lone_exception_keeps_its_own_context_and_traceback(autojump_clock):
    clock = VirtualClock()

    def fails_while_handling() -> None:
        try:
            {}["missing"]
        except KeyError:
            raise Boom("while handling") from None

    with pytest.raises(Boom) as info:
        async with tickwork.open_scheduler(tickwork.MemoryStore(), clock=clock):
            fails_while_handling()
    assert isinstance(info.value.__context__, KeyError)
    assert info.value.__suppress_context__
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "fails_while_handling" in frames


async def test_a_lone_cancellation_from_outside_is_absorbed_by_its_scope(autojump_clock):
    clock = VirtualClock()
    with trio.move_on_after(5) as scope:
        async with tickwork.open_scheduler(tickwork.MemoryStore(), clock=clock):
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_several_errors_stay_an_exception_group(autojump_clock):
    # An actor crashes and, while the node stops, the block's own clean-up fails too:
    # both really happened, both come out.
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())
    error = Boom("clean-up of the block")

    async def node() -> None:
        async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as s:
            try:
                store.fail("claim", 1, RuntimeError("bug in a custom store"))
                await s.schedule("rec", at=clock.now())
                await trio.sleep_forever()
            finally:
                raise error

    with pytest.raises(BaseExceptionGroup) as info:
        await node()
    found = leaves(info.value)
    assert error in found
    assert any(isinstance(e, RuntimeError) for e in found), found
    assert len(found) == 2


async def test_a_group_raised_by_the_block_comes_out_as_that_group(autojump_clock):
    clock = VirtualClock()
    error = ExceptionGroup("two at once", [Boom("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as info:
        async with tickwork.open_scheduler(tickwork.MemoryStore(), clock=clock):
            raise error
    assert info.value is error


async def test_an_actor_crash_alone_is_still_reported_in_a_group(autojump_clock):
    # Only what the block raised is unwrapped; an actor's crash cancels the block and
    # comes out grouped, as before (tickwork run and the tests that catch it rely on it).
    clock = VirtualClock()
    store = FaultyStore(tickwork.MemoryStore())

    async def node() -> None:
        async with tickwork.open_scheduler(store, tasks=[Recording(clock)], clock=clock) as s:
            store.fail("claim", 1, RuntimeError("bug in a custom store"))
            await s.schedule("rec", at=clock.now())
            await trio.sleep_forever()

    with pytest.raises(BaseExceptionGroup) as info:
        await node()
    [crash] = leaves(info.value)
    assert isinstance(crash, RuntimeError)
