"""``/metrics``: Prometheus text from prometheus_client, without blocking the node.

A scrape reads only what is already in memory: the node's ``statistics()``, the counters
this module keeps from the node's transition events (one bounded subscription, read by
:meth:`EventCounters.run`), and the stored counts per state and the schedules list, each
refreshed at most every few seconds by one store call (:class:`~._counts.CachedCounts`),
never a count per scrape. Labels are bounded: task names (the node's registered tasks),
states, store call kinds and schedule ids (at most :data:`MAX_SCHEDULES`), never an
instance id.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.routing import Route

from tickwork.events import EventsLost, TransitionEvent
from tickwork.node.resilience import LATENCY_BUCKETS
from tickwork.schedules.missed import reason_of
from tickwork.state import State

if TYPE_CHECKING:
    from starlette.requests import Request

    from tickwork.actors.cluster_link import ClusterStatistics
    from tickwork.http._counts import CachedCounts
    from tickwork.node.scheduler import Scheduler
    from tickwork.node.statistics import SchedulerStatistics
    from tickwork.schedules.schedule import Schedule

__all__ = ["MAX_SCHEDULES", "EventCounters", "NodeCollector", "routes"]

log = logging.getLogger("tickwork.http")

#: Per-schedule series are exported for at most this many schedules (the first by id).
MAX_SCHEDULES: Final = 1000
#: Run durations and lateness, seconds.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip
LATENESS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
)  # fmt: skip
#: Runs in progress whose start time is remembered (for the duration): a bound, not a need.
_MAX_STARTS: Final = 200_000
#: the counters take the events that gathered every GATHER seconds (one wake-up then,
#: not one per event; a scrape sees them at most this late)
GATHER: Final = 0.1
_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    """Counts per bucket (not cumulative) and a sum: what an exported histogram needs."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        return _cumulative(self.bounds, self.counts)


def _cumulative(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        out.append((repr(float(bound)), float(running)))
    out.append(("+Inf", float(sum(counts))))
    return out


class EventCounters:
    """What the transition events tell: runs by task and outcome, durations, lateness."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.missed: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, _Histogram] = {}
        self.lateness = _Histogram(LATENESS_BUCKETS)
        self.last_run_us: dict[str, int] = {}
        self.lost = 0
        #: start times of runs under way, oldest first (insertion order)
        self._starts: dict[int, int] = {}

    async def run(
        self, scheduler: Scheduler, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the node's events until it stops (start it in the serving nursery)."""
        if scheduler.closed:  # an app made for a node that has stopped: nothing to read
            task_status.started()
            return
        with scheduler.subscribe(buffer=100_000) as sub:
            task_status.started()
            while True:
                try:
                    batch = await sub.receive_batch()
                except trio.EndOfChannel:
                    return
                if isinstance(batch, EventsLost):
                    self.lost += batch.count
                    continue
                self.count_batch(batch)
                await trio.sleep(GATHER)  # one wake-up per GATHER seconds, not per event

    def count(self, e: TransitionEvent) -> None:
        """Take one event into the counters."""
        self.count_batch([e])

    def count_batch(self, batch: list[TransitionEvent]) -> None:
        """Take a batch of events into the counters (a claim's CLAIMED events cost a
        comparison each)."""
        running, pending, claimed = State.RUNNING, State.PENDING, State.CLAIMED
        starts, outcomes, ended = self._starts, self.outcomes, _ENDED
        for e in batch:
            after = e.to_state
            if after is claimed:
                continue
            if after is running:
                starts[e.instance_id] = e.at_us
                if e.run_at_us:
                    self.lateness.add(max(0, e.at_us - e.run_at_us) / 1e6)
                continue
            outcome = ended.get(after)
            if outcome is None:
                if after is not pending or e.from_state is not running:
                    continue  # given back unstarted
                outcome = "retried"  # a failed attempt that will run again
            else:
                self._ended(e)
            outcomes[e.task, outcome] += 1
            started = starts.pop(e.instance_id, None)
            if started is not None:
                hist = self.durations.get(e.task)
                if hist is None:
                    hist = self.durations[e.task] = _Histogram(DURATION_BUCKETS)
                hist.add(max(0, e.at_us - started) / 1e6)
        while len(starts) > _MAX_STARTS:
            del starts[next(iter(starts))]

    def _ended(self, e: TransitionEvent) -> None:
        if e.to_state is State.MISSED:
            self.missed[e.task, reason_of(e.error)] += 1
        sid = e.schedule_id
        if sid is not None and (sid in self.last_run_us or len(self.last_run_us) < MAX_SCHEDULES):
            self.last_run_us[sid] = e.at_us


#: The outcome label of each terminal state
_ENDED: Final = {s: s.name.lower() for s in State if s.terminal}


class NodeCollector(Collector):
    """Builds the metric families at scrape time from in-memory values only."""

    def __init__(self, scheduler: Scheduler, events: EventCounters) -> None:
        self._scheduler = scheduler
        self._events = events
        self.counts: dict[State, int] | None = None
        self.schedules: list[Schedule] = []

    def collect(self) -> Iterator[Metric]:
        st = self._scheduler.statistics()
        now_us = int(self._scheduler.now().timestamp() * 1_000_000)
        events = self._events
        yield from _stored(self.counts)
        yield from _runs(events)
        yield from _node(st, now_us, events.lost)
        yield from _store_calls(st)
        yield from _schedules(events.last_run_us, self.schedules)
        yield from _cluster(st.cluster)


# One generator per group of families, called in the order of the exposition.


def _stored(counts: dict[State, int] | None) -> Iterator[Metric]:
    """Stored instances per state (none until the counts were first read)."""
    if counts is None:
        return
    g = GaugeMetricFamily(
        "tickwork_instances", "Stored instances by state (counted every few seconds).",
        labels=["state"],
    )  # fmt: skip
    for state in State:
        g.add_metric([state.name.lower()], counts.get(state, 0))
    yield g


def _runs(events: EventCounters) -> Iterator[Metric]:
    """What the transition events tell: outcomes, MISSED reasons, durations, lateness."""
    runs = CounterMetricFamily(
        "tickwork_runs", "Instances this node ended, by task and outcome.",
        labels=["task", "outcome"],
    )  # fmt: skip
    for (task, outcome), n in sorted(events.outcomes.items()):
        runs.add_metric([task, outcome], n)
    yield runs
    missed = CounterMetricFamily(
        "tickwork_missed",
        "Instances this node recorded MISSED, by task and reason (misfire, overlap, "
        "paused, other).",
        labels=["task", "reason"],
    )
    for (task, reason), n in sorted(events.missed.items()):
        missed.add_metric([task, reason], n)
    yield missed
    dur = HistogramMetricFamily(
        "tickwork_run_duration_seconds", "How long runs took, by task.", labels=["task"]
    )
    for task, h in sorted(events.durations.items()):
        dur.add_metric([task], h.cumulative(), h.total)
    yield dur
    late = HistogramMetricFamily(
        "tickwork_lateness_seconds", "How late runs started after they were due."
    )
    late.add_metric([], events.lateness.cumulative(), events.lateness.total)
    yield late


def _node(st: SchedulerStatistics, now_us: int, events_lost: int) -> Iterator[Metric]:
    """The node's gauges and counters, from its statistics."""
    yield GaugeMetricFamily("tickwork_held", "Instances held in memory.", value=st.gauges.in_memory)
    yield GaugeMetricFamily(
        "tickwork_held_limit",
        "The bound on instances held in memory.",
        value=st.gauges.max_in_memory,
    )
    yield GaugeMetricFamily("tickwork_running", "Instances running now.", value=st.gauges.running)
    yield CounterMetricFamily(
        "tickwork_claimed", "Instances this node claimed.", value=st.counters.claimed
    )
    yield CounterMetricFamily(
        "tickwork_started", "Runs this node started.", value=st.counters.started
    )
    yield GaugeMetricFamily(
        "tickwork_max_concurrency",
        "Instances that may run at once.",
        value=st.gauges.max_concurrency,
    )
    oldest = st.puller.next_pending_us
    yield GaugeMetricFamily(
        "tickwork_oldest_pending_age_seconds",
        "How long the earliest-due PENDING instance has been due (0: none due yet).",
        value=0.0 if oldest is None else max(0, now_us - oldest) / 1e6,
    )
    yield CounterMetricFamily(
        "tickwork_events_lost", "Transition events the metrics missed (counts are low).",
        value=events_lost,
    )  # fmt: skip


def _store_calls(st: SchedulerStatistics) -> Iterator[Metric]:
    """Store call latency by operation, and the calls retried."""
    calls = HistogramMetricFamily(
        "tickwork_store_call_duration_seconds", "Store call latency, by operation.",
        labels=["operation"],
    )  # fmt: skip
    for op, call in sorted(st.store_calls.items()):
        buckets = _cumulative(LATENCY_BUCKETS, [*call.buckets, call.over])
        calls.add_metric([op], buckets, call.total)
    yield calls
    yield CounterMetricFamily(
        "tickwork_store_failures", "Store calls that failed and were retried.",
        value=st.counters.store_failures,
    )  # fmt: skip


def _schedules(last_run_us: dict[str, int], schedules: list[Schedule]) -> Iterator[Metric]:
    """Per schedule: when an occurrence last ended here, and its next fire time."""
    last = GaugeMetricFamily(
        "tickwork_schedule_last_run_timestamp_seconds",
        "When an occurrence of the schedule last ended on this node.", labels=["schedule"],
    )  # fmt: skip
    for sid, at in sorted(last_run_us.items()):
        last.add_metric([sid], at / 1e6)
    yield last
    nxt = GaugeMetricFamily(
        "tickwork_schedule_next_fire_timestamp_seconds",
        "The schedule's next fire time (paused and ended schedules have none).",
        labels=["schedule"],
    )  # fmt: skip
    for sched in schedules:
        if not sched.paused and not sched.ended and sched.last_fire_us is not None:
            nxt.add_metric([sched.id], sched.last_fire_us / 1e6)
    yield nxt


def _cluster(c: ClusterStatistics | None) -> Iterator[Metric]:
    """Heartbeats, lost claims and live nodes (only on a cluster store)."""
    if c is None:
        return
    yield CounterMetricFamily(
        "tickwork_cluster_heartbeats", "Heartbeats this node sent.", value=c.heartbeats
    )
    yield CounterMetricFamily(
        "tickwork_cluster_heartbeat_failures", "Heartbeats that failed.",
        value=c.heartbeat_failures,
    )  # fmt: skip
    yield CounterMetricFamily(
        "tickwork_cluster_lost_claims", "Claims this node gave up (lease lost).",
        value=c.leases.lost,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "tickwork_cluster_nodes", "Live nodes at the last heartbeat.", value=c.nodes
    )


class _Refresh:
    """The slow inputs of a scrape, fetched at most every ``max_age`` seconds."""

    def __init__(self, counts: CachedCounts, max_age: float = 15.0) -> None:
        self.counts = counts
        self.max_age = max_age
        self.schedules_at = -float("inf")


async def metrics(request: Request) -> Response:
    state = request.app.state
    collector: NodeCollector = state.metrics_collector
    refresh: _Refresh = state.metrics_refresh
    if not state.events_started and state.background is not None:
        state.events_started = True
        await state.background.start(state.events.run, state.scheduler)
    try:
        collector.counts = await refresh.counts.get()
        if trio.current_time() - refresh.schedules_at >= refresh.max_age:
            refresh.schedules_at = trio.current_time()
            collector.schedules = await state.scheduler.list_schedules(limit=MAX_SCHEDULES)
    except Exception as exc:  # noqa: BLE001 - a failing store still gets the in-memory families
        log.warning("metrics: the stored counts could not be read (%s)", exc)
    body = generate_latest(state.metrics_registry)
    return Response(body, media_type=_CONTENT_TYPE)


def make_registry(
    scheduler: Scheduler, events: EventCounters
) -> tuple[CollectorRegistry, NodeCollector]:
    """A registry of its own (no global state): two apps in one process do not mix."""
    registry = CollectorRegistry(auto_describe=False)
    collector = NodeCollector(scheduler, events)
    registry.register(collector)
    return registry, collector


def routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]


def refresher(counts: CachedCounts) -> _Refresh:
    return _Refresh(counts)
