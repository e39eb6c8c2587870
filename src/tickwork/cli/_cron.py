"""``tickwork cron ...``: recurring schedules from the command line (import: _cli_cron_import).

Like the rest of the CLI, these commands open the SQLite database as a client (no node
lock), so they work while a node runs on it; the node notices the change by polling.
``cron next`` needs no database at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click
import trio

from tickwork._time import from_us, to_us
from tickwork.cli._common import (
    checked_params,
    client,
    db_option,
    force_option,
    json_option,
    log_options,
    packed,
    require_db,
    setup_cli_logging,
)
from tickwork.cli._cron_format import (
    local_iso,
    local_time,
    next_fire,
    rule_text,
    schedule_dict,
    schedules_table,
    utc_text,
    zone_of,
)
from tickwork.cli._db import DbTarget
from tickwork.cli._format import dump_json
from tickwork.cli._nodes import admit, check_params
from tickwork.cli._parse import DURATION, JSON, TASK_NAME_TYPE, TIME
from tickwork.cli._task_specs import bash_params
from tickwork.clock import SystemClock
from tickwork.errors import InvalidArgument
from tickwork.node import operations as _operations
from tickwork.notify import Notify
from tickwork.schedules.schedule import (
    DEFAULT_CATCHUP_LIMIT,
    MAX_CATCHUP_LIMIT,
    Misfire,
    Overlap,
    Schedule,
    ScheduleWrite,
    new_schedule,
)
from tickwork.schedules.triggers import Cron
from tickwork.tasks.bash import BashTask

__all__ = ["cron", "cron_trigger", "policy_options", "tz_option"]

log = logging.getLogger("tickwork.cli")

F = TypeVar("F", bound=Callable[..., Any])

_HOW_TO_START = "add a schedule with `tickwork cron add` or start a node with `tickwork run`"
_MISFIRES = [m.value for m in Misfire]
_OVERLAPS = [o.value for o in Overlap]


def tz_option(f: F) -> F:
    return click.option(
        "--tz",
        "zone",
        metavar="ZONE",
        default="UTC",
        show_default=True,
        help="IANA time zone the expression is read in (e.g. Europe/Berlin).",
    )(f)


def policy_options(f: F) -> F:
    f = click.option(
        "--overlap",
        type=click.Choice(_OVERLAPS),
        default=Overlap.SKIP.value,
        show_default=True,
        help="When an occurrence comes due while the previous one still runs.",
    )(f)
    f = click.option(
        "--misfire",
        type=click.Choice(_MISFIRES),
        default=Misfire.RUN_ONCE.value,
        show_default=True,
        help="What a catch-up after downtime does with missed occurrences.",
    )(f)
    f = click.option(
        "--grace",
        type=DURATION,
        default="1m",
        show_default=True,
        help="How late an occurrence may start and still count as on time.",
    )(f)
    f = click.option(
        "--catchup-limit",
        type=click.IntRange(1, MAX_CATCHUP_LIMIT),
        metavar="N",
        default=DEFAULT_CATCHUP_LIMIT,
        show_default=True,
        help="misfire=run_all runs at most N missed occurrences per catch-up.",
    )(f)
    return click.option(
        "--replace",
        is_flag=True,
        help="Replace a schedule with the same id and another definition.",
    )(f)


def _notify(url: str | None, on: str, overdue: timedelta | None) -> Notify | None:
    """``--notify-url/--notify-on/--notify-overdue`` as a Notify (InvalidArgument if bad)."""
    if url is None:
        if overdue is not None:
            raise InvalidArgument("--notify-overdue needs --notify-url")
        return None
    events = tuple(e.strip() for e in on.split(",") if e.strip())
    return Notify(url=url, on=events, overdue_after=overdue)  # type: ignore[arg-type]


def cron_trigger(expr: str, zone: str) -> Cron:
    """The trigger of ``EXPR --tz ZONE``, or a usage error naming the bad one."""
    try:
        return Cron(expr, zone)
    except InvalidArgument as exc:
        hint = "'--tz'" if "time zone" in str(exc) else "'EXPR'"
        raise click.BadParameter(str(exc), param_hint=hint) from None


# -- views ------------------------------------------------------------------------------------


# -- the commands -------------------------------------------------------------------------------


@click.group()
@log_options
def cron() -> None:
    """Recurring schedules: add, list, pause, resume, remove, import a crontab.

    Each schedule keeps its next occurrence stored as an instance (see `tickwork ls`);
    a node runs them. Times are read in the schedule's zone (--tz), with cron's
    daylight-saving rules; see docs/schedules.md.
    """


@cron.command(name="add")
@click.argument("expr")
@tz_option
@click.option("--id", "schedule_id", metavar="NAME", help="Schedule id.  [default: derived]")
@click.option(
    "--task", "task_name", type=TASK_NAME_TYPE, metavar="NAME", help="Task.  [default: bash]"
)
@click.option("--params", type=JSON, help="Params as JSON (packed with msgpack).")
@click.option("--jitter", type=DURATION, help="Delay each occurrence by up to this much.")
@click.option("--start", "start_at", type=TIME, help="No fire time before this time.")
@click.option("--end", "end_at", type=TIME, help="No fire time after this time.")
@click.option("--paused", is_flag=True, help="Add it paused.")
@click.option(
    "--notify-url",
    metavar="URL",
    help="Post a JSON notice of failed, missed or overdue occurrences to this webhook.",
)
@click.option(
    "--notify-on",
    metavar="EVENTS",
    default="failed,missed,overdue",
    show_default=True,
    help="With --notify-url: which events notify (comma-separated).",
)
@click.option(
    "--notify-overdue", type=DURATION, help="With --notify-url: a run longer than this is overdue."
)
@policy_options
@force_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@db_option
@json_option
@log_options
def add(
    *,
    expr: str,
    zone: str,
    schedule_id: str | None,
    task_name: str | None,
    params: Any,
    jitter: timedelta | None,
    start_at: datetime | None,
    end_at: datetime | None,
    paused: bool,
    notify_url: str | None,
    notify_on: str,
    notify_overdue: timedelta | None,
    overlap: str,
    misfire: str,
    grace: timedelta,
    catchup_limit: int,
    replace: bool,
    force: bool,
    command: tuple[str, ...],
    db: DbTarget,
    as_json: bool,
) -> None:
    """Add a recurring schedule: `tickwork cron add "*/5 * * * *" -- CMD ...`.

    EXPR is a cron expression (5 fields, 6 with leading seconds, or @daily etc.). The
    words after `--` are a bash command (the default task); give another task's params
    with --task and --params. Adding the same schedule again changes nothing.
    """
    setup_cli_logging("WARNING")
    trigger = cron_trigger(expr, zone)
    task = task_name or BashTask.name
    if command and task != BashTask.name:
        raise click.UsageError(
            f"words after -- are a bash command, but --task is {task!r}; "
            "give that task's params with --params JSON"
        )
    data = bash_params(command, params) if task == BashTask.name else packed(params)
    data = checked_params(task, data)
    try:
        schedule = new_schedule(
            task,
            trigger,
            params=data,
            schedule_id=schedule_id,
            start_at=start_at,
            end_at=end_at,
            jitter=jitter,
            misfire=misfire,
            grace=grace,
            catchup_limit=catchup_limit,
            overlap=overlap,
            paused=paused,
            notify=_notify(notify_url, notify_on, notify_overdue),
        )
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    now_us = SystemClock().now_us()

    async def write() -> ScheduleWrite:
        async with client(db) as store:
            check_params(len(schedule.params), await admit(store, [task], force=force))
            return await store.add_schedule(schedule, now_us, replace=replace)

    done = trio.run(write)
    s = done.schedule
    if as_json:
        click.echo(dump_json({**schedule_dict(s, now_us), "change": done.change}))
        return
    nxt = next_fire(s, now_us)
    when = "paused" if nxt is None else f"next {local_time(nxt, zone_of(s))} ({utc_text(nxt)})"
    click.echo(f"{done.change} {s.id}: {rule_text(s)} in {zone_of(s)}, {when}")


@cron.command(name="ls")
@db_option
@json_option
@log_options
def list_schedules(*, db: DbTarget, as_json: bool) -> None:
    """List schedules with their next fire time, in their zone and in UTC."""
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def fetch() -> list[Schedule]:
        out: list[Schedule] = []
        async with client(db, read_only=True) as store:
            while True:
                page = await store.list_schedules(limit=1000, after_id=out[-1].id if out else None)
                out.extend(page)
                if len(page) < 1000:
                    return out

    schedules = trio.run(fetch)
    now_us = SystemClock().now_us()
    if as_json:
        click.echo(dump_json([schedule_dict(s, now_us) for s in schedules]))
        return
    click.echo(schedules_table(schedules, now_us) if schedules else "no schedules")


def _one(name: str, verb: str, doc: str) -> None:
    """Register ``cron pause|resume|rm ID``."""

    @cron.command(name=name, help=doc)
    @click.argument("schedule_id", metavar="ID")
    @db_option
    @json_option
    @log_options
    def command(*, schedule_id: str, db: DbTarget, as_json: bool) -> None:
        setup_cli_logging("WARNING")
        require_db(db, _HOW_TO_START)
        now_us = SystemClock().now_us()

        async def call() -> Schedule | bool | None:
            async with client(db) as store:
                if name == "pause":
                    return await store.pause_schedule(schedule_id, now_us)
                if name == "resume":
                    write = await store.resume_schedule(schedule_id, now_us)
                    return None if write is None else write.schedule
                return await store.remove_schedule(schedule_id, now_us) or None

        found = trio.run(call)
        if found is None:
            raise click.ClickException(f"no schedule with id {schedule_id!r} in {db}")
        if as_json:
            doc = {"id": schedule_id, "done": verb}
            if isinstance(found, Schedule):
                doc.update(schedule_dict(found, now_us))
            click.echo(dump_json(doc))
        else:
            click.echo(f"{verb} {schedule_id}")


_one("pause", "paused", "Pause a schedule: nothing runs until it is resumed.")
_one("resume", "resumed", "Resume a paused schedule from its next fire time after now.")
_one(
    "rm",
    "removed",
    "Remove a schedule: its pending occurrences are aborted, a running one finishes.",
)


@cron.command(name="run-now")
@click.argument("schedule_id", metavar="ID")
@db_option
@json_option
@log_options
def run_now(*, schedule_id: str, db: DbTarget, as_json: bool) -> None:
    """Run a schedule's command once now, outside its fire times (its next fire times
    and policies stay as they are; a paused schedule can be run this way too)."""
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)
    now_us = SystemClock().now_us()

    async def call() -> int | None:
        async with client(db) as store:
            found = await store.get_schedule(schedule_id)
            return None if found is None else await _operations.run_now(store, found, now_us)

    iid = trio.run(call)
    if iid is None:
        raise click.ClickException(f"no schedule with id {schedule_id!r} in {db}")
    doc = {"id": iid, "schedule_id": schedule_id}
    click.echo(dump_json(doc) if as_json else f"running {schedule_id} now as instance {iid}")


@cron.command(name="next")
@click.argument("expr")
@tz_option
@click.option(
    "-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many."
)
@click.option("--after", type=TIME, help="Start after this time.  [default: now]")
@json_option
@log_options
def next_fires(*, expr: str, zone: str, count: int, after: datetime | None, as_json: bool) -> None:
    """Print the next fire times of a cron expression, in its zone and in UTC."""
    setup_cli_logging("WARNING")
    trigger = cron_trigger(expr, zone)
    at = SystemClock().now_us() if after is None else to_us(after)
    fires: list[int] = []
    while len(fires) < count:
        nxt = trigger.next_after_us(at)
        if nxt is None:
            break
        fires.append(nxt)
        at = nxt
    if as_json:
        doc = [{"utc": from_us(f).isoformat(), "local": local_iso(f, zone)} for f in fires]
        click.echo(dump_json(doc))
        return
    if not fires:
        click.echo("no fire time in the next 50 years")
    for f in fires:
        click.echo(f"{local_time(f, zone)} ({local_iso(f, zone)[-6:]})  {utc_text(f)}")
