"""What a node logs: its start and stop at INFO, each failed run at WARNING (task,
instance id, error), each run at DEBUG (its start and its outcome); nothing built per
run when those levels are off. (Both formats of ``tickwork run``: test_run_signals.py.)
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

import tickwork
from tests.support.helpers import Recording, settle
from tickwork.testing import VirtualClock


class Retried(Recording):
    max_attempts = 2
    backoff_base = timedelta(seconds=1)
    backoff_cap = timedelta(seconds=1)


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_failures_warn_runs_debug_and_the_node_says_when_it_starts_and_stops(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tickwork")
    clock = VirtualClock()
    ok, bad, flaky = Recording(clock, "ok"), Recording(clock, "bad"), Retried(clock, "flaky")
    bad.fail = ValueError("no such file")
    flaky.fail = ConnectionError("refused")
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[ok, bad, flaky], clock=clock, node_id="n1"
    ) as sched:
        now = clock.now()
        good = await sched.schedule("ok", at=now)
        failed = await sched.schedule("bad", at=now)
        retried = await sched.schedule("flaky", at=now)
        await settle(sched)
        await clock.advance_to(now + timedelta(seconds=5))
        await settle(sched)
    info = _records(caplog, logging.INFO)
    assert info[0].startswith("node n1 started (lease 60 s")
    assert "node n1 stopping: claiming nothing more; 0 running get up to 30 s to finish" in info
    assert info[-1] == (
        "node n1 stopped (outcomes recorded: FAILED 2, PENDING 1, SUCCEEDED 1; 0 claims given back)"
    )
    warnings = _records(caplog, logging.WARNING)
    assert f"instance {failed} (task 'bad') failed, attempt 1: ValueError: no such file" in (
        warnings
    )
    [first, last] = [w for w in warnings if f"instance {retried} " in w]
    assert first.startswith(f"instance {retried} (task 'flaky') failed, attempt 1, retried at ")
    assert first.endswith(": ConnectionError: refused")
    assert last == f"instance {retried} (task 'flaky') failed, attempt 2: ConnectionError: refused"
    debug = _records(caplog, logging.DEBUG)
    assert f"instance {good} (task 'ok'): started, 0.000 s after its time" in debug
    assert f"instance {good} (task 'ok'): SUCCEEDED after 0.000 s" in debug
    assert not any(f"instance {failed} " in d and "failed" in d for d in debug)  # once


@pytest.fixture
def no_debug_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a node's actor even calls ``debug`` (the level is off: nothing is built)."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"debug message built with DEBUG off: {args!r}")

    for name in ("tickwork.executor", "tickwork.recorder"):
        monkeypatch.setattr(logging.getLogger(name), "debug", forbidden)


@pytest.mark.usefixtures("no_debug_messages")
async def test_with_debug_off_a_run_builds_no_message(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickwork")
    clock = VirtualClock()
    ok = Recording(clock, "ok")
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[ok], clock=clock) as sched:
        await sched.schedule_many([tickwork.NewInstance("ok", clock.now()) for _ in range(1_000)])
        await settle(sched)
    assert len(ok.runs) == 1_000
    assert not [r for r in caplog.records if "instance" in r.getMessage()]
