"""``tickwork logs ID``: what a run printed (stdout and stderr, apart) and its exit code."""

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
from tickwork.cli._format import attempt_dict, dump_json, when
from tickwork.cli._parse import ID

if TYPE_CHECKING:
    from tickwork.cli._db import DbTarget
    from tickwork.model import Attempt

__all__ = ["logs"]


@click.command()
@click.argument("instance_id", metavar="ID", type=ID)
@click.option(
    "--attempt",
    "number",
    type=click.IntRange(min=1),
    metavar="N",
    help="The Nth attempt.  [default: the last]",
)
@click.option(
    "--stream",
    type=click.Choice(["both", "stdout", "stderr"]),
    default="both",
    show_default=True,
    help="Print one stream alone, as it was written (for a pipe).",
)
@db_option
@json_option
@utc_option
@log_options
def logs(*, instance_id: int, number: int | None, stream: str, db: DbTarget, as_json: bool) -> None:
    """Print what a run of instance ID wrote: stdout, then stderr, then the exit code.

    The bash task keeps the last 64 KiB of each stream (BashTask(tail_bytes=...)).
    `--stream stdout` prints that stream alone, unchanged: `tickwork logs 7 --stream
    stdout > out.txt`.
    """
    setup_cli_logging("WARNING")
    require_db(db, "start a node with `tickwork run` or add an instance with `tickwork add`")

    async def fetch() -> list[Attempt]:
        async with client(db, read_only=True) as store:
            if await store.get(instance_id) is None:
                raise click.ClickException(f"no instance with id {instance_id} in {db}")
            return await store.history(instance_id)

    attempt = _pick(instance_id, trio.run(fetch), number)
    if as_json:
        click.echo(dump_json({"id": instance_id, **attempt_dict(attempt)}))
        return
    output = attempt.output
    if stream != "both":
        if output is not None:
            click.echo(output.stdout if stream == "stdout" else output.stderr, nl=False)
        return
    _print_all(instance_id, attempt)


def _pick(instance_id: int, history: list[Attempt], number: int | None) -> Attempt:
    """The attempt asked for (the last by default); refuses one that does not exist."""
    if not history:
        raise click.ClickException(f"instance {instance_id} has not run yet: no output")
    if number is None:
        return history[-1]
    found = [a for a in history if a.attempt == number]
    if not found:
        numbers = ", ".join(str(a.attempt) for a in history)
        raise click.ClickException(
            f"instance {instance_id} has no attempt {number} (its attempts: {numbers})"
        )
    return found[-1]


def _print_all(instance_id: int, attempt: Attempt) -> None:
    output = attempt.output
    click.echo(_header(instance_id, attempt))
    if output is None:
        click.echo(f"(task {attempt.state.name.lower()}: it reports no output)")
        return
    for name, text in (("stdout", output.stdout), ("stderr", output.stderr)):
        click.echo(f"--- {name} ---")
        if text:
            click.echo(text, nl=not text.endswith("\n"))
        else:
            click.echo("(empty)")
    code = "none (killed by the timeout)" if output.exit_code is None else output.exit_code
    click.echo(f"--- exit code: {code} ---")


def _header(instance_id: int, attempt: Attempt) -> str:
    return (
        f"instance {instance_id}, attempt {attempt.attempt}: {attempt.state.name}, "
        f"started {when(attempt.started_us)} on {attempt.node or '-'}"
    )
