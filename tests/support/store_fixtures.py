"""The ``kind`` and ``store`` fixtures: one open store of each kind (memory, sqlite,
postgres), for the tests that every store must pass (loaded by ``conftest.py``; a test
module may define its own ``store`` instead, or its own ``kind``: the conformance suite
adds ``"dict"``, the store over plain dicts of ``tests/support/dict_store.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tickwork.stores.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tickwork.stores.base import Store

#: The node id the store is opened with.
NODE = "node"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    schema = dsn = None
    s: Store
    if kind == "memory":
        s = MemoryStore()
    elif kind == "dict":  # a store of one's own (tests/support/dict_store.py)
        from tests.support.dict_store import DictStore

        s = DictStore()
    elif kind == "sqlite":
        from tickwork.stores.sqlite import SQLiteStore

        s = SQLiteStore(tmp_path / "tickwork.db")
    else:
        from tests.support.pg_support import drop_schema, fresh_schema, require_pg
        from tickwork.stores.postgres import PostgresStore

        dsn = require_pg()
        schema = fresh_schema()
        s = PostgresStore(dsn, schema=schema)
    await s.open(node_id=NODE)
    try:
        yield s
    finally:
        await s.aclose()
        if dsn is not None and schema is not None:
            drop_schema(dsn, schema)
