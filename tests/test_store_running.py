"""RUNNING of at-least-once runs (issue #11 item 11), held against every store.

The Recorder writes an at-least-once run's RUNNING as a finish to RUNNING in its group
commit: fenced by the claim, the claim kept, ``started_us`` set, no history. Given back
(release, recover, a lapsed lease taken over) such a row runs again, as a CLAIMED one
does; an at-most-once RUNNING row (``Store.start``) fails as interrupted instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.test_store_conformance import LEASE, S, claim_all, done, kind, now, row
from tickwork.errors import IllegalTransition
from tickwork.model import Finish, Instance
from tickwork.state import State
from tickwork.stores import INTERRUPTED, Store

__all__ = ["kind", "now"]  # the fixtures (kind: every store, the dict store too), by name


def started(inst: Instance, at: int, **kw: object) -> Finish:
    """The Recorder's finish to RUNNING for ``inst``, started at ``at``."""
    return Finish(
        id=inst.id,
        claim_token=kw.pop("token", inst.claim_token or 0),  # type: ignore[arg-type]
        state=State.RUNNING,
        attempts=inst.attempts,
        started_us=at,
    )


async def got(store: Store, iid: int) -> Instance:
    inst = await store.get(iid)
    assert inst is not None
    return inst


async def test_a_finish_to_running_keeps_the_claim_and_shows_the_start(
    store: Store, now: int
) -> None:
    [iid, other] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now)
    assert await store.finish("a", [started(c1, now + S), done(c2)], now + 2 * S) == [True, True]
    running = await got(store, iid)
    assert (running.state, running.owner, running.claim_token, running.started_us) == (
        State.RUNNING,
        "a",
        c1.claim_token,
        now + S,
    )
    assert running.started_at is not None
    assert running.lease_until_us == c1.lease_until_us
    assert running.attempts == 0
    assert await store.history(iid) == []  # a start is not an attempt's end
    assert (await got(store, other)).state is State.SUCCEEDED
    assert await store.count(state=State.RUNNING) == 1
    assert (await store.count_by_state())[State.RUNNING] == 1
    [listed] = await store.list(state=State.RUNNING)
    assert (listed.id, listed.started_us) == (iid, now + S)
    # the outcome ends it: no start time left, one history row
    assert await store.finish("a", [done(c1, started_us=now + S)], now + 3 * S) == [True]
    ended = await got(store, iid)
    assert (ended.state, ended.started_us) == (State.SUCCEEDED, None)
    assert len(await store.history(iid)) == 1
    assert await store.count(state=State.RUNNING) == 0
    assert await store.list(state=State.RUNNING) == []


async def test_a_finish_to_running_is_fenced(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    token = inst.claim_token or 0
    assert await store.finish("b", [started(inst, now)], now) == [False]
    assert await store.finish("a", [started(inst, now, token=token + 1000)], now) == [False]
    assert await got(store, iid) == inst
    assert await store.count(state=State.RUNNING) == 0


async def test_a_finish_to_running_of_a_running_row_changes_nothing(store: Store, now: int) -> None:
    # an at-most-once row made RUNNING by start stays at-most-once
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    assert await store.start("a", [(iid, inst.claim_token or 0)], now + S) == [True]
    assert (await got(store, iid)).started_us == now + S
    assert await store.finish("a", [started(inst, now + 2 * S)], now + 2 * S) == [True]
    assert (await got(store, iid)).started_us == now + S
    assert await store.release("a", now + 3 * S) == 1
    failed = await got(store, iid)
    assert (failed.state, failed.error, failed.attempts) == (State.FAILED, INTERRUPTED, 1)
    assert failed.started_us is None


async def test_release_sends_an_at_least_once_running_row_back_to_pending(
    store: Store, now: int
) -> None:
    [iid, aborted] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now)
    assert await store.finish("a", [started(c1, now), started(c2, now)], now) == [True, True]
    assert (await store.request_abort(aborted, now)).requested
    assert await store.release("a", now + S) == 2
    back = await got(store, iid)
    assert (back.state, back.attempts, back.owner, back.claim_token, back.started_us) == (
        State.PENDING,
        0,
        None,
        None,
        None,
    )
    assert back.error is None
    assert (await got(store, aborted)).state is State.ABORTED  # an abort requested wins
    assert await store.count(state=State.RUNNING) == 0
    assert await store.finish("a", [done(c1)], now + 2 * S) == [False]
    [again] = await claim_all(store, "b", now + 2 * S, at=now + 2 * S)
    assert (again.id, again.attempts) == (iid, 0)


async def test_recover_sends_an_at_least_once_running_row_back_to_pending(
    kind: str, store: Store, now: int
) -> None:
    # The store was opened as node "node": its own claims of a previous run come back.
    [once, many] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "node", now)
    assert await store.start("node", [(once, c1.claim_token or 0)], now) == [True]
    assert await store.finish("node", [started(c2, now)], now) == [True]
    assert await store.recover(now + S) == 2
    failed, back = await got(store, once), await got(store, many)
    assert (failed.state, failed.error) == (State.FAILED, INTERRUPTED)
    assert (back.state, back.owner, back.started_us, back.attempts) == (
        State.PENDING,
        None,
        None,
        0,
    )
    counts = await store.count_by_state()
    assert (counts[State.RUNNING], counts[State.PENDING], counts[State.FAILED]) == (0, 1, 1)
    del kind


async def test_a_lapsed_at_least_once_running_row_is_taken_over(store: Store, now: int) -> None:
    [iid, once] = await store.insert([row(at=now), row(at=now)], now)
    [c1, c2] = await claim_all(store, "a", now, lease=1)
    assert await store.finish("a", [started(c1, now)], now) == [True]
    assert await store.start("a", [(once, c2.claim_token or 0)], now) == [True]
    [taken] = await claim_all(store, "b", now, at=now + 10 * S)
    assert (taken.id, taken.state, taken.owner, taken.attempts) == (iid, State.CLAIMED, "b", 0)
    assert taken.claim_token != c1.claim_token
    assert (await got(store, iid)).started_us is None
    # the at-most-once one is not repeated
    assert (await got(store, once)).state is State.FAILED
    counts = await store.count_by_state()
    assert (counts[State.RUNNING], counts[State.CLAIMED]) == (0, 1)
    # the old owner's outcome and start are refused; the new owner's apply
    assert await store.finish("a", [started(c1, now), done(c1)], now + 11 * S) == [False, False]
    assert await store.finish("b", [started(taken, now + 11 * S)], now + 11 * S) == [True]
    assert await store.finish("b", [done(taken)], now + 12 * S) == [True]
    assert (await got(store, iid)).state is State.SUCCEEDED


async def test_a_running_row_is_renewed_and_not_taken_over_while_leased(
    store: Store, now: int
) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    assert await store.finish("a", [started(inst, now)], now) == [True]
    assert await store.renew("a", now + S, LEASE) == 1
    assert await claim_all(store, "b", now, at=now + 2 * S) == []
    assert (await got(store, iid)).state is State.RUNNING


async def test_a_finish_to_claimed_is_still_refused(store: Store, now: int) -> None:
    [iid] = await store.insert([row(at=now)], now)
    [inst] = await claim_all(store, "a", now)
    with pytest.raises(IllegalTransition):
        await store.finish("a", [started(inst, now), done(inst, State.CLAIMED)], now)
    assert await got(store, iid) == inst


# -- the schema migration ---------------------------------------------------------------------


async def test_a_running_row_of_an_older_sqlite_file_stays_at_most_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: int
) -> None:
    # Before the migration only at-most-once runs were RUNNING in the store: given back,
    # such a row still fails as interrupted, never runs again.
    from tickwork.stores.sqlite import SQLiteStore
    from tickwork.stores.sqlite import _schema as _sqlite_schema

    db = tmp_path / "old.db"
    full = _sqlite_schema.MIGRATIONS
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full[:10])
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", 10)
    with sqlite3.connect(db, isolation_level=None) as conn:
        _sqlite_schema.prepare(conn, str(db))
        conn.execute(
            "INSERT INTO instances (id, task, run_at, params, state, owner, claim_token, "
            "lease_until, created, updated) VALUES (1, 't', ?, x'', 2, 'node', 1, ?, ?, ?)",
            (now, now + LEASE, now, now),
        )
    conn.close()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", full)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(full))
    store = SQLiteStore(db)
    await store.open(node_id="node")
    try:
        before = await got(store, 1)
        assert (before.state, before.started_us) == (State.RUNNING, None)
        assert await store.recover(now + S) == 1
        after = await got(store, 1)
        assert (after.state, after.error) == (State.FAILED, INTERRUPTED)
    finally:
        await store.aclose()


async def test_a_running_row_of_an_older_postgres_schema_stays_at_most_once(
    monkeypatch: pytest.MonkeyPatch, now: int
) -> None:
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg
    from tickwork.stores.postgres import PostgresStore
    from tickwork.stores.postgres import _migrations as _pg_migrations

    dsn = require_pg()
    schema = fresh_schema()
    full = _pg_migrations.MIGRATIONS
    monkeypatch.setattr(_pg_migrations, "MIGRATIONS", tuple(m for m in full if m[0] < 10))
    try:
        old = PostgresStore(dsn, schema=schema)
        await old.open(node_id="node")
        [iid] = await old.insert([row(at=now)], now)
        await old.aclose()
        with psycopg.connect(dsn, autocommit=True) as conn:  # an at-most-once run, RUNNING
            conn.execute(
                _pg_migrations.render(
                    "INSERT INTO {s}.claims (token, owner, lease_until) "
                    "VALUES (1, 'node', now() + interval '1 hour'); "
                    "UPDATE {s}.instances SET state = 2, owner = 'node', claim_token = 1",
                    schema,
                )
            )
        monkeypatch.setattr(_pg_migrations, "MIGRATIONS", full)
        store = PostgresStore(dsn, schema=schema)
        await store.open(node_id="node")
        try:
            assert (await got(store, iid)).state is State.RUNNING
            assert await store.recover(now + S) == 1
            after = await got(store, iid)
            assert (after.state, after.error) == (State.FAILED, INTERRUPTED)
        finally:
            await store.aclose()
    finally:
        drop_schema(dsn, schema)
