"""The ``tickwork`` command line: run a node, and add, list, show and abort instances.

``run`` starts a scheduler node on a SQLite database, or on a PostgreSQL one (``--db
postgresql://...``: one node of a cluster). Every other command opens the same database
as a *client* (``store.open()`` without a node id), so it works while nodes run on it;
a node notices what a client committed by polling the store (SQLite) or by a
notification (PostgreSQL). ``nodes`` lists a cluster's nodes.

Errors are one ``error: ...`` line on stderr, never a traceback: exit status 2 for a
usage error (a bad option value), 1 for a runtime error (no such instance, a database
locked by another node, a file that is not a tickwork database), 130 after an interrupt.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import trio

from tickwork._cli_cron import cron
from tickwork._cli_format import (
    attempt_dict,
    dump_json,
    error_report,
    format_duration,
    instance_dict,
    instances_table,
    node_dict,
    nodes_table,
    setup_logging,
    show_text,
    stats_text,
)
from tickwork._cli_parse import (
    DB,
    DURATION,
    ID,
    JSON,
    POSITIVE_DURATION,
    STATE,
    TASK_NAME_TYPE,
    TIME,
    DbTarget,
    PostgresTarget,
    bash_params,
    open_store,
    resolve_tasks,
)
from tickwork._time import from_us
from tickwork.clock import SystemClock
from tickwork.errors import InvalidArgument
from tickwork.model import NewInstance, pack, validate_new
from tickwork.scheduler import open_scheduler
from tickwork.state import State
from tickwork.stores.cluster import ClusterStore
from tickwork.tasks.bash import BashTask

if TYPE_CHECKING:
    from datetime import timedelta

    from tickwork.model import AbortResult, Attempt, Instance
    from tickwork.stores.base import Store
    from tickwork.stores.cluster import NodeInfo
    from tickwork.task import Task

__all__ = ["cli", "main"]

log = logging.getLogger("tickwork.cli")

F = TypeVar("F", bound=Callable[..., Any])

_NO_DB = (
    "no tickwork database at {path} (start a node with `tickwork run` "
    "or add an instance with `tickwork add`)"
)
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_EXIT_INTERRUPTED = 130


# -- options shared by every command --------------------------------------------------


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Keep a logging option in ``ctx.meta`` (shared by the group and its commands)."""
    if value is not None and param.name is not None:
        ctx.meta[f"tickwork.{param.name}"] = value


def _log_options(f: F) -> F:
    """``--log-level`` and ``--log-format``: accepted before and after the command name."""
    f = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default=None,
        expose_value=False,
        callback=_remember,
        help="Log lines as text, or as one JSON object per line.  [default: text]",
    )(f)
    return click.option(
        "--log-level",
        type=click.Choice(_LEVELS, case_sensitive=False),
        default=None,
        expose_value=False,
        callback=_remember,
        help="Log threshold (logs go to stderr).  [default: INFO for run, else WARNING]",
    )(f)


def _db_option(f: F) -> F:
    return click.option(
        "--db",
        type=DB,
        default=Path("tickwork.db"),
        envvar="TICKWORK_DB",
        show_envvar=True,
        show_default=True,
        help="The SQLite database file, or a PostgreSQL URI "
        "(postgresql://user@host/dbname?schema=tickwork) for a cluster.",
    )(f)


def _json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
    )(f)


def _setup_logging(default_level: str) -> None:
    """Configure logs as ``--log-level`` / ``--log-format`` asked (before or after the command)."""
    meta = click.get_current_context().meta
    setup_logging(
        str(meta.get("tickwork.log_level", default_level)),
        str(meta.get("tickwork.log_format", "text")),
    )


def _emit(doc: object, as_json: bool, text: str) -> None:
    """Print ``doc`` as JSON, or ``text``."""
    click.echo(dump_json(doc) if as_json else text)


def _require_db(db: DbTarget) -> None:
    """Refuse to read a database that is not there (opening would create an empty one).

    A PostgreSQL server is asked when the store opens.
    """
    if isinstance(db, Path) and not db.exists():
        raise click.ClickException(_NO_DB.format(path=db))


@asynccontextmanager
async def _client(db: DbTarget) -> AsyncIterator[Store]:
    """Open ``db`` as a client: no node lock, so it works while a node runs on it."""
    store = open_store(db)
    await store.open()
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_log_options
def cli() -> None:
    """tickwork: a durable job scheduler.

    Start a node with `tickwork run`; add, list, inspect and abort instances from
    another shell while it runs. Every command takes --db (or $TICKWORK_DB).
    """


# -- run --------------------------------------------------------------------------------


@cli.command()
@_db_option
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
    "--node-id", metavar="NAME", default=None, help="This node's name.  [default: host:pid:random]"
)
@click.option(
    "--lease",
    type=POSITIVE_DURATION,
    default=None,
    help="How long a claim stays valid without renewal; in a cluster, the takeover time "
    "after a node dies.  [default: 60s; 10s on PostgreSQL]",
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
    "--tasks",
    "task_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Tasks to register besides bash: a Task instance, a Task subclass, or a list of "
    "them. Repeat the option or separate specs with commas.",
)
@_log_options
def run(
    *,
    db: DbTarget,
    window: timedelta,
    max_concurrency: int,
    max_in_memory: int,
    shutdown_grace: timedelta,
    node_id: str | None,
    lease: timedelta | None,
    claim_horizon: timedelta | None,
    retention: timedelta | None,
    task_specs: tuple[str, ...],
) -> None:
    """Run a scheduler node on the database until SIGINT or SIGTERM.

    The first signal stops gracefully: no new instances start, running ones may finish
    within --shutdown-grace, and what was claimed is given back. A second one stops at
    once (running instances are cancelled; nothing durable is lost).
    """
    _setup_logging("INFO")
    tasks = _load_tasks(task_specs)
    # The process is the node's: what is loaded by now (modules, the tasks) lives as long
    # as it does. Frozen, it stays out of every full pass of the cyclic garbage collector,
    # which stops the node for each pass (docs/operations.md, "Python's garbage collector").
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
            node_id=node_id,
            lease=lease,
            claim_horizon=claim_horizon,
            retention=retention,
        )

    code = trio.run(serve)
    click.get_current_context().exit(code)


def _load_tasks(specs: Sequence[str]) -> list[Task]:
    """BashTask plus the tasks named by ``--tasks``; a user task named "bash" replaces it."""
    loaded: list[Task] = []
    for spec in (s.strip() for group in specs for s in group.split(",")):
        if not spec:
            continue
        try:
            loaded.extend(resolve_tasks(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--tasks'") from None
    if not any(task.name == BashTask.name for task in loaded):
        loaded.insert(0, BashTask())
    return loaded


async def _serve(
    db: DbTarget,
    tasks: list[Task],
    *,
    window: timedelta,
    max_concurrency: int,
    max_in_memory: int,
    shutdown_grace: timedelta,
    node_id: str | None,
    lease: timedelta | None = None,
    claim_horizon: timedelta | None = None,
    retention: timedelta | None = None,
) -> int:
    """Run one node until a signal; returns the exit status (130 if stopped at once)."""
    stop = trio.Event()
    hurry = trio.CancelScope()
    hurried = False

    async def watch(signals: AsyncIterator[int]) -> None:
        nonlocal hurried
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                log.info(
                    "%s: shutting down (running instances get %s to finish; "
                    "send it again to stop at once)",
                    name,
                    format_duration(shutdown_grace),
                )
                stop.set()
            else:
                log.warning("%s again: stopping at once, cancelling running instances", name)
                hurried = True
                hurry.cancel()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            with hurry:
                async with open_scheduler(
                    open_store(db),
                    tasks=tasks,
                    window=window,
                    max_concurrency=max_concurrency,
                    max_in_memory=max_in_memory,
                    shutdown_grace=shutdown_grace,
                    node_id=node_id,
                    lease=lease,
                    claim_horizon=claim_horizon,
                    retention=retention,
                ) as scheduler:
                    names = ", ".join(sorted(scheduler.tasks))
                    log.info("node %s started on %s (tasks: %s)", scheduler.node_id, db, names)
                    await stop.wait()
            nursery.cancel_scope.cancel()
    return _EXIT_INTERRUPTED if hurried else 0


# -- add --------------------------------------------------------------------------------


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option(
    "--task", "task_name", type=TASK_NAME_TYPE, metavar="NAME", help="Task name.  [default: bash]"
)
@click.option("--at", "at", type=TIME, help="When, ISO-8601 with a UTC offset or Z.")
@click.option("--in", "delay", type=DURATION, help="When, from now: 30s, 5m, 1h30m, 2d ...")
@click.option("--params", type=JSON, help="Params as JSON (packed with msgpack).")
@click.option("--dedup-key", metavar="KEY", help="Add at most one instance with this key.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run up to N times if it fails.  [default: the task's; once]",
)
@click.option("--timeout", type=POSITIVE_DURATION, help="Cancel a run after this long.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_db_option
@_json_option
@_log_options
def add(
    *,
    task_name: str | None,
    at: Any,
    delay: timedelta | None,
    params: Any,
    dedup_key: str | None,
    max_attempts: int | None,
    timeout: timedelta | None,
    command: tuple[str, ...],
    db: DbTarget,
    as_json: bool,
) -> None:
    """Add one instance and print its id.

    For the bash task (the default), the words after `--` are the command, each one
    argument (quoted with shlex.join): `tickwork add --in 5m -- echo hi`. For shell
    syntax (pipes, &&), give the whole command as one string in --params:
    `--params '{"cmd": "a && b", "timeout": 60}'`.
    """
    _setup_logging("WARNING")
    if (at is None) == (delay is None):
        raise click.UsageError("give exactly one of --at TIME or --in DURATION (--in 0 is now)")
    task = task_name or BashTask.name
    if command and task != BashTask.name:
        raise click.UsageError(
            f"words after -- are a bash command, but --task is {task!r}; "
            "give that task's params with --params JSON"
        )
    packed = bash_params(command, params) if task == BashTask.name else _packed(params)
    now_us = SystemClock().now_us()
    run_at = from_us(now_us) + delay if delay is not None else at
    try:
        row = validate_new(
            NewInstance(
                task,
                run_at,
                packed,
                dedup_key=dedup_key,
                max_attempts=max_attempts,
                timeout=timeout,
            )
        )
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    if row.run_at_us < now_us - 1_000_000:
        log.warning("%s is in the past: the instance runs as soon as a node picks it up", run_at)

    async def insert() -> tuple[Instance, bool]:
        async with _client(db) as store:
            (iid,) = await store.insert([row], now_us)
            inst = await store.get(iid)
        assert inst is not None  # noqa: S101 - just inserted, and instances are never deleted
        return inst, inst.created_us == now_us

    inst, created = trio.run(insert)
    if not created:
        click.echo(
            f"an instance with dedup key {dedup_key!r} already exists: "
            f"{inst.id} ({inst.state.name}); nothing added",
            err=True,
        )
    _emit({**instance_dict(inst), "created": created}, as_json, str(inst.id))


def _packed(params: Any) -> bytes:
    return b"" if params is None else pack(params)


# -- ls / show ----------------------------------------------------------------------------


@cli.command(name="ls")
@click.option("--state", type=STATE, help="Only this state (PENDING, FAILED, ...).")
@click.option("--task", "task_name", metavar="NAME", help="Only this task.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    metavar="N",
    default=50,
    show_default=True,
    help="Show at most N (1 to 10000).",
)
@click.option("--before-id", type=ID, metavar="ID", help="Next page: only ids below ID.")
@_db_option
@_json_option
@_log_options
def list_instances(
    *,
    state: State | None,
    task_name: str | None,
    limit: int,
    before_id: int | None,
    db: DbTarget,
    as_json: bool,
) -> None:
    """List instances, newest first."""
    _setup_logging("WARNING")
    _require_db(db)

    async def fetch() -> list[Instance]:
        async with _client(db) as store:
            return await store.list(state=state, task=task_name, limit=limit, before_id=before_id)

    page = trio.run(fetch)
    if as_json:
        click.echo(dump_json([instance_dict(inst) for inst in page]))
        return
    click.echo(instances_table(page) if page else "no instances")
    if len(page) == limit:
        click.echo(f"(more: --before-id {page[-1].id})", err=True)


@cli.command()
@click.argument("instance_id", metavar="ID", type=ID)
@_db_option
@_json_option
@_log_options
def show(*, instance_id: int, db: DbTarget, as_json: bool) -> None:
    """Show every field of one instance and its run history."""
    _setup_logging("WARNING")
    _require_db(db)

    async def fetch() -> tuple[Instance, list[Attempt]]:
        async with _client(db) as store:
            inst = await store.get(instance_id)
            if inst is None:
                raise click.ClickException(f"no instance with id {instance_id} in {db}")
            return inst, await store.history(instance_id)

    inst, history = trio.run(fetch)
    if as_json:
        click.echo(
            dump_json({**instance_dict(inst), "history": [attempt_dict(a) for a in history]})
        )
    else:
        click.echo(show_text(inst, history))


# -- abort / stats ------------------------------------------------------------------------


@cli.command()
@click.argument("instance_id", metavar="ID", type=ID)
@_db_option
@_json_option
@_log_options
def abort(*, instance_id: int, db: DbTarget, as_json: bool) -> None:
    """Abort an instance: at once if pending, else by the node that holds it."""
    _setup_logging("WARNING")
    _require_db(db)

    async def request() -> tuple[State, AbortResult]:
        async with _client(db) as store:
            # Read first: a store need not report the state before the call (``previous``).
            before = await store.get(instance_id)
            if before is None:
                raise click.ClickException(f"no instance with id {instance_id} in {db}")
            return before.state, await store.request_abort(instance_id, SystemClock().now_us())

    seen, result = trio.run(request)
    if not result.found or result.state is None:  # deleted in between: not in this schema
        raise click.ClickException(f"no instance with id {instance_id} in {db}")
    previous = result.previous or seen
    if result.requested:
        text = f"abort requested; node {result.owner} will cancel it"
    elif previous.terminal:
        text = f"instance {instance_id} already {previous.name}; nothing to abort"
    else:
        text = f"aborted {instance_id}"
    doc = {
        "id": instance_id,
        "state": result.state.name,
        "previous": previous.name,
        "requested": result.requested,
        "owner": result.owner,
        "message": text,
    }
    _emit(doc, as_json, text)


@cli.command()
@_db_option
@_json_option
@_log_options
def stats(*, db: DbTarget, as_json: bool) -> None:
    """Counts per state, the next due time and the database size."""
    _setup_logging("WARNING")
    _require_db(db)

    async def fetch() -> tuple[dict[State, int], int | None]:
        async with _client(db) as store:
            return await store.count_by_state(), await store.next_pending_at()

    counts, next_us = trio.run(fetch)
    now_us = SystemClock().now_us()
    size: int | None = None  # a PostgreSQL schema's size is the server's business
    wal_size = 0
    if isinstance(db, Path):
        size = db.stat().st_size
        wal = Path(f"{db}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    doc = {
        "db": str(db),
        "db_size_bytes": size,
        "wal_size_bytes": wal_size,
        "total": sum(counts.values()),
        "counts": {s.name: counts.get(s, 0) for s in State},
        "next_pending_at": None if next_us is None else from_us(next_us).isoformat(),
    }
    _emit(doc, as_json, stats_text(doc, next_us, now_us))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also nodes that stopped or went silent.")
@_db_option
@_json_option
@_log_options
def nodes(*, show_all: bool, db: DbTarget, as_json: bool) -> None:
    """The nodes of a cluster (PostgreSQL): id, start, last heartbeat, work held.

    A node is "alive" while its heartbeats arrive within its lease, "stopped" once it
    shut down cleanly, and "silent" when it stopped beating without saying goodbye (it
    died, or lost the database): its work is taken over when its leases lapse.
    """
    _setup_logging("WARNING")
    if not isinstance(db, PostgresTarget):
        raise click.UsageError(
            "tickwork nodes lists the nodes of a cluster: give --db a postgresql:// URI "
            "(a SQLite database has one node at a time)"
        )

    async def fetch() -> list[NodeInfo]:
        async with _client(db) as store:
            if not isinstance(store, ClusterStore):  # pragma: no cover - open_store's choice
                raise click.ClickException(f"{db} is not a cluster store")
            return await store.nodes()

    found = trio.run(fetch)
    if not show_all:
        found = [n for n in found if n.alive or n.held]
    now_us = SystemClock().now_us()
    if as_json:
        click.echo(dump_json([node_dict(n) for n in found]))
        return
    click.echo(nodes_table(found, now_us) if found else "no live nodes (--all shows every node)")


cli.add_command(cron)  # tickwork cron ... (_cli_cron.py)


# -- entry point ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line (the ``tickwork`` console script and ``python -m tickwork``).

    Exits with 0 on success, 1 for a runtime error, 2 for a usage error, 130 after an
    interrupt; every error is one ``error: ...`` line on stderr, never a traceback.
    """
    try:
        rv = cli.main(args=argv, prog_name="tickwork", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into exits
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`| head`): say nothing, and keep Python's exit-time
            # flush of stdout from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        lines, code = error_report(exc)
        for line in lines:
            click.echo(line, err=True)
        sys.exit(code)
    sys.exit(rv if isinstance(rv, int) else 0)
