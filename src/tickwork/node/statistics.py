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

__all__ = ["SchedulerStatistics", "node_statistics", "this_node"]


@final
@attrs.frozen
class SchedulerStatistics:
    """A snapshot of a node (``scheduler.statistics()``)."""

    node_id: str
    #: instances held in memory now (claimed, not yet recorded) and the bound
    in_memory: int
    max_in_memory: int
    #: held and waiting for their time / ready to start / running
    waiting: int
    ready: int
    running: int
    max_concurrency: int
    #: per state name: CLAIMED and RUNNING held now; the others recorded since start
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
    return SchedulerStatistics(
        node_id=node.settings.node_id,
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
        puller=actors.puller.statistics(),
        timekeeper=tk,
        executor=ex,
        recorder=rec,
        capacity=cap,
        store=node.store.health(),
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
