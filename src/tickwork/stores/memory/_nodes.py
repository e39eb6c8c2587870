"""The MemoryStore's nodes table: the nodes that opened it, and the tasks they run.

A node is alive while it has the store open (one at a time, as on SQLite). Times are the
wall clock's UTC microseconds.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import attrs
import trio

from tickwork.stores.cluster import NodeInfo

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence

__all__ = ["MemoryNodes"]


@attrs.define
class MemoryNodes:
    """The rows, kept by :class:`~tickwork.stores.memory.MemoryStore`."""

    rows: dict[str, NodeInfo] = attrs.field(factory=dict)

    def register(self, node_id: str) -> None:
        now = time.time_ns() // 1000
        self.rows.pop(node_id, None)  # re-inserted: newest last
        self.rows[node_id] = NodeInfo(
            node_id=node_id,
            started_us=now,
            last_heartbeat_us=now,
            stopped_us=None,
            alive=True,
            held=0,
            running=None,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=None,
        )

    def unregister(self, node_id: str) -> None:
        row = self.rows.get(node_id)
        if row is not None:
            stopped = time.time_ns() // 1000
            self.rows[node_id] = attrs.evolve(row, alive=False, stopped_us=stopped)

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record what ``node_id`` runs (see :class:`~tickwork.stores.cluster.NodeRegistry`)."""
        await trio.lowlevel.checkpoint()
        row = self.rows.get(node_id)
        if row is not None:
            self.rows[node_id] = attrs.evolve(
                row, tasks=tuple(sorted(set(tasks))), max_params_bytes=max_params_bytes
            )

    def listing(self, held: int) -> builtins.list[NodeInfo]:
        """Newest first; the live node's ``held`` and heartbeat are as of now."""
        now = time.time_ns() // 1000
        out = [
            attrs.evolve(row, held=held, last_heartbeat_us=now) if row.alive else row
            for row in self.rows.values()
        ]
        return out[::-1]
