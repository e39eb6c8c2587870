"""Builds the actors of one node with the channels between them, all at once.

Every actor gets, when it is built, the ends of the channels it reads and writes (see
:mod:`tickwork.actors.messages` for who sends what): nothing is assigned to an actor
afterwards, and no actor holds another. The bounded channels give backpressure.
"""

from __future__ import annotations

from typing import final

import attrs
import trio

from tickwork.actors.aborts import Aborts
from tickwork.actors.capacity import Capacity
from tickwork.actors.cluster_link import ClusterLink, LeaseBook
from tickwork.actors.executor import Executor
from tickwork.actors.janitor import Janitor
from tickwork.actors.leases import Leases
from tickwork.actors.messages import (
    AbortRecorded,
    AbortsMsg,
    ExecutorMsg,
    PullerMsg,
    RecorderMsg,
    SchedulesChanged,
    TimekeeperMsg,
)
from tickwork.actors.puller import Puller
from tickwork.actors.recorder import Recorder
from tickwork.actors.timekeeper import Timekeeper
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.extend._run import Runner
from tickwork.node._abort_waiters import AbortWaiters
from tickwork.node.resilience import ResilientStore
from tickwork.node.settings import NodeSettings
from tickwork.stores.cluster import ClusterStore
from tickwork.task import TaskRegistry

__all__ = ["NodeActors", "build_actors"]

_CHANNEL_BATCHES = 4  # batches buffered between two actors; bounded, so backpressure
_INBOX = 16  # small messages (wake-ups, aborts) waiting for an actor


@final
@attrs.frozen(kw_only=True)
class NodeActors:
    """The actors of one node, and the API's ends of the channels into it."""

    leases: Leases
    aborts: Aborts
    puller: Puller
    timekeeper: Timekeeper
    executor: Executor
    recorder: Recorder
    abort_waiters: AbortWaiters
    janitor: Janitor | None
    cluster: ClusterLink | None
    #: the API tells the Puller of instances it stored due soon (``PendingAt``)
    to_puller: trio.MemorySendChannel[PullerMsg]
    #: the API hands aborts of instances this node holds to the Aborts actor
    to_aborts: trio.MemorySendChannel[AbortsMsg]

    def pipeline(self) -> list[Actor]:
        """The actors in the node's nursery, in start order (consumers first)."""
        first: list[Actor] = [
            self.recorder,
            self.abort_waiters,
            self.executor,
            self.timekeeper,
            self.puller,
            self.aborts,
        ]
        return first if self.janitor is None else [*first, self.janitor]

    def stop_intake(self) -> None:
        """Graceful stop, in pipeline order: the Puller stops claiming and closes its
        channel; the Timekeeper then ends and closes its own; the Executor lets running
        instances finish (grace) and closes its; the Recorder records the rest and ends.
        Nothing is dropped: what was claimed but not run is given back afterwards."""
        self.aborts.stop()
        self.puller.stop()
        if self.janitor is not None:
            self.janitor.stop()


Actor = Recorder | AbortWaiters | Executor | Timekeeper | Puller | Aborts | Janitor


def build_actors(
    settings: NodeSettings,
    store: ResilientStore,
    registry: TaskRegistry,
    clock: Clock,
    events: Transitions,
    *,
    runner: Runner | None = None,
    to_notices: trio.MemorySendChannel[SchedulesChanged] | None = None,
) -> NodeActors:
    """``to_notices``: where the Leases actor tells of schedules changed elsewhere (the
    notifier's host, :mod:`tickwork.notify`), if anywhere."""
    s = settings
    node = s.node_id
    to_tk, tk_in = trio.open_memory_channel[TimekeeperMsg](_CHANNEL_BATCHES)
    to_ex, ex_in = trio.open_memory_channel[ExecutorMsg](_CHANNEL_BATCHES)
    to_rec, rec_in = trio.open_memory_channel[RecorderMsg](_CHANNEL_BATCHES)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](_INBOX)
    to_aborts, aborts_in = trio.open_memory_channel[AbortsMsg](_INBOX)
    to_rec_aborts, rec_aborts_in = trio.open_memory_channel[AbortsMsg](_INBOX)
    to_waiters, waiters_in = trio.open_memory_channel[AbortRecorded](_INBOX)
    capacity = Capacity(s.max_in_memory, s.low_water)
    cluster_store = store.inner if isinstance(store.inner, ClusterStore) else None
    lease_book = None if cluster_store is None else LeaseBook(s.lease_us / 1e6)
    executor = Executor(
        clock=clock,
        store=store,
        owner=node,
        tasks=registry,
        receive=ex_in,
        to_recorder=to_rec,
        max_concurrency=s.max_concurrency,
        outbox_limit=max(s.batch_size, s.max_concurrency),
        shutdown_grace=s.grace,
        events=events,
        runner=runner,
        leases=lease_book,
    )
    link = None
    if cluster_store is not None:
        link = ClusterLink(
            store=cluster_store,
            owner=node,
            lease_us=s.lease_us,
            held=lambda: capacity.held,
            running=lambda: executor.statistics().running,
            leases=lease_book,
        )
    return NodeActors(
        leases=Leases(
            store=store,
            clock=clock,
            owner=node,
            lease_us=s.lease_us,
            poll_interval_us=s.poll_us,
            to_puller=to_puller.clone(),
            to_aborts=to_aborts.clone(),
            cluster=link,
            to_notices=to_notices,
        ),
        aborts=Aborts(receive=aborts_in, to_recorder=to_rec_aborts, to_timekeeper=to_tk.clone()),
        puller=Puller(
            store=store,
            clock=clock,
            capacity=capacity,
            to_timekeeper=to_tk,
            owner=node,
            window_us=s.horizon_us,  # the Puller claims only within the horizon
            batch_size=s.batch_size,
            lease_us=s.lease_us,
            inbox=puller_in,
            events=events,
            cluster=link,
        ),
        timekeeper=Timekeeper(
            clock=clock,
            store=store,
            owner=node,
            receive=tk_in,
            to_executor=to_ex,
            to_puller=to_puller.clone(),
            max_batch=s.batch_size,
        ),
        executor=executor,
        recorder=Recorder(
            clock=clock,
            store=store,
            owner=node,
            tasks=registry,
            receive=rec_in,
            aborts=rec_aborts_in,
            to_puller=to_puller.clone(),
            max_batch=s.batch_size,
            hook_concurrency=s.hook_concurrency,
            linger=s.linger,
            to_abort_waiters=to_waiters,
            events=events,
        ),
        abort_waiters=AbortWaiters(waiters_in),
        janitor=(
            None
            if s.retention_us is None
            else Janitor(store=store, clock=clock, retention_us=s.retention_us)
        ),
        cluster=link,
        to_puller=to_puller,
        to_aborts=to_aborts,
    )
