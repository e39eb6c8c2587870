# ruff: noqa: INP001 - a script beside the docs it illustrates, not a package
"""Regenerate the web UI's screenshots in docs/img/ (shown in docs/ui.md and the README).

    .venv/bin/python docs/ui_screenshots.py

Starts a node on a fresh SQLite database in a temporary directory, gives it a small,
realistic workload (bash commands that succeed and fail, schedules, work due later),
serves its HTTP app on a free loopback port and photographs each page with Debian's
``chromium`` (``/usr/bin/chromium``, driven by Playwright; no browser is downloaded).
"""

from __future__ import annotations

import socket
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from playwright.sync_api import sync_playwright

import tickwork
from tickwork.http import create_app

OUT = Path(__file__).resolve().parent / "img"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long the dashboard stays open before its photograph, the node busy meanwhile.
CHART_SECONDS = 40
PAGES = [
    ("dashboard", "/"),
    ("instances", "/instances"),
    ("upcoming", "/instances?tab=upcoming"),
    ("instance", "/instances/{failed}"),
    ("schedules", "/schedules"),
    ("schedule", "/schedules/backup"),
    ("nodes", "/nodes"),
]


async def workload(s: tickwork.Scheduler) -> dict[str, int]:
    """Some history, some failures, some schedules and work still to come."""
    bash = tickwork.BashTask.params
    now = s.now()
    await s.add_schedule(
        "bash", tickwork.Cron("30 2 * * *", "Europe/Paris"), schedule_id="backup",
        params=bash("pg_dump app | gzip > /var/backups/app.sql.gz"),
    )  # fmt: skip
    await s.add_schedule(
        "bash", tickwork.Cron("*/15 8-18 * * 1-5", "America/New_York"), schedule_id="reports",
        params=bash("./reports.sh --weekly"),
    )  # fmt: skip
    await s.add_schedule(
        "bash", tickwork.Interval(timedelta(seconds=30)), schedule_id="heartbeat",
        params=bash("echo beat"),
    )  # fmt: skip
    commands = [
        "echo 'synced 1,204 rows'",
        "python3 -c 'print(42)'",
        "echo 'Deploying build 7f3c…'; echo 'migrations: 3 applied'",
        "echo 'disk usage:'; df -h / | tail -1",
    ]
    ids = [await s.schedule("bash", at=now, params=bash(c)) for c in commands]
    failed = await s.schedule(
        "bash", at=now,
        params=bash("echo 'fetching https://api.example.com/v2/orders'; "
                    "echo 'curl: (22) The requested URL returned error: 503' >&2; exit 22"),
    )  # fmt: skip
    slow = await s.schedule("bash", at=now, params=bash("sleep 30"))
    for minutes in (5, 20, 60, 180):
        await s.schedule("bash", at=now + timedelta(minutes=minutes), params=bash("./cleanup.sh"))
    await s.run_schedule_now("backup")
    checks = ["curl -fsS localhost:8080/health", "./rotate-logs.sh", "echo ok"]
    for n in range(12):
        await trio.sleep(0.5)
        await s.schedule("bash", at=s.now(), params=bash(checks[n % len(checks)]))
    aborted = await s.schedule("bash", at=now + timedelta(hours=2), params=bash("./migrate.sh"))
    await s.abort(aborted)
    return {"failed": failed, "slow": slow, "first": ids[0]}


async def feed(s: tickwork.Scheduler) -> None:
    """A steady trickle with a burst in the middle, for the dashboard's chart."""
    bash = tickwork.BashTask.params("true")
    for n in range(CHART_SECONDS * 2):
        burst = 12 if CHART_SECONDS <= n < CHART_SECONDS + 10 else 3
        await s.schedule_many([tickwork.NewInstance("bash", s.now(), bash)] * burst)
        await trio.sleep(0.5)


def photograph(base: str, ids: dict[str, int]) -> None:
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        for name, path in PAGES:
            page.goto(base + path.format(**ids))
            if name == "dashboard":
                # the chart draws a sample every 2 s while the page is open
                page.wait_for_timeout(CHART_SECONDS * 1000)
            page.screenshot(
                path=str(OUT / f"ui-{name}.png"), full_page=name not in {"instances", "upcoming"}
            )
            sys.stdout.write(f"docs/img/ui-{name}.png\n")
        browser.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = tickwork.SQLiteStore(Path(tmp) / "tickwork.db")
        async with (
            tickwork.open_scheduler(store, tasks=[tickwork.BashTask()]) as s,
            trio.open_nursery() as n,
        ):
            ids = await workload(s)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = None
            stop = trio.Event()
            n.start_soon(lambda: serve(create_app(s), config, shutdown_trigger=stop.wait))
            await trio.sleep(1)
            n.start_soon(feed, s)
            await trio.to_thread.run_sync(photograph, f"http://127.0.0.1:{port}", ids)
            await s.abort(ids["slow"])
            stop.set()
            n.cancel_scope.cancel()


if __name__ == "__main__":
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    trio.run(main)
