"""PostgreSQL for tests: the real server named by TICKWORK_PG_DSN (default: local trust).

A test that needs PostgreSQL skips with the reason when no server answers, unless
TICKWORK_REQUIRE_SERVICES=1 (set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import os
import uuid
from typing import NoReturn

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_dsn() -> str:
    return os.environ.get("TICKWORK_PG_DSN", DEFAULT_DSN)


def services_required() -> bool:
    return os.environ.get("TICKWORK_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under TICKWORK_REQUIRE_SERVICES=1."""
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def require_pg() -> str:
    """The DSN of a reachable server, or skip (fail under TICKWORK_REQUIRE_SERVICES=1)."""
    dsn = pg_dsn()
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the test group installs it
        unavailable(f"psycopg is not installed ({exc}); install tickwork[postgres]")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"no PostgreSQL at {dsn} ({exc}); set TICKWORK_PG_DSN")
    return dsn


def fresh_schema() -> str:
    """A schema name no other test uses (dropped by drop_schema)."""
    return f"tw_test_{uuid.uuid4().hex[:12]}"


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
