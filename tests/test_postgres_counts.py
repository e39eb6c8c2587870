"""PostgreSQL counts per state without a full scan: exact up to EXACT_UP_TO rows per
state, the planner's estimate beyond (tickwork.stores.postgres._counts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

from tests.support.pg_support import drop_schema, fresh_schema, require_pg
from tickwork.model import NewRow
from tickwork.state import State
from tickwork.stores.postgres import PostgresStore
from tickwork.stores.postgres import _counts as _pg_counts

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = 1_900_000_000_000_000


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    dsn = require_pg()
    schema = fresh_schema()
    try:
        yield dsn, schema
    finally:
        drop_schema(dsn, schema)


def ended(n: int, state: State) -> list[NewRow]:
    return [NewRow("t", NOW, b"", state=state, error="x") for _ in range(n)]


async def test_small_counts_are_exact_and_large_ones_estimated(
    pg: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, schema = pg
    monkeypatch.setattr(_pg_counts, "EXACT_UP_TO", 5)
    store = PostgresStore(dsn, schema=schema)
    await store.open(node_id="n")
    try:
        await store.insert([NewRow("t", NOW, b"") for _ in range(2)], NOW)
        await store.insert(ended(3, State.FAILED) + ended(40, State.SUCCEEDED), NOW)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{schema}".instances')
        counts = await store.count_by_state()
        assert counts[State.PENDING] == 2  # exact: at most 5 rows
        assert counts[State.FAILED] == 3
        assert counts[State.SUCCEEDED] == 40  # estimated from the fresh statistics
        assert counts[State.MISSED] == 0
        # 20 more since the statistics: the small states stay exact, the large one is
        # the planner's estimate (as of the last ANALYZE), never below the exact floor
        await store.insert(ended(20, State.SUCCEEDED) + ended(1, State.FAILED), NOW)
        counts = await store.count_by_state()
        assert counts[State.FAILED] == 4
        assert 6 <= counts[State.SUCCEEDED] < 60
        monkeypatch.setattr(_pg_counts, "EXACT_UP_TO", 10_000)
        assert (await store.count_by_state())[State.SUCCEEDED] == 60  # exact again
    finally:
        await store.aclose()
