"""The web UI under test: the node's app (``create_app``, which mounts the UI) and a node
served over loopback in a thread, for the browser tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import tickwork

T = TypeVar("T")


def make_app(scheduler: tickwork.Scheduler) -> Any:
    """The node's HTTP app, which mounts the UI (and its auth: open on loopback)."""
    from tickwork.http import create_app

    return create_app(scheduler)


class Hold(tickwork.Task):
    """Runs until it is aborted (or an hour passes)."""

    name = "hold"

    async def run(self, params: bytes) -> None:
        await trio.sleep(3600)


class Fail(tickwork.Task):
    name = "fail"

    async def run(self, params: bytes) -> None:
        raise RuntimeError("the upstream answered 503")


class Echo(tickwork.Task):
    name = "echo"

    async def run(self, params: bytes) -> tickwork.RunOutput:
        text = tickwork.unpack(params) if params else ""
        return tickwork.RunOutput(stdout=f"{text}\n", stderr="a warning\n", exit_code=0)


TASKS: list[tickwork.Task] = [Hold(), Fail(), Echo(), tickwork.BashTask()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveNode:
    """A node on a SQLite file, its HTTP app served on loopback, in a thread of its own
    (real time: a browser talks to it). ``call`` runs a coroutine function in it."""

    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._db = db
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the node did not start")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        store = tickwork.SQLiteStore(self._db)
        async with tickwork.open_scheduler(
            store, tasks=TASKS, poll_interval=timedelta(milliseconds=50)
        ) as scheduler:
            self.scheduler = scheduler
            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.accesslog = None
            config.errorlog = None
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: serve(
                        make_app(scheduler),
                        config,
                        shutdown_trigger=self._stop.wait,
                        task_status=task_status,
                    )
                )
                self._ready.set()
                await self._stop.wait()

    def call(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(30)
        if self._error is not None:
            raise self._error
