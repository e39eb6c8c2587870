"""The web UI in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser). Each page loads without errors, the filters work, the buttons change
states, and a live update arrives without a reload. One node and one browser serve the
whole module; every wait is bounded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import tickwork
from tests.support.pg_support import unavailable
from tests.support.ui_support import LiveNode

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("TICKWORK_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        unavailable(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path_factory.mktemp("ui") / "tickwork.db")
    yield node
    node.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.new_page()
    p.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors and CSP violations are console errors; a missing resource is reported
    # by URL below (the console's message does not say which).
    p.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    p.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and "/api/events" not in r.url
            else None
        ),
    )
    p.on("dialog", lambda dialog: dialog.accept())
    yield p
    p.close()
    assert errors == [], errors  # no script error, no CSP violation


def schedule(live: LiveNode, task: str, params: Any = b"", delay: timedelta = timedelta(0)) -> int:
    async def go() -> int:
        return await live.scheduler.schedule(task, at=live.scheduler.now() + delay, params=params)

    return live.call(go)


def state_of(live: LiveNode, iid: int) -> tickwork.State:
    async def go() -> tickwork.State:
        return (await live.scheduler.get(iid)).state

    return live.call(go)


def wait_for_state(live: LiveNode, iid: int, wanted: tickwork.State) -> None:
    import time

    deadline = time.monotonic() + WAIT_MS / 1000
    while state_of(live, iid) is not wanted:
        assert time.monotonic() < deadline, (iid, state_of(live, iid))
        time.sleep(0.05)


def test_each_page_loads(live: LiveNode, page: Page) -> None:
    async def add() -> None:
        await live.scheduler.add_schedule("echo", tickwork.Cron("0 4 * * *"), schedule_id="daily")

    live.call(add)
    done = schedule(live, "echo", "hi there")
    wait_for_state(live, done, tickwork.State.SUCCEEDED)
    checks = {
        "/": "#chart",
        "/instances": f'tr[data-instance="{done}"]',
        "/instances?tab=upcoming": "text=Upcoming",
        f"/instances/{done}": "pre.term >> text=hi there",
        "/schedules": 'tr[data-schedule="daily"]',
        "/schedules/daily": "text=At 04:00 every day",
        "/nodes": "text=alive",
    }
    for path, selector in checks.items():
        response = page.goto(live.base + path)
        assert response is not None
        assert response.status == 200, path
        page.wait_for_selector(selector)
    page.goto(live.base + "/")
    page.wait_for_selector("#chart svg polyline", state="attached")  # two samples: a line


def test_filters_work(live: LiveNode, page: Page) -> None:
    failed = schedule(live, "fail")
    ok = schedule(live, "echo", "fine")
    wait_for_state(live, failed, tickwork.State.FAILED)
    wait_for_state(live, ok, tickwork.State.SUCCEEDED)
    page.goto(live.base + "/instances")
    page.select_option("select[name=state]", "FAILED")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**state=FAILED**")
    ids = page.eval_on_selector_all(
        "tr[data-instance]", "rows => rows.map(r => r.dataset.instance)"
    )
    assert str(failed) in ids
    assert str(ok) not in ids
    page.fill("input[name=q]", str(ok))
    page.press("input[name=q]", "Enter")
    page.wait_for_url(f"**/instances/{ok}")
    later = schedule(live, "echo", delay=timedelta(hours=5))
    page.goto(live.base + "/instances")
    page.click("nav.tabs >> text=Upcoming")
    page.wait_for_selector(f'tr[data-instance="{later}"]')
    assert page.query_selector(f'tr[data-instance="{failed}"]') is None


def test_abort_and_retry_buttons(live: LiveNode, page: Page) -> None:
    held = schedule(live, "hold")
    wait_for_state(live, held, tickwork.State.CLAIMED)
    page.goto(f"{live.base}/instances/{held}")
    page.click("button:has-text('Abort')")
    page.wait_for_selector("#inst-state >> text=ABORTED")
    assert state_of(live, held) is tickwork.State.ABORTED
    page.click("button:has-text('Retry')")
    page.wait_for_selector(f"text=Retrying instance {held} as")
    new_id = int(page.url.split("?")[0].rsplit("/", 1)[1])
    assert new_id != held
    page.click("button:has-text('Abort')")
    page.wait_for_selector("#inst-state >> text=ABORTED")


def test_pause_resume_and_run_now_buttons(live: LiveNode, page: Page) -> None:
    async def add() -> None:
        await live.scheduler.add_schedule("echo", tickwork.Cron("0 5 * * *"), schedule_id="morning")

    async def paused() -> bool:
        return (await live.scheduler.get_schedule("morning")).paused

    live.call(add)
    page.goto(live.base + "/schedules/morning")
    page.click("button:has-text('Pause')")
    page.wait_for_selector("h1 >> text=paused")
    assert live.call(paused)
    page.click("button:has-text('Resume')")
    page.wait_for_selector("h1 >> text=active")
    assert not live.call(paused)
    page.click("button:has-text('Run now')")
    page.wait_for_selector("text=Running morning now as instance")


def test_live_update_arrives_without_a_reload(live: LiveNode, page: Page) -> None:
    page.goto(live.base + "/instances?tab=all")
    page.wait_for_selector("#live-status.on")
    page.evaluate("document.body.dataset.marker = 'same page'")
    iid = schedule(live, "echo", "live!")
    page.wait_for_selector(f'tr[data-instance="{iid}"]')
    assert page.evaluate("document.body.dataset.marker") == "same page"  # no reload
