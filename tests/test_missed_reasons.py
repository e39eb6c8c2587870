"""MISSED instances counted by reason: every reason text the node and the stores write
sorts into its kind, and the metrics count them by task and kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

import tickwork
from tests.support.http_support import Quiet, in_process
from tickwork._time import to_us
from tickwork.events import TransitionEvent
from tickwork.http._metrics import EventCounters
from tickwork.model import NewRow
from tickwork.schedules import plan
from tickwork.schedules.missed import REASONS, reason_of
from tickwork.schedules.schedule import Misfire, Schedule
from tickwork.state import State

if TYPE_CHECKING:
    from pathlib import Path

NOW = 1_900_000_000_000_000
S = 1_000_000


def _late_reasons() -> list[str]:
    """The reasons the misfire policies write for late occurrences (plan.claim_plan)."""
    out: list[str] = []
    for misfire in Misfire:
        s = Schedule(
            id="s", task="t", trigger=tickwork.Interval(timedelta(seconds=1)),
            start_at_us=NOW, misfire=misfire, grace_us=0, catchup_limit=1,
            last_fire_us=NOW + S,
        )  # fmt: skip
        late = plan.claim_plan(
            s,
            [plan.Occurrence(1, NOW, NOW, claimed=True)],
            [plan.Occurrence(2, NOW + S, NOW + S, claimed=False)],
            NOW + 500 * S,
        )
        out += [text for _, text in late.end] + [r.error for r in late.insert if r.error]
    return out


def test_every_reason_the_node_writes_has_its_kind() -> None:
    late = _late_reasons()
    assert late  # the misfire policies wrote reasons for the late occurrences
    assert {reason_of(text) for text in late} == {"misfire"}
    assert reason_of(plan.PAUSED) == "paused"
    assert reason_of("overlap=skip: occurrence 4 of this schedule was still running") == ("overlap")
    assert reason_of("overlap=cancel_previous: superseded by occurrence 9") == "overlap"
    assert reason_of(None) == "other"
    assert reason_of("written by hand") == "other"
    assert set(REASONS) == {"misfire", "overlap", "paused", "other"}


@pytest.mark.parametrize("batched", [True, False])
def test_metrics_count_missed_by_task_and_reason(batched: bool) -> None:
    events = EventCounters()
    missed = [
        TransitionEvent(1, "a", State.CLAIMED, State.MISSED, NOW, "n", NOW, "s", plan.PAUSED),
        TransitionEvent(2, "a", State.CLAIMED, State.MISSED, NOW, "n", NOW, "s", "overlap=skip: x"),
        TransitionEvent(
            3, "a", State.CLAIMED, State.MISSED, NOW, "n", NOW, "s", "overlap=queue: y"
        ),
        TransitionEvent(4, "b", State.CLAIMED, State.MISSED, NOW, "n", NOW, "s", "misfire=skip: z"),
        TransitionEvent(5, "b", State.RUNNING, State.SUCCEEDED, NOW, "n", NOW, "s"),
    ]
    if batched:
        events.count_batch(missed)
    else:
        for e in missed:
            events.count(e)
    assert dict(events.missed) == {("a", "paused"): 1, ("a", "overlap"): 2, ("b", "misfire"): 1}


async def test_api_and_dashboard_count_the_last_hours_missed_by_reason(tmp_path: Path) -> None:
    db = tmp_path / "missed.db"
    store = tickwork.SQLiteStore(db)
    await store.open()
    now = to_us(datetime.now(UTC))
    old = now - 2 * 3600 * S  # ended two hours ago: not counted
    rows = [
        NewRow("quiet", now, b"", state=State.MISSED, error=plan.PAUSED),
        NewRow("quiet", now, b"", state=State.MISSED, error="overlap=skip: x"),
        NewRow("quiet", now, b"", state=State.MISSED, error="overlap=queue: y"),
        NewRow("quiet", now, b"", state=State.MISSED, error="misfire=skip: z"),
    ]
    await store.insert([NewRow("quiet", old, b"", state=State.MISSED, error=plan.PAUSED)], old)
    await store.insert(rows, now)
    await store.aclose()
    async with (
        tickwork.open_scheduler(tickwork.SQLiteStore(db), tasks=[Quiet()]) as node,
        in_process(node) as api,
    ):
        stats = (await api.get("/api/stats")).json()
        assert stats["missed_last_hour"] == {"misfire": 1, "overlap": 2, "paused": 1, "other": 0}
        assert stats["missed_last_hour_more"] is False
        page = (await api.get("/")).text
        assert "overlap 2</span>" in page
        assert "misfire 1</span>" in page
        assert "other 0" not in page
