"""What runs now, from the command line and the HTTP API (issue #11 item 11).

An at-least-once run in progress is RUNNING in the store with its start time:
``tickwork ls --state RUNNING`` lists it, ``show`` and ``stats`` say so, and the API's
instances carry ``started_at``; the UI's "Running now" panel lists it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import trio

import tickwork
from tests.support.cli import tw
from tests.support.helpers import Recording
from tests.support.http_support import in_process
from tickwork import State
from tickwork._time import from_us, to_us
from tickwork.model import Finish, NewRow
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from pathlib import Path


async def _running_row(db: Path) -> tuple[int, int]:
    """A SQLite file holding one at-least-once run in progress, as a node writes it;
    returns its id and start time."""
    store = tickwork.SQLiteStore(db)
    await store.open(node_id="elsewhere")
    try:
        now = to_us(datetime.now(UTC))
        [iid, _] = await store.insert([NewRow("slow", now, b""), NewRow("slow", now, b"")], now)
        [inst, _] = await store.claim("elsewhere", now, 10, now, 3_600_000_000)
        started = now + 1_000
        run = Finish(inst.id, inst.claim_token or 0, State.RUNNING, 0, started_us=started)
        assert await store.finish("elsewhere", [run], now) == [True]
    finally:
        await store.aclose()
    return iid, started


async def test_ls_show_and_stats_show_what_runs_now(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    iid, started = await _running_row(db)
    listed = tw(db, "ls", "--state", "RUNNING", "--utc").stdout
    [line] = [ln for ln in listed.splitlines() if ln.split()[:1] == [str(iid)]]
    assert "RUNNING since " in line
    docs = json.loads(tw(db, "ls", "--state", "RUNNING", "--json").stdout)
    [doc] = docs if isinstance(docs, list) else docs["items"]
    assert doc["id"] == iid
    assert doc["started_at"] == from_us(started).isoformat()
    shown = json.loads(tw(db, "show", str(iid), "--json").stdout)
    assert (shown["state"], shown["started_at"]) == ("RUNNING", doc["started_at"])
    assert "the first attempt is running" in tw(db, "show", str(iid)).stdout
    counts = json.loads(tw(db, "stats", "--json").stdout)["counts"]
    assert (counts["RUNNING"], counts["CLAIMED"]) == (1, 1)


async def test_the_api_and_the_ui_show_what_runs_now(autojump_clock) -> None:
    clock = VirtualClock()
    slow = Recording(clock, "slow")
    slow.sleep = timedelta(hours=1)
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[slow], clock=clock) as node:
        iid = await node.schedule("slow", at=clock.now() + timedelta(seconds=1))
        with trio.fail_after(3600):
            while (await node.get(iid)).state is not State.RUNNING:
                await trio.sleep(1)
        async with in_process(node) as api:
            page = (await api.get("/api/instances", params={"state": "RUNNING"})).json()
            [doc] = page["items"]
            assert (doc["id"], doc["state"]) == (iid, "RUNNING")
            assert doc["started_at"] is not None
            assert (await api.get(f"/api/instances/{iid}")).json()["started_at"] == doc[
                "started_at"
            ]
            dashboard = (await api.get("/")).text
            running = dashboard[dashboard.index('id="running"') :]
            running = running[: running.index("</section>")]
            assert f'href="/instances/{iid}"' in running
            assert "started " in running
        await node.abort(iid)  # leave without waiting an hour for the run
