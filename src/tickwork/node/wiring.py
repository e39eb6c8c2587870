"""``open_scheduler``: wires the actors into a node and gives the caller a Scheduler.

The node runs inside the caller's task tree (structured concurrency): every actor is a
task in a nursery opened here, started with ``nursery.start`` so the caller gets control
only once the node is ready, and leaving the block stops them in order (graceful
shutdown: stop claiming, let running instances finish within ``shutdown_grace``, record
every outcome, give back what was claimed but not run). An actor's crash propagates out
of the block. No threads of its own beyond the store's; no global state.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from datetime import timedelta
from typing import Final

import trio

from tickwork._groups import lone_exceptions_unwrapped
from tickwork._time import td_us
from tickwork.actors.capacity import Capacity
from tickwork.actors.cluster_link import ClusterLink
from tickwork.actors.executor import Executor
from tickwork.actors.janitor import Janitor
from tickwork.actors.leases import Leases, give_back_claims, recover_claims
from tickwork.actors.messages import Outcome, PullerMsg
from tickwork.actors.puller import Puller, TimekeeperMsg
from tickwork.actors.recorder import Recorder
from tickwork.actors.timekeeper import ExecutorMsg, Timekeeper
from tickwork.clock import Clock, SystemClock
from tickwork.errors import InvalidArgument, StoreError
from tickwork.events import EventHub, TransitionEvent
from tickwork.extend._plugins import Plugin, check_plugins, running_plugins
from tickwork.extend._run import (
    Dispatcher,
    RunMiddleware,
    Runner,
    build_runner,
    check_dispatcher,
    check_middleware,
)
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, Instance, check_max_params_bytes
from tickwork.node.mode import CLUSTER_LINGER, node_mode
from tickwork.node.resilience import ResilientStore
from tickwork.node.scheduler import Scheduler
from tickwork.notify import notify_settings, open_notifier
from tickwork.state import State
from tickwork.stores.base import Store
from tickwork.stores.cluster import ClusterStore, NodeRegistry
from tickwork.task import Task, TaskRegistry

log = logging.getLogger("tickwork")

__all__ = ["Scheduler", "open_scheduler"]

_CHANNEL_BATCHES = 4  # batches buffered between two actors; bounded, so backpressure
_PULLER_INBOX = 16  # wake-ups from the Leases actor (each one re-aims the Puller)


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _positive_td(name: str, value: object) -> int:
    if not isinstance(value, timedelta):
        raise InvalidArgument(f"{name} must be a datetime.timedelta, got {value!r}")
    if value <= timedelta(0):
        raise InvalidArgument(f"{name} must be positive, got {value}")
    return td_us(value)


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _poll_us(poll_interval: object) -> int:
    poll_us = _positive_td("poll_interval", poll_interval)
    if poll_us < td_us(MIN_POLL_INTERVAL):
        raise InvalidArgument(
            f"poll_interval must be at least {td_us(MIN_POLL_INTERVAL) // 1000} ms, got "
            f"{poll_interval!r}"
        )
    return poll_us


async def _record_node(store: Store, node: str, registry: TaskRegistry, limit: int) -> None:
    """Make the node's params limit the store's (the built-in stores have one) and record
    the node's tasks and limit: what the CLI checks `add --task` against."""
    _set_params_limit(store, limit)
    if isinstance(store, NodeRegistry):
        await store.record_node(node, tasks=sorted(registry), max_params_bytes=limit)


def _set_params_limit(store: Store, limit: int) -> None:
    """Check the node's params limit and make it the store's (the built-in stores have one)."""
    check_max_params_bytes(limit)
    if hasattr(store, "max_params_bytes"):
        store.max_params_bytes = limit


#: The shortest ``poll_interval``: a node polling its store more often than this burns CPU
#: (and the store's) for changes a few milliseconds sooner.
MIN_POLL_INTERVAL: Final = timedelta(milliseconds=10)


@lone_exceptions_unwrapped
@asynccontextmanager
async def open_scheduler(  # noqa: PLR0915 - the checks of each setting, one line each
    store: Store,
    *,
    tasks: Iterable[Task] = (),
    window: timedelta = timedelta(hours=1),
    max_in_memory: int = 100_000,
    max_concurrency: int = 1_000,
    clock: Clock | None = None,
    node_id: str | None = None,
    batch_size: int = 5_000,
    lease: timedelta | None = None,
    poll_interval: timedelta = timedelta(milliseconds=500),
    shutdown_grace: timedelta = timedelta(seconds=30),
    hook_concurrency: int = 100,
    store_outage_limit: timedelta = timedelta(minutes=2),
    user_call_retry: timedelta = timedelta(0),
    retention: timedelta | None = None,
    claim_horizon: timedelta | None = None,
    record_linger: timedelta | None = None,
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    middleware: Sequence[RunMiddleware] = (),
    dispatcher: Dispatcher | None = None,
    plugins: Sequence[Plugin] = (),
) -> AsyncIterator[Scheduler]:
    """Run a scheduler node on ``store`` for the duration of the ``async with`` block.

    Args:
        store: where instances live (``SQLiteStore``, ``MemoryStore``, ``PostgresStore``).
        tasks: the tasks this node can run (``Task`` instances with unique names).
        window: look-ahead; only instances due within it are claimed into memory.
        max_in_memory: hard bound on instances held in memory at once.
        max_concurrency: instances running at once.
        clock: wall clock (default: the system clock); tests pass a ``VirtualClock``.
        node_id: this node's name in the store (default: host:pid:random).
        batch_size: instances per claim (and the largest batch between actors).
        lease: how long a claim stays valid without renewal (renewed every lease/3);
            default 60 s, or 10 s on a cluster store (see ``docs/clustering.md``); at
            least 1 s.
        poll_interval: how often to look for changes committed by other processes; at
            least 10 ms.
        shutdown_grace: how long running instances may take to finish on shutdown.
        hook_concurrency: task hooks (on_success, ...) running at once.
        store_outage_limit: how long store calls may keep failing (retried with backoff)
            before the node stops with a ``StoreError``.
        user_call_retry: how long a call of the scheduler's API (``schedule``, ``get``,
            ``abort``, ``list``...) retries a failing store before it raises
            ``StoreUnavailable``; the default 0 fails at once, so that a caller hears of an
            outage instead of hanging. The actors keep retrying regardless.
        retention: prune ended instances and run history older than this (in batches,
            see ``docs/operations.md``); None (the default) keeps them forever.
        claim_horizon: how far ahead the node claims instances: by default the whole
            window, or 2 s on a cluster store (``PostgresStore``), so that the nodes
            share the work instead of one hoarding the window. At most ``window``.
        record_linger: how long outcomes may wait to share a commit when they come
            slowly (fewer than 256 waiting); a full batch is committed at once. It delays
            the durable record (and hooks, events) of a run by at most this much, never
            a start, and widens by as much the window in which a crash loses a finished
            run's outcome (it then runs again); runs of at-most-once tasks never wait.
            Default: 50 ms on a cluster store, where every commit is a round trip to the
            shared server; 0 otherwise (each batch as it comes).
        max_params_bytes: the largest params (bytes, as stored) an instance or schedule
            may carry: ``schedule``, ``schedule_many`` and ``add_schedule`` refuse larger
            ones with ``InvalidArgument``, and so does the store (this sets the built-in
            stores' own limit). Default 1 MiB. It is recorded in the store's nodes table
            with the node's tasks, where the CLI finds it.
        middleware: async callables ``(run, call_next) -> result`` wrapped around every
            run, the first outermost (``docs/extending.md``).
        dispatcher: where runs go (a ``tickwork.Dispatcher``); default: each task's
            ``run`` in this node.
        plugins: ``tickwork.Plugin`` instances started in the node's nursery once it is
            ready, cancelled first when it stops.

    Raises:
        InvalidArgument: a setting is out of range; StoreError: the store cannot be used.
    """
    if not isinstance(store, Store):
        raise InvalidArgument(
            f"store must implement tickwork.Store (e.g. tickwork.SQLiteStore('tickwork.db')), "
            f"got {store!r}"
        )
    window_us = _positive_td("window", window)
    mode = node_mode(store, window_us=window_us, lease=lease, claim_horizon=claim_horizon)
    poll_us = _poll_us(poll_interval)
    grace = shutdown_grace.total_seconds() if isinstance(shutdown_grace, timedelta) else -1.0
    if grace < 0:
        raise InvalidArgument(f"shutdown_grace must be a timedelta >= 0, got {shutdown_grace!r}")
    _positive_int("max_in_memory", max_in_memory)
    _positive_int("max_concurrency", max_concurrency)
    _positive_int("batch_size", batch_size)
    _positive_int("hook_concurrency", hook_concurrency)
    outage_limit = _positive_td("store_outage_limit", store_outage_limit) / 1e6
    if not isinstance(user_call_retry, timedelta) or user_call_retry < timedelta(0):
        raise InvalidArgument(f"user_call_retry must be a timedelta >= 0, got {user_call_retry!r}")
    retention_us = None if retention is None else _positive_td("retention", retention)
    if record_linger is None:
        record_linger = timedelta(0) if mode.cluster is None else CLUSTER_LINGER
    linger = record_linger.total_seconds() if isinstance(record_linger, timedelta) else -1.0
    if not 0 <= linger <= 1:
        raise InvalidArgument(
            f"record_linger must be a timedelta from 0 to 1 s, got {record_linger!r}"
        )
    if isinstance(tasks, Task):
        raise InvalidArgument("tasks must be a list of tasks, e.g. tasks=[Greet()]")
    registry = TaskRegistry(tasks)
    notify_settings(registry.values())  # a bad Task.notify is refused before the store opens
    clock = clock or SystemClock()
    if not isinstance(clock, Clock):
        raise InvalidArgument(f"clock must have now_us() and sleep_until_us(), got {clock!r}")
    check_max_params_bytes(max_params_bytes)
    chain, dispatcher = check_middleware(middleware), check_dispatcher(dispatcher)
    plugins = check_plugins(plugins)
    node = node_id or default_node_id()
    batch_size = min(batch_size, max_in_memory)

    await store.open(node_id=node)
    resilient = ResilientStore(
        store,
        give_up_after=outage_limit,
        user_call_retry=user_call_retry.total_seconds(),
    )
    running: Scheduler | None = None
    given_back = 0
    try:
        await _record_node(store, node, registry, max_params_bytes)
        await recover_claims(resilient, clock)
        async with (
            _task_lifespans(registry),
            open_notifier(registry.values(), resilient) as notices,  # outlives the drain
            dispatcher.lifespan() if dispatcher is not None else nullcontext(),
            _run_node(
                store=resilient,
                registry=registry,
                clock=clock,
                node=node,
                window_us=window_us,
                lease_us=mode.lease_us,
                poll_us=poll_us,
                grace=grace,
                max_in_memory=max_in_memory,
                max_concurrency=max_concurrency,
                batch_size=batch_size,
                hook_concurrency=hook_concurrency,
                linger=linger,
                retention_us=retention_us,
                cluster=mode.cluster,
                horizon_us=mode.horizon_us,
                max_params_bytes=max_params_bytes,
                runner=build_runner(chain, dispatcher, node),
            ) as scheduler,
            running_plugins(plugins, scheduler, clock),  # started last, stopped first
        ):
            notices.watch(scheduler)
            running = scheduler
            yield scheduler
    finally:
        with trio.CancelScope(shield=True):
            try:
                given_back = await give_back_claims(resilient, clock, node)
            except StoreError:
                log.exception("could not give back the claims of node %s", node)
            await store.aclose()
        if running is not None:
            _log_stopped(running, given_back)


def _log_stopped(scheduler: Scheduler, given_back: int) -> None:
    recorded = scheduler.statistics().recorder.recorded
    counts = ", ".join(f"{name} {n}" for name, n in sorted(recorded.items())) or "none"
    log.info(
        "node %s stopped (outcomes recorded: %s; %d claims given back)",
        scheduler.node_id, counts, given_back,
    )  # fmt: skip


@asynccontextmanager
async def _task_lifespans(registry: TaskRegistry) -> AsyncIterator[None]:
    """Each task's ``lifespan``, entered in order and exited in reverse: around the node,
    so a task's connections outlive its last run."""
    async with AsyncExitStack() as stack:
        for task in registry.values():
            await stack.enter_async_context(task.lifespan())
        yield


@asynccontextmanager
async def _run_node(  # noqa: C901, PLR0915 - the wiring: many tiny callbacks, no logic
    *,
    store: ResilientStore,
    registry: TaskRegistry,
    clock: Clock,
    node: str,
    window_us: int,
    lease_us: int,
    poll_us: int,
    grace: float,
    max_in_memory: int,
    max_concurrency: int,
    batch_size: int,
    hook_concurrency: int,
    linger: float = 0.0,
    retention_us: int | None = None,
    cluster: ClusterStore | None = None,
    horizon_us: int | None = None,
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    runner: Runner | None = None,
) -> AsyncIterator[Scheduler]:
    hub = EventHub()
    abort_marks: set[int] = set()
    low_water = max_in_memory - min(batch_size, max(max_in_memory // 2, 1))
    capacity = Capacity(max_in_memory, low_water)

    to_tk, tk_in = trio.open_memory_channel[TimekeeperMsg](_CHANNEL_BATCHES)
    to_ex, ex_in = trio.open_memory_channel[ExecutorMsg](_CHANNEL_BATCHES)
    to_rec, rec_in = trio.open_memory_channel[list[Outcome]](_CHANNEL_BATCHES)
    to_puller, puller_in = trio.open_memory_channel[PullerMsg](_PULLER_INBOX)
    aborts_out = to_tk.clone()

    def publish(inst: Instance, from_state: State, to_state: State, at_us: int) -> None:
        if hub.active:
            hub.publish(
                TransitionEvent(
                    inst.id,
                    inst.task,
                    from_state,
                    to_state,
                    at_us,
                    node,
                    inst.run_at_us,
                    inst.schedule_id,
                )
            )

    def on_claimed(batch: list[Instance]) -> None:
        if hub.active:
            now = clock.now_us()
            for inst in batch:
                publish(inst, State.PENDING, State.CLAIMED, now)

    def on_running(inst: Instance, at_us: int) -> None:
        if hub.active:
            publish(inst, State.CLAIMED, State.RUNNING, at_us)

    scheduler: Scheduler | None = None

    async def on_remote_aborts(ids: list[int]) -> None:
        if scheduler is not None:
            await scheduler._carry_out_aborts(ids)  # noqa: SLF001 - the node's own wiring

    def on_recorded(instance_id: int, state: State) -> None:
        if scheduler is not None:
            scheduler._recorded(instance_id, state)  # noqa: SLF001

    link = None
    if cluster is not None:
        link = ClusterLink(
            store=cluster,
            owner=node,
            lease_us=lease_us,
            held=lambda: capacity.held,
            running=lambda: executor.statistics().running,
        )
    puller = Puller(
        store=store,
        clock=clock,
        capacity=capacity,
        to_timekeeper=to_tk,
        owner=node,
        window_us=horizon_us or window_us,  # the Puller claims only within the horizon
        batch_size=batch_size,
        lease_us=lease_us,
        inbox=puller_in,
        on_claimed=on_claimed,
        cluster=link,
    )
    leases = Leases(
        store=store,
        clock=clock,
        owner=node,
        lease_us=lease_us,
        poll_interval_us=poll_us,
        to_puller=to_puller,
        on_remote_aborts=on_remote_aborts,
        cluster=link,
    )
    timekeeper = Timekeeper(
        clock=clock,
        store=store,
        owner=node,
        capacity=capacity,
        receive=tk_in,
        to_executor=to_ex,
        max_batch=batch_size,
    )
    executor = Executor(
        clock=clock,
        store=store,
        owner=node,
        tasks=registry,
        receive=ex_in,
        to_recorder=to_rec,
        max_concurrency=max_concurrency,
        outbox_limit=max(batch_size, max_concurrency),
        shutdown_grace=grace,
        abort_marks=abort_marks,
        on_running=on_running,
        runner=runner,
        lease_ok=None if link is None else (lambda inst: link.leases.valid(inst.claim_token)),
    )
    recorder = Recorder(
        clock=clock,
        store=store,
        owner=node,
        tasks=registry,
        capacity=capacity,
        receive=rec_in,
        max_batch=batch_size,
        hook_concurrency=hook_concurrency,
        linger=linger,
        abort_marks=abort_marks,
        on_pending=puller.note_pending,
        on_recorded=on_recorded,
        publish=publish,
    )
    janitor = (
        None
        if retention_us is None
        else Janitor(store=store, clock=clock, retention_us=retention_us)
    )
    # The Leases actor lives in a nursery of its own around the pipeline's: started
    # first, it renews what the node holds until the pipeline has drained and every
    # outcome is written; only then does it stop, and open_scheduler gives back the rest.
    async with trio.open_nursery() as lifespan:
        await lifespan.start(leases.run)
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            await nursery.start(executor.run)
            await nursery.start(timekeeper.run)
            await nursery.start(puller.run)
            if janitor is not None:
                await nursery.start(janitor.run)
            scheduler = Scheduler(
                store=store.user_calls,  # the API's calls fail fast during an outage
                registry=registry,
                clock=clock,
                node_id=node,
                window_us=window_us,
                puller=puller,
                timekeeper=timekeeper,
                executor=executor,
                recorder=recorder,
                capacity=capacity,
                hub=hub,
                abort_marks=abort_marks,
                aborts_out=aborts_out,
                publish=publish,
                janitor=janitor,
                cluster=link,
                max_params_bytes=max_params_bytes,
            )
            log.info(
                "node %s started (lease %g s, up to %d running, %d held, window %g s)",
                node, lease_us / 1e6, max_concurrency, max_in_memory, window_us / 1e6,
            )  # fmt: skip
            try:
                yield scheduler
            finally:
                log.info(
                    "node %s stopping: claiming nothing more; %d running get up to %g s "
                    "to finish",
                    node, executor.statistics().running, grace,
                )  # fmt: skip
                # Graceful stop, in pipeline order: the Puller stops claiming and closes
                # its channel; the Timekeeper then ends and closes its own; the Executor
                # lets running instances finish (grace) and closes its; the Recorder
                # records the rest and ends. Nothing is dropped on the way: what was
                # claimed but not run is given back by store.release afterwards.
                scheduler._close()  # noqa: SLF001
                puller.stop()
                if janitor is not None:
                    janitor.stop()
                aborts_out.close()  # no checkpoint: a cancelled stop would lose the error
        # Everything the node ran is recorded: its leases may lapse now, and the event
        # stream ends after the Recorder's last write (subscribers see the drain).
        hub.close()
        leases.stop()
