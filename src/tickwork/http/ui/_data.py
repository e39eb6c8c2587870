"""What the pages read from the scheduler, bounded: cached counts, dashboard samples."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import attrs
import trio

from tickwork.state import State

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.node.scheduler import Scheduler

__all__ = ["Sample", "counts", "scheduler_of", "take_sample"]

#: Counts per state are at most this old (a count is not free at 10,000,000 rows on every
#: store: PostgreSQL counts index entries).
COUNTS_MAX_AGE = 5.0
#: Dashboard samples kept: one per SAMPLE_EVERY seconds while a dashboard is open.
SAMPLES_KEPT = 300
SAMPLE_EVERY = 2.0


def scheduler_of(request: Request) -> Scheduler:
    return request.app.state.scheduler  # type: ignore[no-any-return]


def _ui_state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] | None = getattr(request.app.state, "ui", None)
    if state is None:
        state = {
            "counts": None,
            "counts_at": -float("inf"),
            "counts_lock": trio.Lock(),
            "samples": collections.deque(maxlen=SAMPLES_KEPT),
        }
        request.app.state.ui = state
    return state


async def counts(request: Request) -> dict[State, int]:
    """Stored instances per state, at most COUNTS_MAX_AGE seconds old.

    The app's own cache when it has one (``app.state.counts``, shared with the API and
    ``/metrics``), else one here: one store call per state, from the store's counters.
    """
    shared = getattr(request.app.state, "counts", None)
    if shared is not None and hasattr(shared, "get"):
        found: dict[State, int] = await shared.get()
        return found
    ui = _ui_state(request)
    if ui["counts"] is not None and trio.current_time() - ui["counts_at"] < COUNTS_MAX_AGE:
        return ui["counts"]  # type: ignore[no-any-return]
    async with ui["counts_lock"]:
        if ui["counts"] is None or trio.current_time() - ui["counts_at"] >= COUNTS_MAX_AGE:
            scheduler = scheduler_of(request)
            ui["counts"] = {s: await scheduler.count(state=s) for s in State}
            ui["counts_at"] = trio.current_time()
    return ui["counts"]  # type: ignore[no-any-return]


@attrs.frozen
class Sample:
    """One point of the dashboard's chart."""

    #: UTC microseconds
    at_us: int
    #: cumulative instances started by this node
    started: int
    #: lateness of the most recent start and the moving mean, milliseconds
    lateness_ms: float
    mean_lateness_ms: float
    running: int
    held: int


def take_sample(request: Request) -> list[dict[str, float]]:
    """Record a sample (at most one per SAMPLE_EVERY seconds) and return the series: runs
    per second between samples and lateness, oldest first."""
    ui = _ui_state(request)
    samples: collections.deque[Sample] = ui["samples"]
    scheduler = scheduler_of(request)
    stats = scheduler.statistics()
    now_us = int(scheduler.now().timestamp() * 1_000_000)
    if not samples or now_us - samples[-1].at_us >= SAMPLE_EVERY * 1_000_000:
        samples.append(
            Sample(
                at_us=now_us,
                started=stats.executor.started,
                lateness_ms=stats.lag * 1000,
                mean_lateness_ms=stats.mean_lag * 1000,
                running=stats.running,
                held=stats.in_memory,
            )
        )
    series: list[dict[str, float]] = []
    previous: Sample | None = None
    for s in samples:
        if previous is not None and s.at_us > previous.at_us:
            rate = (s.started - previous.started) / ((s.at_us - previous.at_us) / 1e6)
            series.append(
                {
                    "t": s.at_us / 1e6,
                    "runs_per_s": max(rate, 0.0),
                    "lateness_ms": s.mean_lateness_ms,
                    "running": s.running,
                }
            )
        previous = s
    return series
