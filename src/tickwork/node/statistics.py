"""A snapshot of a running node: ``scheduler.statistics()``, read from its actors."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from tickwork.actors.capacity import CapacityStatistics
from tickwork.actors.cluster_link import ClusterStatistics
from tickwork.actors.executor import ExecutorStatistics
from tickwork.actors.janitor import JanitorStatistics
from tickwork.actors.puller import PullerStatistics
from tickwork.actors.recorder import RecorderStatistics
from tickwork.actors.timekeeper import TimekeeperStatistics
from tickwork.node.resilience import CallLatency, StoreHealth
from tickwork.state import State
from tickwork.stores.cluster import NodeInfo

if TYPE_CHECKING:
    from tickwork.node.context import NodeContext

__all__ = ["Counters", "Gauges", "SchedulerStatistics", "node_statistics", "this_node"]


@final
@attrs.frozen
class Gauges:
    """What a node holds and does now: each value may go up or down between snapshots
    (export them as gauges)."""

    #: instances held in memory (claimed, not yet recorded), and the bound
    in_memory: int
    max_in_memory: int
    #: of those: waiting for their time / due and waiting for a worker / running
    waiting: int
    ready: int
    running: int
    #: held and not running (CLAIMED in the store)
    claimed: int
    #: instances that may run at once
    max_concurrency: int
    #: due instances waiting for a per-task slot (``Task.max_concurrency``)
    waiting_for_task_slot: int
    #: how late the most recent start was, and a moving mean, in seconds
    lag: float
    mean_lag: float
    #: whether store calls are failing now, and for how long (seconds; 0 when healthy)
    store_healthy: bool
    store_degraded_for: float
    #: seconds since the node started
    uptime: float


@final
@attrs.frozen
class Counters:
    """Totals since the node started: each value only grows (export them as counters;
    a new node starts them at 0)."""

    #: pulls made and instances claimed by the Puller
    pulls: int
    claimed: int
    #: runs started by the Executor
    started: int
    #: outcomes this node recorded, per terminal state (SUCCEEDED, FAILED, ABORTED, MISSED)
    ended: Mapping[str, int]
    #: outcomes written back to PENDING: failed attempts to retry (``retried``), and runs
    #: interrupted by a stop or claims given back unstarted (the rest of ``requeued``)
    requeued: int
    retried: int
    #: outcomes the store refused because the claim was lost (fenced out)
    refused: int
    #: outcome batches written (group commits)
    batches: int
    #: task hooks that raised
    hooks_failed: int
    #: store calls that failed (and were retried, or refused a user call)
    store_failures: int
    #: total time due instances waited for a per-task slot, in seconds
    slot_wait: float


@final
@attrs.frozen
class SchedulerStatistics:
    """A snapshot of a node (``scheduler.statistics()``), from memory (no store call).

    :attr:`gauges` holds current values, :attr:`counters` totals since the node started;
    the per-actor records below hold both kinds, as each actor reports them.
    """

    node_id: str
    #: current values (up and down)
    gauges: Gauges
    #: totals since the node started (only up)
    counters: Counters
    #: instances held in memory now (claimed, not yet recorded) and the bound
    in_memory: int
    max_in_memory: int
    #: held and waiting for their time / ready to start / running
    waiting: int
    ready: int
    running: int
    max_concurrency: int
    #: per state name, a mix kept for compatibility: CLAIMED and RUNNING held now (gauges),
    #: the others recorded since start (counters; PENDING: ``counters.requeued``)
    counts: Mapping[str, int]
    #: how late the most recent start was, and a moving mean, in seconds
    lag: float
    mean_lag: float
    #: per second since the node started: instances started and recorded
    rates: Mapping[str, float]
    uptime: float
    puller: PullerStatistics
    timekeeper: TimekeeperStatistics
    executor: ExecutorStatistics
    recorder: RecorderStatistics
    capacity: CapacityStatistics
    #: whether store calls are failing (and being retried) right now
    store: StoreHealth
    #: retention (None when ``retention`` is not set)
    janitor: JanitorStatistics | None = None
    #: heartbeats, leases and the nodes seen (None unless the store is a cluster store)
    cluster: ClusterStatistics | None = None
    #: per kind of store call, how long its calls took (live histograms: copy to keep)
    store_calls: Mapping[str, CallLatency] = attrs.field(factory=dict)


def node_statistics(node: NodeContext) -> SchedulerStatistics:
    """Counts per state, in-memory size, lag and rates of a node, from its actors."""
    actors = node.actors
    ex = actors.executor.statistics()
    tk = actors.timekeeper.statistics()
    rec = actors.recorder.statistics()
    cap = actors.puller.capacity_statistics()
    counts: dict[str, Any] = {s.name: 0 for s in State}
    counts.update(rec.recorded)
    counts["RUNNING"] = ex.running
    counts["CLAIMED"] = cap.held - ex.running
    counts["PENDING"] = rec.recorded.get("PENDING", 0)
    uptime = max(trio.current_time() - node.started_at, 1e-9)
    recorded = sum(v for k, v in rec.recorded.items() if k != "PENDING")
    store = node.store.health()
    puller = actors.puller.statistics()
    gauges = Gauges(
        in_memory=cap.held,
        max_in_memory=cap.limit,
        waiting=tk.waiting,
        ready=ex.ready,
        running=ex.running,
        claimed=cap.held - ex.running,
        max_concurrency=ex.max_concurrency,
        waiting_for_task_slot=ex.waiting_for_task_slot,
        lag=ex.last_lateness_us / 1e6,
        mean_lag=ex.mean_lateness_us / 1e6,
        store_healthy=store.healthy,
        store_degraded_for=store.degraded_for,
        uptime=uptime,
    )
    counters = Counters(
        pulls=puller.pulls,
        claimed=puller.claimed,
        started=ex.started,
        ended={s.name: rec.recorded.get(s.name, 0) for s in State if s.terminal},
        requeued=rec.recorded.get("PENDING", 0),
        retried=rec.retried,
        refused=rec.refused,
        batches=rec.batches,
        hooks_failed=rec.hooks_failed,
        store_failures=store.failures,
        slot_wait=ex.slot_wait_us / 1e6,
    )
    return SchedulerStatistics(
        node_id=node.settings.node_id,
        gauges=gauges,
        counters=counters,
        in_memory=cap.held,
        max_in_memory=cap.limit,
        waiting=tk.waiting,
        ready=ex.ready,
        running=ex.running,
        max_concurrency=ex.max_concurrency,
        counts=counts,
        lag=ex.last_lateness_us / 1e6,
        mean_lag=ex.mean_lateness_us / 1e6,
        rates={"started": ex.started / uptime, "recorded": recorded / uptime},
        uptime=uptime,
        puller=puller,
        timekeeper=tk,
        executor=ex,
        recorder=rec,
        capacity=cap,
        store=store,
        janitor=None if actors.janitor is None else actors.janitor.statistics(),
        cluster=None if actors.cluster is None else actors.cluster.statistics(),
        store_calls=node.store.latency(),
    )


def this_node(node: NodeContext) -> NodeInfo:
    """This node as ``Scheduler.nodes()`` lists it on a single-node store (live figures)."""
    now = node.clock.now_us()
    uptime_us = int((trio.current_time() - node.started_at) * 1_000_000)
    return NodeInfo(
        node_id=node.settings.node_id,
        started_us=now - uptime_us,
        last_heartbeat_us=now,
        stopped_us=None,
        alive=True,
        held=node.actors.puller.capacity_statistics().held,
        running=node.actors.executor.statistics().running,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=_version(),
        tasks=tuple(sorted(node.registry)),
        max_params_bytes=node.settings.max_params_bytes,
    )


def _version() -> str:
    from tickwork import __version__  # noqa: PLC0415 - the package imports this module

    return __version__
