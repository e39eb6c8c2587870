"""``tickwork run``: a scheduler node on a database until SIGINT or SIGTERM."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import click
import trio

from tickwork.cli._common import EXIT_INTERRUPTED, db_option, log_options, setup_cli_logging
from tickwork.cli._config import ConfiguredCommand, handoff_settings
from tickwork.cli._db import DbTarget, open_store
from tickwork.cli._format import format_duration
from tickwork.cli._http import DEFAULT_HTTP, HTTP_ADDRESS
from tickwork.cli._parse import DURATION, LEASE, POSITIVE_DURATION, SIZE
from tickwork.cli._sd_notify import ServiceNotifier
from tickwork.cli._signals import DUPLICATE_WINDOW_S, ShutdownRequests, Verdict
from tickwork.cli._task_specs import resolve_tasks
from tickwork.errors import InvalidArgument
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES
from tickwork.node.wiring import open_scheduler
from tickwork.stores.tokens import list_tokens
from tickwork.tasks import builtin_tasks, missing_builtin_tasks

if TYPE_CHECKING:
    from datetime import timedelta

    from tickwork.node.scheduler import Scheduler
    from tickwork.task import Task

__all__ = ["run"]

log = logging.getLogger("tickwork.cli")


@click.command(cls=ConfiguredCommand)
@db_option
@click.option(
    "--window",
    type=POSITIVE_DURATION,
    default="1h",
    show_default=True,
    help="Look-ahead: only instances due within it are held in memory.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    default=1_000,
    show_default=True,
    help="Instances running at once.",
)
@click.option(
    "--max-in-memory",
    type=click.IntRange(min=1),
    metavar="N",
    default=100_000,
    show_default=True,
    help="Hard bound on instances held in memory at once.",
)
@click.option(
    "--shutdown-grace",
    type=DURATION,
    default="30s",
    show_default=True,
    help="On SIGTERM/SIGINT, how long running instances may take to finish.",
)
@click.option(
    "--user-call-retry",
    type=DURATION,
    default="0s",
    show_default=True,
    help="How long a call of the API (schedule, get, abort...; the HTTP API's too) retries "
    "a failing store before it fails with StoreUnavailable; 0: at once.",
)
@click.option(
    "--node-id", metavar="NAME", default=None, help="This node's name.  [default: host:pid:random]"
)
@click.option(
    "--lease",
    type=LEASE,
    default=None,
    help="How long a claim stays valid without renewal (at least 1s); in a cluster, the "
    "takeover time after a node dies.  [default: 60s; 10s on PostgreSQL]",
)
@click.option(
    "--claim-horizon",
    type=POSITIVE_DURATION,
    default=None,
    help="How far ahead the node claims instances (at most --window).  "
    "[default: the window; 2s on PostgreSQL]",
)
@click.option(
    "--retention",
    type=POSITIVE_DURATION,
    default=None,
    help="Delete ended instances and run history older than this (e.g. 30d), in small "
    "batches.  [default: keep forever]",
)
@click.option(
    "--max-params",
    "max_params",
    type=SIZE,
    default="1MiB",
    metavar="SIZE",
    help="The largest params an instance or schedule may carry (e.g. 4MiB).  [default: 1MiB]",
)
@click.option(
    "--tasks",
    "task_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Tasks to register besides bash: a Task instance, a Task subclass, or a list of "
    "them. Repeat the option or separate specs with commas.",
)
@click.option(
    "--http",
    "http",
    type=HTTP_ADDRESS,
    default=DEFAULT_HTTP,
    show_default=True,
    help="Serve the HTTP API, web UI and /metrics on HOST:PORT, or `off`. A non-loopback "
    "address needs an API token (`tickwork token add`).",
)
@log_options
def run(
    *,
    db: DbTarget,
    window: timedelta,
    max_concurrency: int,
    max_in_memory: int,
    shutdown_grace: timedelta,
    user_call_retry: timedelta,
    node_id: str | None,
    lease: timedelta | None,
    claim_horizon: timedelta | None,
    retention: timedelta | None,
    max_params: int,
    task_specs: tuple[str, ...],
    http: tuple[str, int] | None,
) -> None:
    """Run a scheduler node on the database until SIGINT or SIGTERM.

    The first signal stops gracefully: no new instances start, running ones may finish
    within --shutdown-grace, and what was claimed is given back. The same signal again
    within 1 s is the same request (delivered twice, e.g. to the process and to its
    group); a later one, or the other signal, stops at once (running instances are
    cancelled; nothing durable is lost).
    """
    setup_cli_logging("INFO")
    if claim_horizon is not None and claim_horizon > window:
        raise click.BadParameter(
            f"the claim horizon ({format_duration(claim_horizon)}) must not be longer than "
            f"--window ({format_duration(window)})",
            param_hint="'--claim-horizon'",
        )
    tasks = _load_tasks(task_specs)
    # The process is the node's: what is loaded by now (modules, the tasks) lives as long
    # as it does. Frozen, it stays out of every full pass of the cyclic garbage collector,
    # which stops the node for each pass (docs/operations.md, "Latency and Python's
    # garbage collector").
    gc.collect()
    gc.freeze()

    async def serve() -> int:
        return await _serve(
            db,
            tasks,
            window=window,
            max_concurrency=max_concurrency,
            max_in_memory=max_in_memory,
            shutdown_grace=shutdown_grace,
            user_call_retry=user_call_retry,
            node_id=node_id,
            lease=lease,
            claim_horizon=claim_horizon,
            retention=retention,
            max_params_bytes=max_params,
            http=http,
            http_given=_given("http"),
        )

    code = trio.run(serve)
    click.get_current_context().exit(code)


def _given(name: str) -> bool:
    """Whether the option was given (command line, environment), not left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT


async def _serve_http(
    scheduler: Scheduler,
    address: tuple[str, int],
    strict: bool,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API. An address that cannot be served stops the node when it was
    asked for (``strict``); the default one (busy port: another node on this host) is
    skipped with a warning instead."""
    from tickwork.http import serve  # noqa: PLC0415 - only `run --http` needs the web stack

    host, port = address
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, scheduler, host, port)
            task_status.started()
    except (InvalidArgument, OSError, BaseExceptionGroup) as caught:
        exc = _lone(caught)
        if exc is None:
            raise
        why = str(exc) if isinstance(exc, InvalidArgument) else exc.strerror or str(exc)
        if strict and isinstance(exc, InvalidArgument):
            raise click.BadParameter(why, param_hint="'--http'") from None
        if strict:
            raise click.BadParameter(
                f"cannot serve HTTP on {host}:{port}: {why}", param_hint="'--http'"
            ) from None
        log.warning("HTTP API not served: cannot listen on %s:%d (%s); use --http", host, port, why)
        task_status.started()


async def _check_public_bind(db: DbTarget, host: str) -> None:
    """Refuse a non-loopback ``--http`` without a token before the node starts anything."""
    from tickwork.http._serve import is_loopback  # noqa: PLC0415 - only with --http

    if is_loopback(host):
        return
    store = open_store(db)
    await store.open()
    try:
        tokens = await list_tokens(store)
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
    if not tokens:
        raise click.BadParameter(
            f"refusing to serve the HTTP API on {host} without a token: make one with "
            "`tickwork token add --scope admin`, or serve on 127.0.0.1",
            param_hint="'--http'",
        )


def _lone(exc: BaseException) -> InvalidArgument | OSError | None:
    """The one refusal or socket error inside ``exc`` (however deeply grouped), if that is
    all it holds."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, InvalidArgument | OSError) else None


def _load_tasks(specs: Sequence[str]) -> list[Task]:
    """The built-in tasks plus those named by ``--tasks``; a user task of a built-in
    task's name (e.g. "bash") replaces it."""
    loaded: list[Task] = []
    for spec in (s.strip() for group in specs for s in group.split(",")):
        if not spec:
            continue
        try:
            loaded.extend(resolve_tasks(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--tasks'") from None
    names = {task.name for task in loaded}
    # bash and the hand-off tasks (webhook, ...), configured from TICKWORK_* variables;
    # a user task of the same name replaces the built-in one.
    try:
        settings = handoff_settings(click.get_current_context())
        builtin = [task for task in builtin_tasks(settings) if task.name not in names]
    except InvalidArgument as exc:  # e.g. a TICKWORK_WEBHOOK_SECRET that is not whsec_...
        raise click.UsageError(str(exc)) from None
    for name in missing_builtin_tasks():
        log.info("task %s is not available: install tickwork[%s] to use it", name, name)
    return builtin + loaded


async def _serve(
    db: DbTarget,
    tasks: list[Task],
    *,
    window: timedelta,
    max_concurrency: int,
    max_in_memory: int,
    shutdown_grace: timedelta,
    user_call_retry: timedelta,
    node_id: str | None,
    lease: timedelta | None = None,
    claim_horizon: timedelta | None = None,
    retention: timedelta | None = None,
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES,
    http: tuple[str, int] | None = None,
    http_given: bool = True,
) -> int:
    """Run one node until a signal; returns the exit status (130 if stopped at once).

    Under systemd (``Type=notify``) it tells the service manager when the node runs
    (every actor started), feeds its watchdog, and says when it begins to stop.
    """
    service = ServiceNotifier.from_environment()
    stop = trio.Event()
    hurry = trio.CancelScope()
    hurried = False

    async def watch(signals: AsyncIterator[int]) -> None:
        nonlocal hurried
        requests = ShutdownRequests()
        async for signum in signals:
            name = signal.Signals(signum).name
            verdict = requests.receive(signum, trio.current_time())
            if verdict is Verdict.STOP:
                log.info(
                    "%s: shutting down (running instances get %s to finish; send a "
                    "signal again after %g s to stop at once)",
                    name,
                    format_duration(shutdown_grace),
                    DUPLICATE_WINDOW_S,
                )
                stop.set()
            elif verdict is Verdict.DUPLICATE:
                log.info(
                    "%s again within %g s: the same shutdown request, still stopping gracefully",
                    name,
                    DUPLICATE_WINDOW_S,
                )
            else:
                log.warning("%s again: stopping at once, cancelling running instances", name)
                hurried = True
                hurry.cancel()

    if http is not None:
        await _check_public_bind(db, http[0])
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            nursery.start_soon(service.feed_watchdog)
            with hurry:
                async with open_scheduler(
                    open_store(db),
                    tasks=tasks,
                    window=window,
                    max_concurrency=max_concurrency,
                    max_in_memory=max_in_memory,
                    shutdown_grace=shutdown_grace,
                    user_call_retry=user_call_retry,
                    node_id=node_id,
                    lease=lease,
                    claim_horizon=claim_horizon,
                    retention=retention,
                    max_params_bytes=max_params_bytes,
                ) as scheduler:
                    names = ", ".join(sorted(scheduler.tasks))
                    log.info("node %s started on %s (tasks: %s)", scheduler.node_id, db, names)
                    async with trio.open_nursery() as web:
                        if http is not None:
                            await web.start(_serve_http, scheduler, http, http_given)
                        # ready: every actor runs, and the HTTP API answers
                        service.notify("READY=1", f"STATUS=node {scheduler.node_id} running")
                        await stop.wait()
                        web.cancel_scope.cancel()  # the HTTP server stops before the node
                    service.notify(
                        "STOPPING=1",
                        "STATUS=stopping: running instances get "
                        f"{format_duration(shutdown_grace)} to finish",
                    )
            nursery.cancel_scope.cancel()
    return EXIT_INTERRUPTED if hurried else 0
