"""The app served by hypercorn on a loopback port (the real clock): the event stream,
/metrics, serve()'s refusals and bound address."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import tickwork
from tests.support.http_support import Boom, Quiet, in_process, served
from tickwork.events import EventHub, TransitionEvent
from tickwork.http import serve
from tickwork.model import Instance
from tickwork.state import State

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@pytest.fixture
async def node() -> AsyncIterator[tickwork.Scheduler]:
    async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[Quiet(), Boom()]) as s:
        yield s


class Reader:
    """Reads an event stream's lines; ``ready`` once connected, ``seen`` once a line
    matching ``until`` arrived."""

    def __init__(self, until: str) -> None:
        self.lines: list[str] = []
        self.ready = trio.Event()
        self.seen = trio.Event()
        self.until = until

    async def run(self, client: httpx.AsyncClient, url: str) -> None:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            async for line in response.aiter_lines():
                self.lines.append(line)
                if line == ": connected":
                    self.ready.set()
                if self.until in line:
                    self.seen.set()


async def test_events_stream_the_transitions(node):
    with trio.fail_after(20):
        async with served(node) as base, httpx.AsyncClient() as client:
            reader = Reader('"to":"SUCCEEDED"')
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run, client, f"{base}/api/events")
                await reader.ready.wait()
                iid = await node.schedule("quiet", at=node.now())
                await reader.seen.wait()
                nursery.cancel_scope.cancel()
    lines = reader.lines
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    mine = [(e["from"], e["to"]) for e in events if e["instance_id"] == iid]
    assert mine == [("PENDING", "CLAIMED"), ("CLAIMED", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    assert set(events[0]) == {"instance_id", "task", "from", "to", "time", "node"}
    assert events[0]["node"] == node.node_id


async def test_a_slow_client_is_told_how_many_events_it_lost(node):
    with trio.fail_after(20):
        async with served(node, event_buffer=5) as base, httpx.AsyncClient() as client:
            reader = Reader("event: lost")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run, client, f"{base}/api/events")
                await reader.ready.wait()
                # one claim batch publishes 50 events at once: 45 do not fit the buffer
                now = node.now()
                await node.schedule_many(
                    [tickwork.NewInstance("quiet", now + timedelta(seconds=1)) for _ in range(50)]
                )
                await reader.seen.wait()
                nursery.cancel_scope.cancel()
    lines = reader.lines
    at = lines.index("event: lost")
    assert json.loads(lines[at + 1][6:])["count"] >= 1


async def test_metrics_after_runs(node):
    async with in_process(node, metrics_need_token=False, counts_max_age=0) as api:
        # no events are published for the metrics until someone scrapes them
        assert not node._node.hub.active
        assert (await api.get("/metrics")).status_code == 200
        assert node._node.hub.active
        with node.subscribe() as sub, trio.fail_after(20):
            ok = await node.schedule("quiet", at=node.now())
            bad = await node.schedule("boom", at=node.now())
            ended = set()
            async for e in sub:
                if isinstance(e, tickwork.TransitionEvent) and e.to_state.terminal:
                    ended.add(e.instance_id)
                if ended == {ok, bad}:
                    break
        # the metrics' own subscription reads the same events, in its own task
        text = ""
        with trio.fail_after(20):
            while 'outcome="failed"' not in text or 'outcome="succeeded"' not in text:
                await trio.lowlevel.checkpoint()
                text = (await api.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = {
        (s.labels["task"], s.labels["outcome"]): s.value for s in families["tickwork_runs"].samples
    }
    assert runs[("quiet", "succeeded")] == 1
    assert runs[("boom", "failed")] == 1
    stored = {s.labels["state"]: s.value for s in families["tickwork_instances"].samples}
    assert stored["succeeded"] == 1
    assert stored["failed"] == 1
    count = [
        s for s in families["tickwork_run_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert {s.labels["task"]: s.value for s in count} == {"quiet": 1, "boom": 1}
    late = [s for s in families["tickwork_lateness_seconds"].samples if s.name.endswith("_count")]
    assert late[0].value == 2
    ops = {s.labels["operation"] for s in families["tickwork_store_call_duration_seconds"].samples}
    assert {"claim", "finish", "insert"} <= ops
    for name in ("tickwork_held", "tickwork_running", "tickwork_oldest_pending_age_seconds"):
        assert name in families
    # the node's counters are exported as counters (totals since it started)
    assert families["tickwork_started"].type == "counter"
    assert families["tickwork_started"].samples[0].value == 2
    assert families["tickwork_claimed"].samples[0].value == 2
    labels = {k for f in families.values() for smp in f.samples for k in smp.labels}
    assert labels <= {"state", "task", "outcome", "operation", "schedule", "le", "reason"}


async def test_serve_refuses_a_public_address_without_a_token(node):
    with pytest.raises(tickwork.InvalidArgument, match="without a token"):
        await serve(node, "0.0.0.0", 0)  # noqa: S104 - the refusal under test
    _, text = await node.add_token("admin")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve, node, "0.0.0.0", 0)  # noqa: S104
            assert host == "0.0.0.0"  # noqa: S104
            assert port > 0
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/api/instances")
                assert response.status_code == 401
                authed = await client.get(
                    f"http://127.0.0.1:{port}/api/instances",
                    headers={"Authorization": f"Bearer {text}"},
                )
                assert authed.status_code == 200
            nursery.cancel_scope.cancel()


def test_iso_times_are_utc():
    from tickwork.http._json import iso

    assert iso(datetime(2030, 1, 1, tzinfo=UTC)) == "2030-01-01T00:00:00Z"


TASKS = ['odd "task"\n', "t", "100% ü", "t"]


def frames_and_documents(publish: Callable[[EventHub], None]) -> tuple[list[str], list[Any]]:
    """What the event stream writes for what ``publish`` publishes (split into frames),
    and the JSON documents of the same events read one by one."""
    from tickwork.http._json import event_doc
    from tickwork.http._sse import _frames

    async def read() -> tuple[list[str], list[Any]]:
        hub = EventHub("n:1")
        runs_sub, events_sub = hub.subscribe(10_000), hub.subscribe(10_000)
        publish(hub)
        runs = await runs_sub.receive_runs()
        events = await events_sub.receive_batch()
        assert isinstance(runs, list)
        assert isinstance(events, list)
        framed = _frames(runs).decode()
        assert framed.endswith("\n\n")
        return framed[:-2].split("\n\n"), [event_doc(e) for e in events]

    return trio.run(read)


def check_frames(frames: list[str], docs: list[Any]) -> None:
    assert len(frames) == len(docs)
    for line, doc in zip(frames, docs, strict=True):
        assert line.startswith("data: ")
        assert "\n" not in line
        assert json.loads(line[6:]) == doc


@pytest.mark.parametrize(
    "at_us", [1_700_000_000_123_456, 1_700_000_000_000_000, 1_700_000_000_999_998, 5]
)
def test_events_are_framed_as_their_json_documents(at_us):
    """Every kind of run: a claim's batch of several tasks (one time), runs started one by
    one within a second, across a second's edge and on the second, a recorded batch of
    mixed outcomes, an event made by a publisher."""
    insts = [Instance(i, task, at_us, b"", State.PENDING) for i, task in enumerate(TASKS)]
    c, r = State.CLAIMED, State.RUNNING

    def publish(hub: EventHub) -> None:
        hub.moved_together(insts, State.PENDING, c, at_us)
        for k, inst in enumerate(insts):  # each started 1 µs after the one before
            hub.moved(inst, c, r, at_us + k)
        for k, inst in enumerate(insts):  # each 0.4 s after the one before
            hub.moved(inst, c, r, at_us + 400_000 * k)
        hub.moved(insts[1], c, r, 2_000_000)  # on the second
        outcomes = [State.SUCCEEDED, State.FAILED, State.SUCCEEDED, State.MISSED]
        hub.recorded(insts, [r] * 4, outcomes, [None, "boom", None, "late"], at_us + 7)
        hub.publish(TransitionEvent(9, "made", State.PENDING, State.ABORTED, at_us, "n:2"))

    frames, docs = frames_and_documents(publish)
    assert len(frames) == 4 + 4 + 4 + 1 + 4 + 1
    check_frames(frames, docs)


moves = st.lists(
    st.tuples(
        st.sampled_from(["batch", "single", "recorded"]),
        st.lists(st.sampled_from(TASKS), min_size=1, max_size=5),
        st.integers(0, 3_000_000_000_000_000),
        st.lists(st.sampled_from(list(State)), min_size=5, max_size=5),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(moves)
def test_any_publications_are_framed_as_their_json_documents(publications):
    def publish(hub: EventHub) -> None:
        n = 0
        for kind, tasks, at_us, states in publications:
            insts = [Instance(n + k, t, at_us, b"", State.PENDING) for k, t in enumerate(tasks)]
            n += len(tasks)
            if kind == "batch":
                hub.moved_together(insts, states[0], states[1], at_us)
            elif kind == "single":
                for k, inst in enumerate(insts):
                    hub.moved(inst, states[k], states[-k], at_us + k * 333_333)
            else:
                tos = states[: len(insts)]
                hub.recorded(insts, [State.RUNNING] * len(insts), tos, [None] * len(insts), at_us)

    check_frames(*frames_and_documents(publish))
