"""Embed tickwork in a trio application: one task, one instance, one outcome.

Run it: python examples/embed.py  (it uses a throw-away SQLite file in a temp folder)
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

import tickwork


class Greet(tickwork.Task):
    name = "greet"

    async def run(self, params: bytes) -> str:
        who = tickwork.unpack(params)["who"]
        print(f"hello, {who}")
        return who

    async def on_success(self, instance: tickwork.Instance, result: object) -> None:
        print(f"instance {instance.id} greeted {result}")


async def main(db: Path) -> None:
    store = tickwork.SQLiteStore(db)
    async with tickwork.open_scheduler(store, tasks=[Greet(), tickwork.BashTask()]) as scheduler:
        soon = datetime.now(UTC) + timedelta(milliseconds=200)
        iid = await scheduler.schedule("greet", at=soon, params={"who": "world"})
        bash = await scheduler.schedule(
            "bash", at=soon, params=tickwork.BashTask.params("echo from bash")
        )
        with scheduler.subscribe() as events:
            done = 0
            async for event in events:
                if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                    done += 1
                    if done == 2:
                        break
        greeted = await scheduler.get(iid)
        print(f"greet: {greeted.state.name}, bash: {(await scheduler.get(bash)).state.name}")
        print(f"succeeded so far: {await scheduler.count(state=tickwork.State.SUCCEEDED)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "tickwork.db")
