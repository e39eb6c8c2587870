"""Fuzz the whole HTTP API from its OpenAPI document with schemathesis: no 5xx, every
response matches the document (status codes, content types, bodies), and operations that
need a token refuse requests without one.

The app is served by hypercorn on a loopback port in this trio run; schemathesis (sync,
requests) runs on a worker thread against it. Derandomized, a bounded number of examples
per operation: about 20 s.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings

import tickwork
from tests.support.http_support import Boom, Quiet, served
from tickwork.http._openapi import openapi_document

EXAMPLES = 25
#: A schema-valid body may still be refused (422) for what a schema cannot say: a cron
#: expression's syntax, a time zone's name, a task this node does not run.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def fuzz(base_url: str, token: str, failures: list[str]) -> int:
    """Run every operation's examples; returns how many were sent."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    headers = {"Authorization": f"Bearer {token}"}
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def check(case: Any) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(
                base_url=base_url, headers=headers, timeout=10, excluded_checks=EXCLUDED
            )

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
    return sent


@pytest.mark.slow
async def test_the_api_matches_its_openapi_document(tmp_path):
    store = tickwork.SQLiteStore(tmp_path / "fuzz.db")
    async with tickwork.open_scheduler(store, tasks=[Quiet(), Boom()]) as node:
        await node.schedule("quiet", at=node.now())
        _, token = await node.add_token("admin")
        failures: list[str] = []
        with trio.fail_after(120):
            async with served(node) as base:
                sent = await trio.to_thread.run_sync(fuzz, base, token, failures)
    assert sent > 200
    assert not failures, "\n\n".join(failures[:10])
