"""The web UI's pages and actions over HTTP (in process): each page renders what the
scheduler holds, filters and pages work, buttons change states, refusals are clear, and
nothing the pages do grows with the number of stored instances."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import tickwork
from tests.support.ui_support import TASKS, make_app
from tickwork import State


@pytest.fixture
async def node(mock_clock: trio.testing.MockClock) -> AsyncIterator[tickwork.Scheduler]:
    """A node on a virtual clock that moves only when a test waits (``settled``): what is
    due later stays upcoming however long the requests take. Time moves again while it
    shuts down (a running instance gets its grace)."""

    async def keep_time() -> None:
        while True:
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(1)

    async with trio.open_nursery() as nursery:
        async with tickwork.open_scheduler(tickwork.MemoryStore(), tasks=TASKS) as scheduler:
            yield scheduler
            nursery.start_soon(keep_time)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def client(node: tickwork.Scheduler) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


async def settle_until(check: Any, clock: trio.testing.MockClock) -> None:
    """Let every task run, moving virtual time a second at a time until ``check()``."""
    for _ in range(600):
        await trio.testing.wait_all_tasks_blocked()
        if await check():
            return
        clock.jump(1)
    raise AssertionError("never happened")


async def submit(client: httpx.AsyncClient, action: str) -> httpx.Response:
    """Post a form as the browser does: with the CSRF token the pages carry (the app's
    session cookie stays in the client)."""
    await client.get("/")  # opens the session (its cookie stays in the client)
    session = await client.get("/api/session")
    token = session.json().get("csrf_token") or ""
    return await client.post(action, data={"csrf_token": token})


async def settled(clock: trio.testing.MockClock, afn: Any, *args: Any, **kw: Any) -> Any:
    """``await afn(*args, **kw)`` while moving virtual time (a recorder lingers, an abort
    waits for the outcome to be written)."""
    box: list[Any] = []

    async def call() -> None:
        box.append(await afn(*args, **kw))

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            while not box:
                await trio.testing.wait_all_tasks_blocked()
                if not box:
                    clock.jump(0.1)
    return box[0]


async def ended(node: tickwork.Scheduler, iid: int, clock: Any) -> tickwork.Instance:
    async def check() -> bool:
        return (await node.get(iid)).state.terminal

    await settle_until(check, clock)
    return await node.get(iid)


def rows(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-instance="(\d+)">', html)]


async def test_every_page_renders(
    node: tickwork.Scheduler, client: httpx.AsyncClient, mock_clock: trio.testing.MockClock
) -> None:
    await node.add_schedule(
        "echo", tickwork.Cron("30 2 * * *", "Europe/Paris"), schedule_id="nightly"
    )
    iid = await node.schedule("echo", at=node.now(), params="hello")
    await ended(node, iid, mock_clock)
    pages = {
        "/": ["Dashboard", "Runs per second", "Failures in the last hour", node.node_id],
        "/instances": ["History", f'data-instance="{iid}"'],
        "/instances?upcoming=1": ["Upcoming", "nightly"],
        f"/instances/{iid}": ["Instance", "hello\n", "a warning", "exit 0", "SUCCEEDED"],
        "/schedules": ["nightly", "At 02:30 every day", "Europe/Paris"],
        "/schedules/nightly": ["At 02:30 every day", "Next fire times", "Europe/Paris"],
        "/nodes": [node.node_id, "alive", "echo", "hold"],
    }
    for path, expected in pages.items():
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        for text in expected:
            assert text in response.text, (path, text)
        assert "<script>" not in response.text  # the CSP allows no inline script
        assert " style=" not in response.text
        assert " onclick=" not in response.text
    css = await client.get("/static/ui.css")
    js = await client.get("/static/ui.js")
    assert (css.status_code, js.status_code) == (200, 200)
    assert "EventSource" in js.text
    samples = (await client.get("/ui/samples")).json()
    assert isinstance(samples["samples"], list)


async def test_missing_things_are_404(client: httpx.AsyncClient) -> None:
    for path in ("/instances/999", "/schedules/nope", "/schedules/" + "x" * 300):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text


async def test_history_and_upcoming_are_apart(
    node: tickwork.Scheduler, client: httpx.AsyncClient, mock_clock: trio.testing.MockClock
) -> None:
    later = await node.schedule("echo", at=node.now() + timedelta(hours=1))
    done = await node.schedule("fail", at=node.now())
    await ended(node, done, mock_clock)
    assert rows((await client.get("/instances")).text) == [done]
    assert rows((await client.get("/instances?tab=upcoming")).text) == [later]
    assert rows((await client.get("/instances?tab=all")).text) == [done, later]


async def test_filters_search_and_pages(
    node: tickwork.Scheduler, client: httpx.AsyncClient
) -> None:
    ids = [await node.schedule("echo", at=node.now() + timedelta(hours=1)) for _ in range(55)]
    other = await node.schedule("hold", at=node.now() + timedelta(hours=2))
    await node.add_schedule("echo", tickwork.Interval(timedelta(hours=3)), schedule_id="every3h")
    await trio.testing.wait_all_tasks_blocked()  # its occurrences are written
    first = await client.get("/instances?tab=upcoming&task=echo")
    page1 = rows(first.text)
    assert len(page1) == 50
    assert page1[0] > page1[-1]
    assert other not in page1
    more = re.search(r'href="([^"]*before=(\d+))"', first.text)
    assert more is not None
    page2 = rows((await client.get(more.group(1).replace("&amp;", "&"))).text)
    expected = [i.id for i in await node.list(task="echo", upcoming=True, limit=1000)]
    assert page1 + page2 == expected
    assert set(ids) <= set(expected)
    by_state = await client.get("/instances?tab=all&state=FAILED")
    assert rows(by_state.text) == []
    # search: an id goes to the instance, a schedule id or a task name filters
    jump = await client.get(f"/instances?q={ids[3]}")
    assert jump.status_code == 303
    assert jump.headers["location"] == f"/instances/{ids[3]}"
    assert "no instance with id 99999" in (await client.get("/instances?q=99999")).text
    by_task = await client.get("/instances?tab=upcoming&q=hold")
    assert rows(by_task.text) == [other]
    assert "showing task 'hold'" in html.unescape(by_task.text)
    by_schedule = await client.get("/instances?tab=upcoming&q=every3h")
    assert "showing schedule 'every3h'" in html.unescape(by_schedule.text)
    assert all(i not in ids for i in rows(by_schedule.text))
    junk = await client.get("/instances?state=bogus&before=x&tab=nope")
    assert junk.status_code == 200
    # digits to str.isdigit() that int() refuses: a search or a page like any other
    assert (await client.get("/instances?q=\u00b2")).status_code == 200
    assert (await client.get("/instances?before=\u00b2")).status_code == 200


async def test_abort_and_retry_buttons(
    node: tickwork.Scheduler, client: httpx.AsyncClient, mock_clock: trio.testing.MockClock
) -> None:
    held = await node.schedule("hold", at=node.now())

    async def running() -> bool:
        return node.statistics().running == 1

    await settle_until(running, mock_clock)
    page = (await client.get(f"/instances/{held}")).text
    assert f'action="/instances/{held}/abort"' in page
    assert f'action="/instances/{held}/retry"' not in page
    response = await settled(mock_clock, submit, client, f"/instances/{held}/abort")
    assert response.status_code == 303
    assert (await ended(node, held, mock_clock)).state is State.ABORTED
    page = (await client.get(f"/instances/{held}")).text
    assert f'action="/instances/{held}/retry"' in page
    retried = await submit(client, f"/instances/{held}/retry")
    assert retried.status_code == 303
    new_id = int(retried.headers["location"].split("?")[0].rsplit("/", 1)[1])
    assert (await node.get(new_id)).retry_of == held
    shown = (await client.get(retried.headers["location"])).text
    assert f"Retrying instance {held} as {new_id}" in shown
    assert f'href="/instances/{held}"' in shown  # the link back to what it retries
    # a refusal comes back as a message, not an error page
    again = await submit(client, f"/instances/{new_id}/retry")
    assert again.status_code == 303
    assert "error=" in again.headers["location"]
    assert "can be retried" in html.unescape((await client.get(again.headers["location"])).text)
    assert (await submit(client, f"/instances/{held}/explode")).status_code == 404


async def test_schedule_buttons(node: tickwork.Scheduler, client: httpx.AsyncClient) -> None:
    await node.add_schedule("echo", tickwork.Cron("0 3 * * *"), schedule_id="nightly")
    assert (await submit(client, "/schedules/nightly/pause")).status_code == 303
    assert (await node.get_schedule("nightly")).paused
    assert 'action="/schedules/nightly/resume"' in (await client.get("/schedules/nightly")).text
    await submit(client, "/schedules/nightly/resume")
    assert not (await node.get_schedule("nightly")).paused
    ran = await submit(client, "/schedules/nightly/run-now")
    assert "Running+nightly+now" in ran.headers["location"]
    (made,) = [i for i in await node.list() if i.run_now_of == "nightly"]
    page = (await client.get(f"/instances/{made.id}")).text
    assert 'Run now of</dt><dd>schedule <a href="/schedules/nightly">nightly</a>' in page
    removed = await submit(client, "/schedules/nightly/remove")
    assert removed.headers["location"].startswith("/schedules?done=Removed")
    with pytest.raises(tickwork.NotFound):
        await node.get_schedule("nightly")
    missing = await submit(client, "/schedules/nightly/pause")
    assert "error=" in missing.headers["location"]


async def test_read_scope_hides_the_buttons(node: tickwork.Scheduler) -> None:
    """Signed in with a read token, the pages show no form that posts, and a post is
    refused by the app's middleware."""
    _, read_text = await node.add_token("read")
    await node.add_schedule("echo", tickwork.Cron("0 3 * * *"), schedule_id="nightly")
    iid = await node.schedule("echo", at=node.now() + timedelta(hours=1))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    transport = httpx.ASGITransport(app=make_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        await c.post("/login", content=f"token={read_text}".encode(), headers=form)
        for path in (f"/instances/{iid}", "/schedules", "/schedules/nightly"):
            text = (await c.get(path)).text
            assert 'method="post"' not in text, path
            assert "read-only" in text
        refused = await submit(c, f"/instances/{iid}/abort")
        assert refused.status_code == 403
    assert not (await node.get(iid)).state.terminal


async def test_forms_carry_the_csrf_token_and_need_it(node: tickwork.Scheduler) -> None:
    iid = await node.schedule("echo", at=node.now() + timedelta(hours=1))
    transport = httpx.ASGITransport(app=make_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        text = (await c.get(f"/instances/{iid}")).text
        token = (await c.get("/api/session")).json()["csrf_token"]
        without = await c.post(f"/instances/{iid}/abort", data={"csrf_token": "forged"})
    forms = re.findall(r"<form method=\"post\".*?</form>", text, flags=re.DOTALL)
    assert forms
    assert token
    assert all(f'name="csrf_token" value="{token}"' in f for f in forms)
    assert without.status_code == 403
    assert not (await node.get(iid)).state.terminal
