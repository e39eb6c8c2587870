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

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import trio

from tickwork import __version__
from tickwork._time import from_us
from tickwork.cli._common import (
    checked_params,
    client,
    db_option,
    emit,
    force_option,
    json_option,
    log_options,
    packed,
    require_db,
    setup_cli_logging,
    utc_option,
)
from tickwork.cli._cron import cron
from tickwork.cli._cron_import import import_crontab
from tickwork.cli._db import DbTarget
from tickwork.cli._format import instance_dict
from tickwork.cli._http import token
from tickwork.cli._list import list_instances, show
from tickwork.cli._logs import logs
from tickwork.cli._nodes import admit, check_params
from tickwork.cli._parse import (
    DURATION,
    ENV_PAIR,
    ID,
    JSON,
    POSITIVE_DURATION,
    TASK_NAME_TYPE,
    TIME,
)
from tickwork.cli._reporting import error_report
from tickwork.cli._run import run
from tickwork.cli._stats import nodes, stats
from tickwork.cli._status import status
from tickwork.cli._task_specs import bash_params
from tickwork.clock import SystemClock
from tickwork.errors import InvalidArgument
from tickwork.model import MAX_ATTEMPTS, Instance, NewInstance, validate_new
from tickwork.node import operations as _operations
from tickwork.state import State
from tickwork.tasks.bash import BashTask

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from tickwork.model import AbortResult, Instance

__all__ = ["cli", "main"]

log = logging.getLogger("tickwork.cli")

_HOW_TO_START = "start a node with `tickwork run` or add an instance with `tickwork add`"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="tickwork", message="%(prog)s %(version)s"
)
@utc_option
@log_options
def cli() -> None:
    """tickwork: a durable job scheduler.

    Start a node with `tickwork run`; add, list, inspect and abort instances from
    another shell while it runs. Every command takes --db (or $TICKWORK_DB). Times
    are shown in the local time zone (--utc for UTC).

    Shell completion (bash; zsh and fish alike, see docs/cli.md):
    eval "$(_TICKWORK_COMPLETE=bash_source tickwork)"
    """


# -- add --------------------------------------------------------------------------------


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option(
    "--task", "task_name", type=TASK_NAME_TYPE, metavar="NAME", help="Task name.  [default: bash]"
)
@click.option("--at", "at", type=TIME, help="When, ISO-8601 with a UTC offset or Z.")
@click.option("--in", "delay", type=DURATION, help="When, from now: 30s, 5m, 1h30m, 2d ...")
@click.option(
    "--params", type=JSON, help="Params as JSON (packed with msgpack), or @FILE to read it."
)
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, resolve_path=True),
    metavar="DIR",
    help="bash: run the command in DIR.  [default: the current directory]",
)
@click.option(
    "--env",
    "env",
    type=ENV_PAIR,
    multiple=True,
    metavar="NAME=VALUE",
    help="bash: set this environment variable for the command (repeatable).",
)
@click.option("--dedup-key", metavar="KEY", help="Add at most one instance with this key.")
@click.option(
    "--max-attempts",
    type=click.IntRange(1, MAX_ATTEMPTS),
    metavar="N",
    help="Run up to N times if it fails.  [default: the task's; once]",
)
@click.option("--timeout", type=POSITIVE_DURATION, help="Cancel a run after this long.")
@force_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@db_option
@json_option
@log_options
def add(
    *,
    task_name: str | None,
    at: Any,
    delay: timedelta | None,
    params: Any,
    cwd: str | None,
    env: tuple[tuple[str, str], ...],
    dedup_key: str | None,
    max_attempts: int | None,
    timeout: timedelta | None,
    force: bool,
    command: tuple[str, ...],
    db: DbTarget,
    as_json: bool,
) -> None:
    """Add one instance and print its id.

    For the bash task (the default), the words after `--` are the command, each one
    argument (quoted with shlex.join): `tickwork add --in 5m -- echo hi`. For shell
    syntax (pipes, &&), give the whole command as one string in --params:
    `--params '{"cmd": "a && b", "timeout": 60}'`.

    A bash command runs in the directory you add it from (or --cwd DIR), not the
    node's, with the node's environment plus each --env NAME=VALUE.
    """
    setup_cli_logging("WARNING")
    if (at is None) == (delay is None):
        raise click.UsageError("give exactly one of --at TIME or --in DURATION (--in 0 is now)")
    task = task_name or BashTask.name
    if command and task != BashTask.name:
        raise click.UsageError(
            f"words after -- are a bash command, but --task is {task!r}; "
            "give that task's params with --params JSON"
        )
    if task != BashTask.name and (cwd is not None or env):
        raise click.UsageError(f"--cwd and --env are for the bash task, but --task is {task!r}")
    if task == BashTask.name:
        if cwd is not None and not Path(cwd).is_dir():
            log.warning(
                "--cwd %s is not a directory here: the run fails unless it is on the node", cwd
            )
        data = bash_params(command, params, cwd=cwd, env=env, default_cwd=str(Path.cwd()))
    else:
        data = packed(params)
    data = checked_params(task, data)
    now_us = SystemClock().now_us()
    run_at = at if delay is None else _from_now(now_us, delay)
    try:
        row = validate_new(
            NewInstance(
                task,
                run_at,
                data,
                dedup_key=dedup_key,
                max_attempts=max_attempts,
                timeout=timeout,
            ),
            max_params_bytes=sys.maxsize,  # the nodes' limit is checked below
        )
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    if row.run_at_us < now_us - 1_000_000:
        log.warning("%s is in the past: the instance runs as soon as a node picks it up", run_at)

    async def insert() -> tuple[Instance, bool]:
        async with client(db) as store:
            check_params(len(row.params), await admit(store, [task], force=force))
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
    emit({**instance_dict(inst), "created": created}, as_json, str(inst.id))


def _from_now(now_us: int, delay: timedelta) -> datetime:
    """``--in``: now + ``delay``, refused past year 9999."""
    try:
        return from_us(now_us) + delay
    except OverflowError:
        raise click.BadParameter(
            f"now + {delay} is past year 9999, the last time tickwork stores",
            param_hint="'--in'",
        ) from None


# -- abort / retry ------------------------------------------------------------------------


@cli.command()
@click.argument("instance_id", metavar="ID", type=ID)
@db_option
@json_option
@log_options
def abort(*, instance_id: int, db: DbTarget, as_json: bool) -> None:
    """Abort an instance: at once if pending, else by the node that holds it."""
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def request() -> tuple[State, AbortResult]:
        async with client(db) as store:
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
    emit(doc, as_json, text)


@cli.command()
@click.argument("instance_id", metavar="ID", type=ID)
@db_option
@json_option
@log_options
def retry(*, instance_id: int, db: DbTarget, as_json: bool) -> None:
    """Run a FAILED, ABORTED or MISSED instance again, as a new instance due now.

    The new instance has the same task and params and is linked to the old one
    (its retry_of); retrying the same instance again prints the same new id.
    """
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def request() -> tuple[Instance, int]:
        async with client(db) as store:
            return await _operations.retry(store, instance_id, SystemClock().now_us())

    old, new_id = trio.run(request)
    doc = {"id": new_id, "retry_of": old.id, "task": old.task}
    emit(doc, as_json, f"retrying {old.id} ({old.task}, {old.state.name}) as {new_id}")


cli.add_command(run)  # tickwork run (cli/_run.py)
cron.add_command(import_crontab)  # tickwork cron import (cli/_cron_import.py)
cli.add_command(cron)  # tickwork cron ... (cli/_cron.py)
cli.add_command(list_instances)  # tickwork ls (cli/_list.py)
cli.add_command(show)  # tickwork show ID (cli/_list.py)
cli.add_command(logs)  # tickwork logs ID (cli/_logs.py)
cli.add_command(stats)  # tickwork stats (cli/_stats.py)
cli.add_command(nodes)  # tickwork nodes (cli/_stats.py)
cli.add_command(status)  # tickwork status (cli/_status.py)
cli.add_command(token)  # tickwork token ... (cli/_http.py)


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
