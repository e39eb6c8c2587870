"""Run middleware: wrap every run of a node (tracing, metrics, a context variable).

A middleware is an async callable ``(run, call_next) -> result``: ``run`` is a
``tickwork.RunContext`` (the instance, its task, the node id, the start time) and
``call_next()`` runs the rest of the chain and then the task. The first middleware in
the list is the outermost.

Run it: python examples/middleware.py  (in-memory store, about a second of real time)
"""

from __future__ import annotations

import contextvars
from collections import Counter
from datetime import timedelta
from typing import Any

import trio

import tickwork

#: the trace id of the run in progress; code the task calls can log it
TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")


async def tracing(run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
    """Give each run a trace id its code can read, and print a span around it."""
    trace = f"{run.node_id}/{run.instance.id}.{run.instance.attempts + 1}"
    token = TRACE_ID.set(trace)
    print(f"span start {trace} task={run.task.name}")
    try:
        return await call_next()
    finally:
        TRACE_ID.reset(token)
        print(f"span end   {trace}")


class Metrics:
    """Count outcomes per task and add up run time (the node's clock)."""

    def __init__(self, clock: tickwork.Clock) -> None:
        self.clock = clock
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.busy_us = 0

    async def __call__(self, run: tickwork.RunContext, call_next: tickwork.CallNext) -> Any:
        outcome = "error"
        try:
            result = await call_next()
            outcome = "ok"
            return result
        finally:
            self.outcomes[run.task.name, outcome] += 1
            self.busy_us += self.clock.now_us() - run.started_us


class Report(tickwork.Task):
    name = "report"

    async def run(self, params: bytes) -> str:
        day = tickwork.unpack(params)["day"]
        await trio.sleep(0.25)  # the work
        if day == "bad":
            raise ValueError(f"no data for {day!r}")
        print(f"  report for {day} (trace {TRACE_ID.get()})")
        return day


async def main(clock: tickwork.Clock | None = None) -> Metrics:
    clock = clock or tickwork.SystemClock()
    metrics = Metrics(clock)
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(),
        tasks=[Report()],
        clock=clock,
        node_id="node-a",
        middleware=[tracing, metrics],  # tracing is outermost
    ) as scheduler:
        soon = clock.now() + timedelta(milliseconds=100)
        ids = [
            await scheduler.schedule("report", at=soon + timedelta(seconds=i), params={"day": d})
            for i, d in enumerate(["2030-01-01", "bad"])
        ]
        with scheduler.subscribe() as events:
            ended = 0
            async for event in events:
                if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                    ended += 1
                    if ended == len(ids):
                        break
        for iid in ids:
            inst = await scheduler.get(iid)
            print(f"instance {iid}: {inst.state.name} {inst.error or ''}".rstrip())
    print(f"outcomes: {sorted(metrics.outcomes.items())}; busy {metrics.busy_us / 1e6:g} s")
    return metrics


if __name__ == "__main__":
    trio.run(main)
