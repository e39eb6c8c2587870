"""``tickwork cron import FILE``: one schedule per line of a user or system crontab.

The reading is ``_cli_crontab``'s; this module decides which kind the file is (the
``--system`` option, the path, and what the lines say), turns the entries into
schedules and writes them, all or none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import trio

from tickwork.cli._common import (
    client,
    db_option,
    force_option,
    json_option,
    log_options,
    setup_cli_logging,
)
from tickwork.cli._cron import cron_trigger, policy_options, tz_option
from tickwork.cli._cron_format import schedule_dict
from tickwork.cli._crontab import CrontabEntry, is_system_path, parse_crontab
from tickwork.cli._format import dump_json
from tickwork.cli._nodes import admit, check_params
from tickwork.clock import SystemClock
from tickwork.schedules.schedule import Schedule, ScheduleWrite, new_schedule
from tickwork.tasks.bash import BashTask

if TYPE_CHECKING:
    from datetime import timedelta

    from tickwork.cli._db import DbTarget

__all__ = ["import_crontab"]


@click.command(name="import")
@click.argument("file", type=click.File("r"))
@click.option(
    "--system/--no-system",
    default=None,
    help="FILE is a system crontab (/etc/crontab, /etc/cron.d/*: a user field after the "
    "time), or surely not one.  [default: a user crontab, refused if it looks like a "
    "system one]",
)
@tz_option
@policy_options
@force_option
@db_option
@json_option
@log_options
def import_crontab(
    *,
    file: Any,
    system: bool | None,
    zone: str,
    overlap: str,
    misfire: str,
    grace: timedelta,
    catchup_limit: int,
    replace: bool,
    force: bool,
    db: DbTarget,
    as_json: bool,
) -> None:
    """Create one bash schedule per line of a crontab FILE ('-': stdin).

    A user crontab (`crontab -l`) by default; --system for /etc/crontab and
    /etc/cron.d/* files, whose lines name the user to run as (a node running as root
    runs them as that user). CRON_TZ= and TZ= set the zone of the lines after them
    (before any, --tz); other NAME=value lines (PATH=, SHELL=, HOME= ...) set the
    environment of the commands after them; MAILTO= is ignored with a warning; @reboot
    is refused. Each schedule's id is derived from its line, so importing the same file
    again changes nothing. Nothing is written unless every line is understood.
    """
    setup_cli_logging("WARNING")
    name = getattr(file, "name", "-")
    if system is None and is_system_path(name):
        raise click.UsageError(
            f"{name} is a system crontab (its lines name the user to run as): "
            "import it with --system"
        )
    entries, warnings, errors = parse_crontab(file.read(), name, system=system)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if errors:
        raise click.ClickException(
            f"{len(errors)} line(s) of {name} cannot be imported, nothing was: " + "; ".join(errors)
        )
    policies = {
        "overlap": overlap,
        "misfire": misfire,
        "grace": grace,
        "catchup_limit": catchup_limit,
    }
    schedules = [_from_entry(e, zone, policies) for e in entries]
    now_us = SystemClock().now_us()

    async def write() -> list[ScheduleWrite]:
        async with client(db) as store:
            tasks = {s.task for s in schedules}
            limit = await admit(store, tasks, force=force, hint="the crontab's commands")
            for s, e in zip(schedules, entries, strict=True):
                check_params(len(s.params), limit, f"line {e.line}")
            return [await store.add_schedule(s, now_us, replace=replace) for s in schedules]

    done = trio.run(write) if schedules else []
    if as_json:
        docs = [
            {**schedule_dict(w.schedule, now_us), "change": w.change, "line": e.line}
            for w, e in zip(done, entries, strict=True)
        ]
        click.echo(dump_json(docs))
        return
    for w, e in zip(done, entries, strict=True):
        user = "" if e.user is None else f" {e.user}"
        click.echo(f"{w.change} {w.schedule.id}: line {e.line}: {e.expr}{user} {e.command}")
    counts: dict[str, int] = {}
    for w in done:
        counts[w.change] = counts.get(w.change, 0) + 1
    summary = ", ".join(f"{n} {change}" for change, n in sorted(counts.items()))
    click.echo(f"{len(done)} schedules from {name}" + (f": {summary}" if summary else ""))


def _from_entry(e: CrontabEntry, zone: str, policies: dict[str, Any]) -> Schedule:
    """The schedule of one line: in its CRON_TZ/TZ zone if the file set one, else --tz."""
    return new_schedule(
        BashTask.name,
        cron_trigger(e.expr, e.zone or zone),
        params=e.params,
        schedule_id=e.schedule_id,
        **policies,
    )
