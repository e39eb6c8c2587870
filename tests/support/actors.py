"""Helpers for the tests that drive one actor alone through its channels (no node)."""

from __future__ import annotations

from typing import Any

import trio

import tickwork
from tickwork.model import Instance, NewRow
from tickwork.testing import VirtualClock

OWNER = "node-a"
LEASE_US = 60_000_000
SECOND = 1_000_000


async def open_store() -> tickwork.MemoryStore:
    store = tickwork.MemoryStore()
    await store.open(node_id=OWNER)
    return store


async def claimed(
    store: tickwork.Store, clock: VirtualClock, *offsets_s: float, task: str = "t", **row: Any
) -> list[Instance]:
    """Store one instance due ``offset`` seconds from now per offset; claim them all."""
    now = clock.now_us()
    rows = [
        NewRow(task=task, run_at_us=now + int(s * SECOND), params=b"", **row) for s in offsets_s
    ]
    await store.insert(rows, now)
    horizon = now + int(max(offsets_s, default=0) * SECOND)
    return await store.claim(OWNER, horizon, len(rows), now, LEASE_US)


def pending(receive: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    """Every message waiting in ``receive`` now, without waiting."""
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out
