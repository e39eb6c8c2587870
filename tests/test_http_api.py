"""The JSON API in process: every endpoint's answer and each refusal's status and shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

import tickwork
from tests.support.http_support import Boom, Quiet, in_process
from tickwork.http import create_app
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

FAR = "2100-01-01T00:00:00Z"


@pytest.fixture
async def node(autojump_clock) -> AsyncIterator[tickwork.Scheduler]:
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Quiet(), Boom()], clock=VirtualClock()
    ) as scheduler:
        yield scheduler


@pytest.fixture
async def api(node) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(node) as client:
        yield client


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    doc = response.json()
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"code", "message"}
    return str(doc["error"]["code"])


async def test_create_get_list_abort_retry_history(api, node):
    made = await api.post(
        "/api/instances", json={"task": "quiet", "at": FAR, "params": {"n": 1}, "max_attempts": 2}
    )
    assert made.status_code == 201, made.text
    doc = made.json()
    assert doc["state"] == "PENDING"
    assert doc["params"] == {"n": 1}
    assert doc["run_at"] == FAR
    iid = doc["id"]
    assert (await api.get(f"/api/instances/{iid}")).json()["id"] == iid
    listed = (await api.get("/api/instances", params={"state": "pending"})).json()
    assert [i["id"] for i in listed["items"]] == [iid]
    assert listed["next_before_id"] is None
    aborted = await api.post(f"/api/instances/{iid}/abort")
    assert aborted.json() == {"id": iid, "state": "ABORTED"}
    retried = await api.post(f"/api/instances/{iid}/retry")
    assert retried.status_code == 201
    assert retried.json()["retry_of"] == iid
    assert error(await api.post(f"/api/instances/{retried.json()['id']}/retry"), 409) == "conflict"
    history = await api.get(f"/api/instances/{iid}/history")
    assert history.json() == {"items": []}


async def test_batch_and_keyset_pages(api):
    at = datetime(2100, 1, 1, tzinfo=UTC)
    items = [{"task": "quiet", "at": (at + timedelta(minutes=k)).isoformat()} for k in range(25)]
    made = await api.post("/api/instances/batch", json={"instances": items})
    assert made.status_code == 201
    ids = made.json()["ids"]
    assert len(ids) == 25
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        page = (await api.get("/api/instances", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        if page["next_before_id"] is None:
            break
        params["before_id"] = page["next_before_id"]
    assert seen == sorted(ids, reverse=True)
    due = await api.get(
        "/api/instances",
        params={"due_after": "2100-01-01T00:05:00Z", "due_before": "2100-01-01T00:07:00Z"},
    )
    assert [i["id"] for i in due.json()["items"]] == [ids[6], ids[5]]
    upcoming = (await api.get("/api/instances", params={"upcoming": "true", "limit": 1000})).json()
    assert len(upcoming["items"]) == 25
    history = (await api.get("/api/instances", params={"upcoming": "false"})).json()
    assert history["items"] == []
    error(await api.get("/api/instances", params={"upcoming": "maybe"}), 400)


async def test_a_bad_item_refuses_the_whole_batch(api, node):
    items = [{"task": "quiet", "at": FAR}, {"task": "nope", "at": FAR}]
    response = await api.post("/api/instances/batch", json={"instances": items})
    assert error(response, 422) == "unknown_task"
    assert "instances[1]" in response.json()["error"]["message"]
    assert await node.count() == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"task": "quiet"}, 422),
        ({"task": "quiet", "at": "tomorrow"}, 422),
        ({"task": "quiet", "at": "2100-01-01T00:00:00"}, 422),
        ({"task": "nope", "at": FAR}, 422),
        ({"task": "quiet", "at": FAR, "extra": 1}, 422),
        ({"task": "quiet", "at": FAR, "max_attempts": 0}, 422),
        ({"task": "quiet", "at": FAR, "max_attempts": True}, 422),
        ({"task": "quiet", "at": FAR, "timeout_seconds": -1}, 422),
        ({"task": "quiet", "at": FAR, "dedup_key": "retry-of:1"}, 422),
        ([1, 2], 422),
    ],
)
async def test_create_refusals(api, body, status):
    error(await api.post("/api/instances", json=body), status)


async def test_body_refusals(api):
    error(
        await api.post(
            "/api/instances", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
    )
    error(
        await api.post("/api/instances", content=b"{}", headers={"content-type": "text/plain"}), 415
    )
    big = b"[" + b"1," * 5_000_000 + b"1]"
    assert (
        error(
            await api.post(
                "/api/instances", content=big, headers={"content-type": "application/json"}
            ),
            413,
        )
        == "payload_too_large"
    )


def post_scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """The ASGI scope of a JSON POST to /api/instances, with ``headers`` added."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/instances", "raw_path": b"/api/instances",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8377),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), *headers],
    }  # fmt: skip


async def test_a_body_over_the_limit_is_not_read_whole(node):
    """The ASGI app called directly: it stops asking for body chunks past the limit."""
    app = create_app(node, body_limit=10_000)
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": b" " * 1024, "more_body": asked < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(post_scope(), receive, send)
    assert sent[0]["status"] == 413
    assert asked < 20


async def test_a_content_length_of_non_ascii_digits_is_refused(node):
    """``²`` (latin-1 0xB2) is a digit to str.isdigit() but not to int(): a 400, not a 500."""
    app = create_app(node)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"[]", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(post_scope((b"content-length", b"\xb2")), receive, send)
    assert sent[0]["status"] == 400


async def test_not_found_and_bad_queries(api):
    assert error(await api.get("/api/instances/99"), 404) == "not_found"
    error(await api.get("/api/instances/abc"), 404)
    error(await api.get("/api/nothing"), 404)
    assert error(await api.delete("/api/instances/1"), 405) == "method_not_allowed"
    error(await api.get("/api/instances", params={"state": "BOGUS"}), 400)
    error(await api.get("/api/instances", params={"limit": "0"}), 400)
    error(await api.get("/api/instances", params={"due_after": "yesterday"}), 400)
    error(await api.get("/api/instances", params={"color": "red"}), 400)
    error(await api.post("/api/instances/99/abort"), 404)
    error(await api.post("/api/instances/99/retry"), 404)
    error(await api.get("/api/instances/99/history"), 404)


async def test_schedules(api, node):
    body = {"task": "quiet", "cron": {"expr": "30 9 * * 1-5", "timezone": "Europe/Paris"},
            "id": "morning", "params": [1, 2], "start_at": FAR}  # fmt: skip
    made = await api.post("/api/schedules", json=body)
    assert made.status_code == 201, made.text
    doc = made.json()
    assert doc["description"] == "At 09:30 on Monday through Friday (Europe/Paris)"
    assert doc["cron"] == {"expr": "30 9 * * 1-5", "timezone": "Europe/Paris"}
    again = await api.post("/api/schedules", json=body)
    assert again.status_code == 200
    other = body | {"cron": {"expr": "0 8 * * *"}}
    assert error(await api.post("/api/schedules", json=other), 409) == "conflict"
    replaced = await api.put("/api/schedules/morning", json=other)
    assert replaced.status_code == 200
    assert replaced.json()["cron"]["expr"] == "0 8 * * *"
    nxt = (await api.get("/api/schedules/morning/next", params={"n": 2})).json()
    assert nxt == {"times": ["2100-01-01T08:00:00Z", "2100-01-02T08:00:00Z"]}
    runs = (await api.get("/api/schedules/morning/runs")).json()["items"]
    # the new rule's occurrence, and the old rule's one that the replacement aborted
    assert [(r["fire_at"], r["state"]) for r in runs] == [
        ("2100-01-01T08:00:00Z", "PENDING"),
        (None, "ABORTED"),
    ]
    assert (await api.post("/api/schedules/morning/pause")).json()["paused"] is True
    assert (await api.post("/api/schedules/morning/resume")).json()["paused"] is False
    now = await api.post("/api/schedules/morning/run-now")
    assert now.status_code == 201
    assert now.json()["params"] == [1, 2]
    assert now.json()["run_now_of"] == "morning"
    assert now.json()["schedule_id"] is None  # not one of its occurrences
    shown = (await api.get(f"/api/instances/{now.json()['id']}")).json()
    assert shown["run_now_of"] == "morning"
    listed = (await api.get("/api/schedules")).json()
    assert [s["id"] for s in listed["items"]] == ["morning"]
    every = await api.post("/api/schedules", json={"task": "quiet", "every_seconds": 60})
    assert every.json()["every_seconds"] == 60
    assert (await api.delete("/api/schedules/morning")).status_code == 204
    error(await api.get("/api/schedules/morning"), 404)
    error(await api.post("/api/schedules/morning/run-now"), 404)
    error(await api.post("/api/schedules", json={"task": "quiet"}), 422)
    error(await api.post("/api/schedules", json={"task": "quiet", "every_seconds": 1,
                                                 "cron": {"expr": "* * * * *"}}), 422)  # fmt: skip
    error(
        await api.post("/api/schedules", json={"task": "quiet", "cron": {"expr": "61 * * * *"}}),
        422,
    )
    error(await api.post("/api/schedules", json={"task": "quiet", "every_seconds": 5,
                                                 "misfire": "sometimes"}), 422)  # fmt: skip


async def test_a_schedules_notify_round_trips(api, node):
    notify = {
        "url": "https://hooks.example/T1",
        "on": ["failed", "overdue"],
        "overdue_after_seconds": 900,
        "min_interval_seconds": 90,
        "timeout_seconds": 3.5,
    }
    body = {"task": "quiet", "every_seconds": 60, "id": "watched", "notify": notify}
    made = await api.post("/api/schedules", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["notify"] == notify
    assert (await api.get("/api/schedules/watched")).json()["notify"] == notify
    [listed] = (await api.get("/api/schedules")).json()["items"]
    assert listed["notify"] == notify
    stored = await node.get_schedule("watched")
    assert stored.notify == tickwork.Notify(
        url="https://hooks.example/T1",
        on=("failed", "overdue"),
        overdue_after=timedelta(minutes=15),
        min_interval=timedelta(seconds=90),
        timeout=3.5,
    )
    # the document read back is a definition: sent again it changes nothing
    again = await api.put("/api/schedules/watched", json=body | {"notify": made.json()["notify"]})
    assert again.status_code == 200
    # another notify is another definition (409 unless replaced), and defaults fill in
    other = body | {"notify": {"url": "http://hooks.example/T2"}}
    assert error(await api.post("/api/schedules", json=other), 409) == "conflict"
    replaced = await api.put("/api/schedules/watched", json=other)
    assert replaced.json()["notify"] == {
        "url": "http://hooks.example/T2", "on": ["failed", "missed", "overdue"],
        "overdue_after_seconds": None, "min_interval_seconds": 300.0, "timeout_seconds": 10.0,
    }  # fmt: skip
    dropped = await api.put("/api/schedules/watched", json=body | {"notify": None})
    assert dropped.json()["notify"] is None
    plain = await api.post("/api/schedules", json={"task": "quiet", "every_seconds": 5})
    assert plain.json()["notify"] is None


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ({"url": "ftp://hooks.example/T"}, "notify: Notify url must be an http:// or https://"),
        ({"url": "https://"}, "notify: Notify url must be an http:// or https:// URL"),
        ({"url": 5}, "notify: url has the wrong type"),
        ({}, "notify: url is required"),
        ("https://hooks.example/T", "notify has the wrong type"),
        ({"url": "https://h/", "to": "x"}, "notify: notify has unknown fields: to"),
        ({"url": "https://h/", "on": ["failed", "late"]}, "notify: Notify on must be a non-empty"),
        ({"url": "https://h/", "on": []}, "notify: Notify on must be a non-empty"),
        ({"url": "https://h/", "on": "failed"}, "notify: on has the wrong type"),
        ({"url": "https://h/", "overdue_after_seconds": 0}, "notify: overdue_after_seconds must"),
        ({"url": "https://h/", "min_interval_seconds": -1}, "notify: min_interval_seconds must"),
        ({"url": "https://h/", "timeout_seconds": 0}, "notify: timeout_seconds must be > 0"),
        ({"url": "https://h/", "timeout_seconds": True}, "notify: timeout_seconds has the wrong"),
        ({"url": "https://h/", "timeout_seconds": 1e-9}, "notify: timeout_seconds must be at"),
        ({"url": "https://h/", "min_interval_seconds": 1e-9}, "notify: Notify min_interval must"),
    ],
)
async def test_a_bad_notify_is_refused(api, node, notify, message):
    body = {"task": "quiet", "every_seconds": 60, "id": "bad", "notify": notify}
    for response in (
        await api.post("/api/schedules", json=body),
        await api.put("/api/schedules/bad", json=body),
    ):
        assert error(response, 422) == "invalid"
        assert response.json()["error"]["message"].startswith(message), response.text
    assert await node.list_schedules() == []


async def test_stats_nodes_health(api, node):
    stats = (await api.get("/api/stats")).json()
    assert stats["node_id"] == node.node_id
    assert stats["stored"]["PENDING"] == 0
    nodes = (await api.get("/api/nodes")).json()["items"]
    assert [n["node_id"] for n in nodes] == [node.node_id]
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready", "problems": []}


async def test_security_headers_on_every_response(api):
    for response in (await api.get("/healthz"), await api.get("/api/instances/99")):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


async def test_openapi_document_names_every_route(api):
    doc = (await api.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/instances/{instance_id}/retry" in doc["paths"]


async def test_a_failed_run_is_retried_through_the_api(api, node):
    with node.subscribe() as sub:
        made = (
            await api.post("/api/instances", json={"task": "boom", "at": "2000-01-01T00:00:00Z"})
        ).json()
        with trio.fail_after(60):
            async for event in sub:
                if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                    break
    assert (await api.get(f"/api/instances/{made['id']}")).json()["state"] == "FAILED"
    history = (await api.get(f"/api/instances/{made['id']}/history")).json()["items"]
    assert [h["state"] for h in history] == ["FAILED"]
    assert history[0]["error_type"] == "RuntimeError"
    retried = await api.post(f"/api/instances/{made['id']}/retry")
    assert retried.status_code == 201


async def test_history_shows_a_bash_runs_output():
    # the real clock: a child process runs
    async with (
        tickwork.open_scheduler(tickwork.MemoryStore(), tasks=[tickwork.BashTask()]) as node,
        in_process(node) as api,
    ):
        with node.subscribe() as sub:
            cmd = {"cmd": "echo out; echo err >&2; exit 3"}
            made = await api.post(
                "/api/instances", json={"task": "bash", "at": "2000-01-01T00:00:00Z", "params": cmd}
            )
            with trio.fail_after(20):
                async for event in sub:
                    if isinstance(event, tickwork.TransitionEvent) and event.to_state.terminal:
                        break
        (attempt,) = (await api.get(f"/api/instances/{made.json()['id']}/history")).json()["items"]
    assert attempt["output"] == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}


class Hanging(tickwork.MemoryStore):
    """A store whose reads never answer (a database that stopped responding)."""

    hang = False

    async def get(self, instance_id: int) -> tickwork.Instance | None:
        if self.hang:
            await trio.sleep_forever()
        return await super().get(instance_id)


async def test_readyz_says_when_the_store_does_not_answer(autojump_clock):
    store = Hanging()
    async with (
        tickwork.open_scheduler(store, tasks=[Quiet()], clock=VirtualClock()) as node,
        in_process(node) as api,
    ):
        assert (await api.get("/readyz")).status_code == 200
        store.hang = True
        response = await api.get("/readyz")
        assert response.status_code == 503
        assert response.json()["problems"] == ["the store did not answer within 2 s"]
        assert (await api.get("/healthz")).status_code == 200
    async with in_process(node) as api:  # the node has stopped
        response = await api.get("/readyz")
        assert response.json() == {
            "status": "unavailable",
            "problems": ["the scheduler is stopped"],
        }
