"""JetStream set-up and reads for the nats tests, with nats-py (an independent client) run
on asyncio in a worker thread."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import trio

from tests.support.handoff_support import require_service

URL = os.environ.get("TICKWORK_NATS_URL", "nats://127.0.0.1:4222")


def require_nats() -> str:
    return require_service("NATS", URL, 4222)


async def _in_asyncio(fn: Any) -> Any:
    return await trio.to_thread.run_sync(asyncio.run, fn())


async def create_stream(subjects: list[str], duplicate_window: float = 120.0) -> str:
    """A fresh stream storing ``subjects``; returns its name."""
    import nats
    from nats.js.api import StreamConfig

    name = f"TW_TEST_{uuid.uuid4().hex[:10].upper()}"

    async def go() -> None:
        nc = await nats.connect(URL)
        try:
            await nc.jetstream().add_stream(
                StreamConfig(name=name, subjects=subjects, duplicate_window=duplicate_window)
            )
        finally:
            await nc.close()

    await _in_asyncio(go)
    return name


async def delete_stream(name: str) -> None:
    import nats

    async def go() -> None:
        nc = await nats.connect(URL)
        try:
            await nc.jetstream().delete_stream(name)
        finally:
            await nc.close()

    await _in_asyncio(go)


async def stream_messages(name: str, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """The first ``count`` messages of the stream: (subject, headers, data)."""
    import nats

    async def go() -> list[tuple[str, dict[str, str], bytes]]:
        nc = await nats.connect(URL)
        try:
            js = nc.jetstream()
            out = []
            for seq in range(1, count + 1):
                msg = await js.get_msg(name, seq)
                out.append((msg.subject, dict(msg.headers or {}), msg.data or b""))
            return out
        finally:
            await nc.close()

    return await _in_asyncio(go)
