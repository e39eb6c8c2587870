"""PostgresStore as a cluster store: per-claim leases, heartbeats, nodes, notices, and the
migration that moved leases from rows to claims. Each test gets a fresh schema."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from tests.support.pg_support import drop_schema, fresh_schema, require_pg
from tests.support.protocol_check import protocol_mismatches
from tickwork.model import Finish, Instance, NewRow
from tickwork.state import State
from tickwork.stores.cluster import Changes, ClusterStore
from tickwork.stores.postgres import PostgresStore
from tickwork.stores.postgres import _migrations as _pg_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.postgres

S = 1_000_000
LEASE = 60 * S


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


@asynccontextmanager
async def opened(
    pg: tuple[str, str], node_id: str | None = "a", **kw: Any
) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg[0], schema=pg[1], **kw)
    await store.open(node_id=node_id)
    try:
        yield store
    finally:
        await store.aclose()


def now_us() -> int:
    return time.time_ns() // 1000


def rows(n: int, at: int) -> list[NewRow]:
    return [NewRow(task="t", run_at_us=at, params=b"") for _ in range(n)]


def done(inst: Instance) -> Finish:
    assert inst.claim_token is not None
    return Finish(id=inst.id, claim_token=inst.claim_token, state=State.SUCCEEDED, attempts=1)


def sql(pg: tuple[str, str], query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg[0], autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


async def test_it_is_a_cluster_store(pg: tuple[str, str]) -> None:
    async with opened(pg) as store:
        assert protocol_mismatches(store, ClusterStore) == []  # each method, as declared
        assert isinstance(store, ClusterStore)  # how the node tells cluster mode
        assert store.granted_lease_us(5 * S) == 5 * S
    assert PostgresStore(pg[0], lease=timedelta(seconds=2)).granted_lease_us(5 * S) == 2 * S


async def test_a_heartbeat_renews_live_claims_and_forgets_empty_ones(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id="b") as b:
        await a.insert(rows(6, now), now)
        lapsed = await a.claim("a", now, 2, now, 1)  # lapses at once
        first = await a.claim("a", now, 2, now, LEASE)  # no live claim: a fresh lease
        second = await a.claim("a", now, 2, now, LEASE)
        # a node's claims share one lease: they lapse together
        assert second[0].lease_until_us == first[0].lease_until_us
        assert all(await a.finish("a", [done(i) for i in second], now))  # no rows left
        beat = await a.heartbeat("a", LEASE, held=4, running=1)
        # the live claim is renewed; the empty one is forgotten; the lapsed one is not
        # revived (another node may be taking it over)
        assert beat.tokens == {first[0].claim_token}
        assert (beat.nodes, beat.rank) == (2, 0)
        assert beat.next_lapse_us is None  # b holds nothing
        tokens = {r[0] for r in sql(pg, f"SELECT token FROM {pg[1]}.claims")}
        assert tokens == {first[0].claim_token, lapsed[0].claim_token}
        # b takes the lapsed claim over; a's next heartbeat forgets it, b's sees a's lease
        taken = await b.claim("b", now, 10, now, LEASE)
        assert sorted(i.id for i in taken) == sorted(i.id for i in lapsed)
        assert (await a.heartbeat("a", LEASE, held=2, running=0)).tokens == {first[0].claim_token}
        seen = await b.heartbeat("b", LEASE, held=2, running=0)
        assert (seen.nodes, seen.rank) == (2, 1)
        assert seen.next_lapse_us is not None
        assert 50 * S < seen.next_lapse_us <= LEASE
        nodes = {n.node_id: n for n in await a.nodes()}
        assert (nodes["a"].held, nodes["a"].running, nodes["a"].alive) == (2, 0, True)
        assert nodes["b"].held == 2


async def test_the_lease_of_a_row_is_its_claims(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg) as store:
        [iid] = await store.insert(rows(1, now), now)
        [inst] = await store.claim("a", now, 1, now, LEASE)
        assert await store.get(iid) == inst
        before = inst.lease_until_us
        assert before is not None
        await trio.sleep(0.01)
        assert await store.renew("a", now, LEASE) == 1  # one row held
        renewed = await store.get(iid)
        assert renewed is not None
        assert renewed.lease_until_us is not None
        assert renewed.lease_until_us > before
        assert all(await store.finish("a", [done(inst)], now))
        ended = await store.get(iid)
        assert ended is not None
        assert ended.lease_until_us is None


async def test_a_dead_nodes_claims_beyond_the_horizon_go_back_to_pending(
    pg: tuple[str, str],
) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id="b") as b:
        [soon, later] = await a.insert([*rows(1, now), *rows(1, now + 3600 * S)], now)
        assert len(await a.claim("a", now + 7200 * S, 10, now, 1)) == 2  # a dies at once
        taken = await b.claim("b", now + S, 10, now, LEASE)  # b's horizon: one second
        assert [i.id for i in taken] == [soon]
        back = await b.get(later)
        assert back is not None
        assert (back.state, back.owner, back.claim_token) == (State.PENDING, None, None)
        assert await b.next_pending_at() == now + 3600 * S


async def wait_changes(store: PostgresStore) -> Changes:
    with trio.fail_after(5):
        return await store.wait_changed()


async def test_notices_say_what_changed(pg: tuple[str, str]) -> None:
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id=None) as cli:
        assert await a.change_token() is not None  # listening from now on
        await cli.insert(rows(2, now + 5 * S), now)
        assert await wait_changes(a) == Changes(pending_us=now + 5 * S)
        [held] = await a.claim("a", now + 10 * S, 1, now, LEASE)
        await cli.request_abort(held.id, now)
        assert await wait_changes(a) == Changes(aborts=True)
        # nothing more: the wait blocks (a notice for nobody does not wake it)
        [other] = await cli.insert(rows(1, now + 60 * S), now)
        assert (await wait_changes(a)).pending_us == now + 60 * S
        await cli.request_abort(other, now)  # pending: aborted at once, owned by nobody
        with trio.move_on_after(0.3) as scope:
            await a.wait_changed()
        assert scope.cancelled_caught
        # a lost listening connection reads as "anything may have changed"
        assert a._listener is not None
        sql(pg, "SELECT pg_terminate_backend(%s)", a._listener.info.backend_pid)
        assert (await wait_changes(a)).lost


async def test_a_node_hears_changes_made_right_after_it_opened(pg: tuple[str, str]) -> None:
    """A node listens from ``open``, before its first look at the rows: a change committed
    after that look is heard even if the node has not waited for changes yet (it listened
    from its first wait, and a cluster node started while another node added a schedule
    slept through the notice: tests/test_overlap_cluster.py's two_nodes tests, 1 run in 8)."""
    now = now_us()
    async with opened(pg, node_id="a") as a, opened(pg, node_id=None) as cli:
        assert await a.next_pending_at() is None  # the node's first look: nothing yet
        await cli.insert(rows(1, now + 5 * S), now)
        assert await wait_changes(a) == Changes(pending_us=now + 5 * S)


async def test_migrating_to_claims_keeps_the_leases_of_held_rows(
    pg: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_us()
    full = _pg_migrations.MIGRATIONS
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", full[:2])  # a version-2 schema
    async with opened(pg) as store:
        [iid, free] = await store.insert(rows(2, now), now)
    s = pg[1]
    sql(
        pg,
        f"UPDATE {s}.instances SET state = 1, owner = 'old', claim_token = 7, "
        "lease_until = now() + interval '1 minute' WHERE id = %s",
        iid,
    )
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", full)
    async with opened(pg, node_id="b") as store:
        held = await store.get(iid)
        assert held is not None
        assert (held.state, held.owner, held.claim_token) == (State.CLAIMED, "old", 7)
        assert held.lease_until_us is not None
        assert held.lease_until_us > now_us() + 50 * S  # the old lease, kept
        taken = await store.claim("b", now, 10, now, LEASE)
        assert [i.id for i in taken] == [free]  # still held by "old"
        assert await store.finish("old", [done(held)], now) == [True]  # fenced as before
