"""The Leases, Aborts and Janitor actors alone, on trio's virtual clock (no node).

Like trio-util's ``tests/test_periodic.py``: the loops run on ``trio_util.periodic``, so
their ticks fall on exact multiples of the period.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
import trio

import tickwork
from tests.support.actors import OWNER, SECOND, claimed, open_store, pending
from tickwork.actors.aborts import Aborts
from tickwork.actors.janitor import Janitor
from tickwork.actors.leases import Leases
from tickwork.actors.messages import (
    Abort,
    AbortRequested,
    AbortsMsg,
    PendingAborted,
    PullerMsg,
    RecorderMsg,
    SchedulesChanged,
    TimekeeperMsg,
)
from tickwork.model import NewRow
from tickwork.state import State
from tickwork.stores.cluster import Changes
from tickwork.testing import VirtualClock


async def test_renewals_fall_every_third_of_the_lease(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 100)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](16)
    to_aborts, _aborts_in = trio.open_memory_channel[AbortsMsg](16)
    leases = Leases(
        store=store,
        clock=clock,
        owner=OWNER,
        lease_us=3 * SECOND,
        poll_interval_us=SECOND // 2,
        to_puller=to_puller,
        to_aborts=to_aborts,
    )
    start = clock.now_us()
    async with trio.open_nursery() as nursery:
        await nursery.start(leases.run)
        for k in range(1, 5):
            await clock.sleep_until_us(start + k * SECOND + SECOND // 2)
            held = await store.get(inst.id)
            assert held is not None
            # renewed at k s (not before: the claim was just made), for one lease
            assert held.lease_until_us == start + k * SECOND + 3 * SECOND
        leases.stop()
    assert pending(puller_in) == []  # nothing changed elsewhere: nobody woken


async def test_the_aborts_actor_tells_the_recorder_first_then_the_timekeeper(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    (inst,) = await claimed(store, clock, 0)
    to_aborts, aborts_in = trio.open_memory_channel[AbortsMsg](16)
    to_rec, rec_in = trio.open_memory_channel[RecorderMsg](16)
    to_tk, tk_in = trio.open_memory_channel[TimekeeperMsg](16)
    aborts = Aborts(receive=aborts_in, to_recorder=to_rec, to_timekeeper=to_tk)
    async with trio.open_nursery() as nursery:
        await nursery.start(aborts.run)
        await to_aborts.send(AbortRequested((1, 2)))
        await to_aborts.send(PendingAborted(inst))
        assert await rec_in.receive() == AbortRequested((1, 2))
        assert [await tk_in.receive() for _ in range(2)] == [Abort(1), Abort(2)]
        assert await rec_in.receive() == PendingAborted(inst)
        aborts.stop()
    # stopped: its ends of the pipeline's channels are closed
    assert pending(tk_in) == []
    assert aborts.carried() == 2


async def test_the_janitor_prunes_on_a_fixed_grid_however_long_a_pass_takes(
    autojump_clock: object,
) -> None:
    clock = VirtualClock()
    store = await open_store()
    start = clock.now_us()
    ended = [NewRow(task="t", run_at_us=start, params=b"", state=State.SUCCEEDED)] * 3
    await store.insert(ended, start)
    # every 1 s; the first pass prunes 3 rows one per call, pausing 0.05 s after each
    janitor = Janitor(store=store, clock=clock, retention_us=SECOND // 2, batch=1)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(janitor.run)
        for k in range(1, 5):
            await trio.sleep_until(t0 + k + 0.5)
            stats = janitor.statistics()
            assert stats.passes == k
            # each pass at k s exactly: the first one's 0.15 s do not push the others
            assert stats.last_cutoff_us == start + k * SECOND - SECOND // 2
        assert janitor.statistics().pruned == 3
        janitor.stop()


class _PolledStore(tickwork.MemoryStore):
    """A MemoryStore whose ``change_token`` another process moves (as SQLite's does)."""

    token = 0

    async def change_token(self) -> int | None:
        return self.token


class _Notices:
    """What the Leases actor needs of a ClusterLink: one beat, then the notices given."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[Changes](16)

    async def beat(self) -> bool:
        return False

    async def heartbeats(self) -> AsyncGenerator[bool, None]:
        await trio.sleep_forever()
        yield False  # pragma: no cover - never reached

    async def next_changes(self) -> Changes:
        return await self._receive.receive()


def _leases(
    store: tickwork.Store, clock: VirtualClock, cluster: object = None
) -> tuple[Leases, trio.MemoryReceiveChannel[SchedulesChanged]]:
    to_puller, _puller_in = trio.open_memory_channel[PullerMsg](16)
    to_aborts, _aborts_in = trio.open_memory_channel[AbortsMsg](16)
    to_notices, notices_in = trio.open_memory_channel[SchedulesChanged](1)
    leases = Leases(
        store=store,
        clock=clock,
        owner=OWNER,
        lease_us=30 * SECOND,
        poll_interval_us=SECOND // 2,
        to_puller=to_puller,
        to_aborts=to_aborts,
        cluster=cluster,  # type: ignore[arg-type]
        to_notices=to_notices,
    )
    return leases, notices_in


async def test_a_change_a_poll_sees_is_told_to_the_notifier(autojump_clock: object) -> None:
    clock = VirtualClock()
    store = _PolledStore()
    await store.open(node_id=OWNER)
    leases, notices_in = _leases(store, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(leases.run)
        await trio.sleep(2.25)  # polls at every 0.5 s; these checks fall between them
        assert pending(notices_in) == []  # nothing changed elsewhere
        store.token += 1
        await trio.sleep(0.5)
        assert pending(notices_in) == [SchedulesChanged()]
        store.token += 1
        await trio.sleep(0.5)
        store.token += 1
        await trio.sleep(0.5)
        # one message waits at most: the notifier reads everything again anyway
        assert pending(notices_in) == [SchedulesChanged()]
        leases.stop()
    with pytest.raises(trio.EndOfChannel):  # closed when the actor stopped
        notices_in.receive_nowait()


async def test_only_a_schedule_notice_or_a_lost_one_is_told_to_the_notifier(
    autojump_clock: object,
) -> None:
    # New work from other nodes is announced all the time on PostgreSQL: it must not make
    # the notifier read every schedule again.
    clock = VirtualClock()
    store = await open_store()
    notices = _Notices()
    leases, notices_in = _leases(store, clock, notices)
    async with trio.open_nursery() as nursery:
        await nursery.start(leases.run)
        await notices.send.send(Changes(pending_us=clock.now_us()))
        await notices.send.send(Changes(aborts=True))
        await trio.sleep(1)
        assert pending(notices_in) == []
        await notices.send.send(Changes(schedules=True, pending_us=clock.now_us()))
        await trio.sleep(1)
        assert pending(notices_in) == [SchedulesChanged()]
        await notices.send.send(Changes(lost=True))
        await trio.sleep(1)
        assert pending(notices_in) == [SchedulesChanged()]
        leases.stop()
