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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from datetime import timedelta

import trio

from tickwork._groups import lone_exceptions_unwrapped
from tickwork.actors.leases import give_back_claims, recover_claims
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock, SystemClock
from tickwork.errors import InvalidArgument, StoreError
from tickwork.events import EventHub
from tickwork.extend._plugins import Plugin, check_plugins, running_plugins
from tickwork.extend._run import (
    Dispatcher,
    RunMiddleware,
    Runner,
    build_runner,
    check_dispatcher,
    check_middleware,
)
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_max_params_bytes
from tickwork.node._actors import build_actors
from tickwork.node.context import NodeContext
from tickwork.node.resilience import ResilientStore
from tickwork.node.scheduler import Scheduler
from tickwork.node.settings import MIN_POLL_INTERVAL, NodeSettings
from tickwork.notify import NotifierHost, notify_settings, open_notifier
from tickwork.stores.base import Store
from tickwork.stores.cluster import NodeRegistry
from tickwork.task import Task, TaskRegistry

log = logging.getLogger("tickwork")

__all__ = ["MIN_POLL_INTERVAL", "Scheduler", "open_scheduler"]


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


@lone_exceptions_unwrapped
@asynccontextmanager
async def open_scheduler(
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
    settings = NodeSettings.from_options(
        store,
        window=window,
        max_in_memory=max_in_memory,
        max_concurrency=max_concurrency,
        node_id=node_id,
        batch_size=batch_size,
        lease=lease,
        poll_interval=poll_interval,
        shutdown_grace=shutdown_grace,
        hook_concurrency=hook_concurrency,
        store_outage_limit=store_outage_limit,
        user_call_retry=user_call_retry,
        retention=retention,
        claim_horizon=claim_horizon,
        record_linger=record_linger,
        max_params_bytes=max_params_bytes,
    )
    if isinstance(tasks, Task):
        raise InvalidArgument("tasks must be a list of tasks, e.g. tasks=[Greet()]")
    registry = TaskRegistry(tasks)
    notify_settings(registry.values())  # a bad Task.notify is refused before the store opens
    clock = clock or SystemClock()
    if not isinstance(clock, Clock):
        raise InvalidArgument(f"clock must have now_us() and sleep_until_us(), got {clock!r}")
    chain, dispatcher = check_middleware(middleware), check_dispatcher(dispatcher)
    plugins = check_plugins(plugins)
    node = settings.node_id

    await store.open(node_id=node)
    resilient = ResilientStore(
        store, give_up_after=settings.outage_limit, user_call_retry=settings.user_call_retry
    )
    running: Scheduler | None = None
    given_back = 0
    try:
        await _record_node(store, node, registry, settings.max_params_bytes)
        await recover_claims(resilient, clock)
        async with (
            _task_lifespans(registry),
            open_notifier(registry.values(), resilient) as notices,  # outlives the drain
            dispatcher.lifespan() if dispatcher is not None else nullcontext(),
            run_node(
                settings,
                resilient,
                registry,
                clock,
                build_runner(chain, dispatcher, node),
                notices=notices,
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
async def run_node(
    settings: NodeSettings,
    store: ResilientStore,
    registry: TaskRegistry,
    clock: Clock,
    runner: Runner | None = None,
    *,
    notices: NotifierHost | None = None,
) -> AsyncIterator[Scheduler]:
    """Run the actors of one node on an open store; yields the Scheduler over them.

    The Leases actor lives in a nursery of its own around the pipeline's: started first,
    it renews what the node holds until the pipeline has drained and every outcome is
    written; only then does it stop, and ``open_scheduler`` gives back the rest.
    """
    hub = EventHub(settings.node_id)
    events = Transitions(hub, settings.node_id)
    to_notices = None if notices is None else notices.hear_changes()
    actors = build_actors(
        settings, store, registry, clock, events, runner=runner, to_notices=to_notices
    )
    # ``async with hub``: the event stream ends however the node does (cancelled too).
    async with hub, trio.open_nursery() as lifespan:
        await lifespan.start(actors.leases.run)
        async with trio.open_nursery() as nursery:
            for actor in actors.pipeline():
                await nursery.start(actor.run)
            context = NodeContext(
                settings=settings, store=store.user_calls, registry=registry, clock=clock,
                hub=hub, events=events, actors=actors, notices=notices,
            )  # fmt: skip
            scheduler = Scheduler(context)
            _log_started(settings)
            try:
                yield scheduler
            finally:
                log.info(
                    "node %s stopping: claiming nothing more; %d running get up to %g s "
                    "to finish",
                    settings.node_id, actors.executor.statistics().running, settings.grace,
                )  # fmt: skip
                scheduler._close()  # noqa: SLF001 - the node's own wiring
                actors.stop_intake()
        # Everything the node ran is recorded: its leases may lapse now, and the event
        # stream ends after the Recorder's last write (subscribers see the drain).
        hub.close()
        actors.leases.stop()


def _log_started(s: NodeSettings) -> None:
    log.info(
        "node %s started (lease %g s, up to %d running, %d held, window %g s)",
        s.node_id, s.lease_us / 1e6, s.max_concurrency, s.max_in_memory, s.window_us / 1e6,
    )  # fmt: skip
