"""Tasks and helpers shared by the scheduler tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

import tickwork
from tickwork.testing import VirtualClock


class Recording(tickwork.Task):
    """Records (instance params, wall time) of every run; optionally sleeps or fails."""

    name = "rec"

    def __init__(self, clock: VirtualClock, name: str = "rec") -> None:
        self.clock = clock
        self.name = name  # type: ignore[misc]
        self.runs: list[tuple[bytes, int]] = []
        self.sleep: timedelta | None = None
        self.fail: BaseException | None = None
        self.successes: list[int] = []
        self.failures: list[tuple[int, str]] = []
        self.aborts: list[int] = []

    async def run(self, params: bytes) -> Any:
        self.runs.append((params, self.clock.now_us()))
        if self.sleep is not None:
            await trio.sleep(self.sleep.total_seconds())
        if self.fail is not None:
            raise self.fail
        return {"ok": True}

    async def on_success(self, instance: tickwork.Instance, result: Any) -> None:
        self.successes.append(instance.id)

    async def on_fail(self, instance: tickwork.Instance, error: BaseException) -> None:
        self.failures.append((instance.id, str(error)))

    async def on_abort(self, instance: tickwork.Instance) -> None:
        self.aborts.append(instance.id)


async def wait_until(predicate: Any, *, timeout: float = 30 * 86400, step: float = 0.25) -> None:
    """Poll ``predicate`` on the virtual clock (autojump makes this instant)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)


async def settle(scheduler: tickwork.Scheduler, *, timeout: float = 30 * 86400) -> None:
    """Wait (virtual time) until no instance is held in memory."""
    await trio.sleep(0.001)
    await wait_until(lambda: scheduler.statistics().in_memory == 0, timeout=timeout)
