"""A run's output (stdout, stderr, exit code) kept structured in the run history, on every
store, and shown by ``tickwork logs`` and ``tickwork show --json``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

import trio

import tickwork
from tests.support.cli import error_line, tw
from tickwork import RunOutput, State

if TYPE_CHECKING:
    from pathlib import Path

FAST: dict[str, object] = {"poll_interval": timedelta(milliseconds=50)}


class QuickRetry(tickwork.BashTask):
    max_attempts = 2
    backoff_base = timedelta(milliseconds=1)
    backoff_cap = timedelta(milliseconds=1)


def open_store(kind: str, tmp_path: Path) -> tuple[tickwork.Store, tuple[str, str] | None]:
    """A store of ``kind``, and for PostgreSQL the (dsn, schema) to drop afterwards."""
    if kind == "memory":
        return tickwork.MemoryStore(), None
    if kind == "sqlite":
        return tickwork.SQLiteStore(tmp_path / "out.db"), None
    from tests.support.pg_support import fresh_schema, require_pg

    dsn, schema = require_pg(), fresh_schema()
    return tickwork.PostgresStore(dsn, schema=schema), (dsn, schema)


async def run_to_end(sched: tickwork.Scheduler, iids: list[int]) -> None:
    with sched.subscribe() as events:
        left = {i for i in iids if not (await sched.get(i)).state.terminal}
        async for event in events:
            if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                left.discard(event.instance_id)
            if not left:
                return


async def test_bash_output_reaches_history_on_every_store(kind: str, tmp_path: Path) -> None:
    """Success, failure and a retried failure keep stdout, stderr and the exit code apart,
    whole (not a repr cut short), on the memory, SQLite and PostgreSQL stores."""
    store, pg = open_store(kind, tmp_path)
    try:
        async with tickwork.open_scheduler(store, tasks=[QuickRetry()], **FAST) as sched:
            now = sched.now()
            big = "printf 'x%.0s' $(seq 5000); echo; echo done"
            ok = await sched.schedule("bash", at=now, params=tickwork.BashTask.params(big))
            bad = await sched.schedule(
                "bash", at=now, params=tickwork.BashTask.params("echo out; echo ü >&2; exit 4")
            )
            with trio.fail_after(20):
                await run_to_end(sched, [ok, bad])
            [success] = await sched.history(ok)
            first, second = await sched.history(bad)
            assert (await sched.get(bad)).state is State.FAILED
    finally:
        if pg is not None:
            from tests.support.pg_support import drop_schema

            drop_schema(*pg)
    assert success.output == RunOutput(stdout="x" * 5000 + "\ndone\n", stderr="", exit_code=0)
    assert success.result is None
    for attempt in (first, second):
        assert attempt.output == RunOutput(stdout="out\n", stderr="ü\n", exit_code=4)
        assert attempt.error_type == "BashFailed"
    assert (first.state, second.state) == (State.FAILED, State.FAILED)


async def test_cli_logs_and_show_json_give_the_output(tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    async with tickwork.open_scheduler(
        tickwork.SQLiteStore(db), tasks=[QuickRetry()], **FAST
    ) as sched:
        params = tickwork.BashTask.params("echo attempt; echo warn >&2; exit 3")
        failing = await sched.schedule("bash", at=sched.now(), params=params)
        fine = await sched.schedule(
            "bash", at=sched.now(), params=tickwork.BashTask.params("echo ok")
        )
        later = await sched.schedule("bash", at=sched.now() + timedelta(hours=1), params=params)
        with trio.fail_after(20):
            await run_to_end(sched, [failing, fine])

    doc = json.loads(tw(db, "show", str(failing), "--json").stdout)
    assert [(a["attempt"], a["exit_code"], a["stdout"], a["stderr"]) for a in doc["history"]] == [
        (1, 3, "attempt\n", "warn\n"),
        (2, 3, "attempt\n", "warn\n"),
    ]
    text = tw(db, "logs", str(failing)).stdout
    assert text.splitlines() == [
        text.splitlines()[0],
        "--- stdout ---",
        "attempt",
        "--- stderr ---",
        "warn",
        "--- exit code: 3 ---",
    ]
    assert text.startswith(f"instance {failing}, attempt 2: FAILED")
    assert (
        f"instance {failing}, attempt 1: FAILED"
        in tw(db, "logs", str(failing), "--attempt", "1").stdout
    )
    assert tw(db, "logs", str(fine), "--stream", "stdout").stdout == "ok\n"
    assert tw(db, "logs", str(fine), "--stream", "stderr").stdout == ""
    logs = json.loads(tw(db, "logs", str(fine), "--json").stdout)
    assert (logs["id"], logs["exit_code"], logs["stdout"], logs["stderr"]) == (fine, 0, "ok\n", "")
    assert "exit 0" in tw(db, "show", str(fine)).stdout  # the history table points at logs

    missing_attempt = tw(db, "logs", str(failing), "--attempt", "3", code=1)
    assert error_line(missing_attempt) == (
        f"error: instance {failing} has no attempt 3 (its attempts: 1, 2)"
    )
    not_run = tw(db, "logs", str(later), code=1)
    assert error_line(not_run) == f"error: instance {later} has not run yet: no output"
    assert "no instance with id 999" in error_line(tw(db, "logs", "999", code=1))
    assert "Invalid value for '--attempt'" in tw(db, "logs", "1", "--attempt", "0", code=2).stderr


def test_history_of_a_task_without_output_says_so(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"

    class Plain(tickwork.Task):
        name = "plain"

        async def run(self, params: bytes) -> int:
            return 7

    async def main() -> int:
        async with tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[Plain()], **FAST) as s:
            iid = await s.schedule("plain", at=s.now())
            with trio.fail_after(20):
                await run_to_end(s, [iid])
            return iid

    iid = trio.run(main)
    assert "reports no output" in tw(db, "logs", str(iid)).stdout
    [attempt] = json.loads(tw(db, "show", str(iid), "--json").stdout)["history"]
    assert (attempt["result"], attempt["exit_code"], attempt["stdout"]) == ("7", None, None)
