"""The pieces of cluster mode that need no server: lease bookkeeping, pull slots, notices,
and how a node picks its mode. Times are trio's (a MockClock via ``autojump_clock``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio

from tickwork import MemoryStore
from tickwork._time import td_us
from tickwork.actors.cluster_link import ClusterLink, LeaseBook
from tickwork.errors import InvalidArgument
from tickwork.node.mode import CLUSTER_HORIZON, SINGLE_LEASE, node_mode
from tickwork.stores.cluster import Changes
from tickwork.stores.postgres import _cluster as _pg_cluster
from tickwork.stores.postgres._listen import Heard

HOUR = td_us(timedelta(hours=1))


async def test_a_claim_is_usable_until_its_lease_minus_a_margin(autojump_clock: object) -> None:
    leases = LeaseBook(10.0)  # margin: 1 s
    t0 = trio.current_time()
    leases.claimed(7, t0)
    assert leases.valid(7)
    assert not leases.valid(8)
    assert not leases.valid(None)
    await trio.sleep(8.9)
    assert leases.valid(7)
    await trio.sleep(0.2)
    assert not leases.valid(7)


async def test_a_renewal_extends_only_if_it_came_back_in_time(autojump_clock: object) -> None:
    leases = LeaseBook(3.0)  # usable for 2.7 s after sending
    t0 = trio.current_time()
    leases.claimed(1, t0)
    leases.claimed(2, t0)
    leases.claimed(3, t0)
    await trio.sleep(1.0)
    # sent at 1.0, back at 1.1: claims 1 and 2 renewed, 3 had no rows left (forgotten)
    assert leases.renewed(t0 + 1.0, t0 + 1.1, frozenset({1, 2})) == 0
    assert leases.valid(1)
    assert leases.valid(2)
    assert not leases.valid(3)
    await trio.sleep(2.5)  # 3.5: valid until 1.0 + 2.7 = 3.7
    assert leases.valid(1)
    # a renewal sent at 3.5 that comes back at 3.9, after the deadline: lost, whatever
    # the store says (another node may have taken it over in between)
    assert leases.renewed(t0 + 3.5, t0 + 3.9, frozenset({1, 2})) == 2
    assert not leases.valid(1)
    assert leases.statistics().lost == 2


async def test_a_claim_made_while_a_renewal_was_out_keeps_its_deadline(
    autojump_clock: object,
) -> None:
    leases = LeaseBook(3.0)
    t0 = trio.current_time()
    leases.claimed(1, t0 + 0.5)  # after the heartbeat below was sent
    assert leases.renewed(t0, t0 + 1.0, frozenset()) == 0
    assert leases.valid(1)
    assert leases.statistics().claims == 1


def test_pull_slots_interleave_the_nodes() -> None:
    link = ClusterLink.__new__(ClusterLink)
    link.nodes = 3
    slots = {}
    for rank in range(3):
        link.rank = rank
        slots[rank] = [link.slot_at(t, 300) for t in (0, 1, 100, 101, 300, 301)]
    assert slots[0] == [0, 300, 300, 300, 300, 600]
    assert slots[1] == [100, 100, 100, 400, 400, 400]
    assert slots[2] == [200, 200, 200, 200, 500, 500]


def test_fair_share_splits_a_batch_between_the_nodes() -> None:
    link = ClusterLink.__new__(ClusterLink)
    link.nodes = 3
    assert link.fair_share(5000, 100) == 1667
    assert link.fair_share(150, 100) == 100
    assert link.fair_share(50, 100) == 50
    link.nodes = 1
    assert link.fair_share(5000, 100) == 5000


def test_notices_are_parsed_and_merged() -> None:
    heard = Heard()
    for text in (
        _pg_cluster.payload("s1", _pg_cluster.PENDING_WORK, "500"),
        _pg_cluster.payload("s1", _pg_cluster.PENDING_WORK, "200"),
        _pg_cluster.payload("s1", _pg_cluster.ABORT, "other-node"),
        _pg_cluster.payload("s2", _pg_cluster.SCHEDULES),  # another schema's
    ):
        notice = _pg_cluster.parse("s1", text)
        if notice is not None:
            heard.note(notice, "me")
    assert heard.take() == Changes(pending_us=200)
    assert not heard.any
    for text in (_pg_cluster.payload("s1", _pg_cluster.ABORT, "me"), "s1"):
        notice = _pg_cluster.parse("s1", text)
        assert notice is not None
        heard.note(notice, "me")
    assert heard.take() == Changes(aborts=True, lost=True)  # a bare name: anything changed


def test_a_due_time_that_is_not_an_integer_reads_as_due_now() -> None:
    """Another client may NOTIFY anything on the channel: no such payload breaks the
    listener (``²`` and ``--5`` passed the old check and then failed ``int()``)."""
    for arg, due in (("-5", -5), ("\u00b2", 0), ("--5", 0), ("12x", 0), ("", 0)):
        heard = Heard()
        notice = _pg_cluster.parse("s1", _pg_cluster.payload("s1", _pg_cluster.PENDING_WORK, arg))
        assert notice is not None
        heard.note(notice, "me")
        assert heard.take().pending_us == due, arg


def test_a_single_node_keeps_its_window_and_a_long_lease() -> None:
    mode = node_mode(MemoryStore(), window_us=HOUR, lease=None, claim_horizon=None)
    assert (mode.cluster, mode.lease_us, mode.horizon_us) == (None, td_us(SINGLE_LEASE), HOUR)
    mode = node_mode(
        MemoryStore(), window_us=HOUR, lease=timedelta(seconds=5), claim_horizon=CLUSTER_HORIZON
    )
    assert (mode.lease_us, mode.horizon_us) == (5_000_000, td_us(CLUSTER_HORIZON))
    with pytest.raises(InvalidArgument, match="claim_horizon"):
        node_mode(MemoryStore(), window_us=1_000_000, lease=None, claim_horizon=CLUSTER_HORIZON)
    with pytest.raises(InvalidArgument, match="lease"):
        node_mode(MemoryStore(), window_us=HOUR, lease=timedelta(0), claim_horizon=None)
