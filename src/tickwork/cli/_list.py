"""``tickwork ls`` (the history, or what is still to come) and ``tickwork show ID``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import trio

from tickwork.cli._common import (
    client,
    db_option,
    json_option,
    log_options,
    require_db,
    setup_cli_logging,
    utc_option,
)
from tickwork.cli._format import attempt_dict, dump_json, instance_dict, instances_table, show_text
from tickwork.cli._parse import ID, STATE
from tickwork.clock import SystemClock
from tickwork.model import InstanceFilter
from tickwork.node.listing import list_instances as list_page
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.cli._db import DbTarget
    from tickwork.model import Attempt, Instance

__all__ = ["list_instances", "show"]

_HOW_TO_START = "start a node with `tickwork run` or add an instance with `tickwork add`"


def _nothing_listed(which: str | None, state: State | None) -> str:
    if which is None and state in {None, State.PENDING, State.CLAIMED}:
        return "no instances in the history (--upcoming lists what is still to come)"
    if which == "upcoming":
        return "no upcoming instances"
    return "no instances"


@click.command(name="ls")
@click.option("--state", type=STATE, help="Only this state (PENDING, FAILED, ...).")
@click.option("--task", "task_name", metavar="NAME", help="Only this task.")
@click.option("--schedule", "schedule_id", metavar="ID", help="Only occurrences of this schedule.")
@click.option(
    "--upcoming",
    "which",
    flag_value="upcoming",
    help="What is still to come (PENDING or CLAIMED, due from now) instead of the history.",
)
@click.option(
    "--all", "which", flag_value="all", help="Upcoming and history together, newest first."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    metavar="N",
    default=50,
    show_default=True,
    help="Show at most N (1 to 10000).",
)
@click.option("--before-id", type=ID, metavar="ID", help="Next page: only ids below ID.")
@db_option
@json_option
@utc_option
@log_options
def list_instances(
    *,
    state: State | None,
    task_name: str | None,
    schedule_id: str | None,
    which: str | None,
    limit: int,
    before_id: int | None,
    db: DbTarget,
    as_json: bool,
) -> None:
    """List instances, newest first: the history by default (ended, running, overdue).

    --upcoming lists what is still to come instead, so the occurrences a frequent
    schedule has made ahead of time do not crowd out what already happened.
    """
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)
    upcoming = {None: False, "upcoming": True, "all": None}[which]

    async def fetch() -> list[Instance]:
        async with client(db, read_only=True) as store:
            return await list_page(
                store,
                state=state,
                task=task_name,
                limit=limit,
                before_id=before_id,
                where=InstanceFilter(schedule_id=schedule_id),
                upcoming=upcoming,
                now_us=SystemClock().now_us(),
            )

    page = trio.run(fetch)
    if as_json:
        click.echo(dump_json([instance_dict(inst) for inst in page]))
        return
    if not page:
        click.echo(_nothing_listed(which, state))
        return
    click.echo(instances_table(page))
    if len(page) == limit:
        click.echo(f"(more: --before-id {page[-1].id})", err=True)


@click.command()
@click.argument("instance_id", metavar="ID", type=ID)
@db_option
@json_option
@utc_option
@log_options
def show(*, instance_id: int, db: DbTarget, as_json: bool) -> None:
    """Show every field of one instance and its run history."""
    setup_cli_logging("WARNING")
    require_db(db, _HOW_TO_START)

    async def fetch() -> tuple[Instance, list[Attempt]]:
        async with client(db, read_only=True) as store:
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
