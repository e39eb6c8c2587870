"""Recurring schedules in a trio application: a cron expression and an interval.

Run it: python examples/schedules.py  (a throw-away SQLite file in a temp folder; about
three seconds of real time)
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import trio

import tickwork


class Tick(tickwork.Task):
    name = "tick"

    async def run(self, params: bytes) -> None:
        print(f"tick from {tickwork.unpack(params)['who']}")


async def main(db: Path) -> None:
    store = tickwork.SQLiteStore(db)
    async with tickwork.open_scheduler(store, tasks=[Tick()]) as scheduler:
        # every second (6 fields: a leading seconds field), in Berlin time
        every_second = await scheduler.add_schedule(
            "tick",
            tickwork.Cron("* * * * * *", "Europe/Berlin"),
            params={"who": "cron"},
            schedule_id="every-second",
        )
        # adding the same definition again changes nothing: safe at every start
        again = await scheduler.add_schedule(
            "tick",
            tickwork.Cron("* * * * * *", "Europe/Berlin"),
            params={"who": "cron"},
            schedule_id="every-second",
        )
        print(f"added {every_second}, then {again} again: one schedule")
        await scheduler.add_schedule(
            "tick",
            tickwork.Interval(timedelta(seconds=2)),
            params={"who": "interval"},
            schedule_id="every-two-seconds",
            overlap="queue",
        )
        await trio.sleep(2.5)
        for schedule in await scheduler.list_schedules():
            print(f"{schedule.id}: {schedule.trigger.describe()}, paused={schedule.paused}")
        await scheduler.remove_schedule(every_second)
        await scheduler.pause_schedule("every-two-seconds")
        runs = await scheduler.count(state=tickwork.State.SUCCEEDED)
        print(f"removed and paused; {'some' if runs else 'no'} runs recorded")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "schedules.db")
