"""The PostgreSQL store's ear: reading the notices other connections sent.

The store LISTENs on one connection of its own. Reading it never blocks (libpq keeps its
socket non-blocking), so it runs on trio's thread; waiting for the next notice is a wait
for that socket to become readable (``trio.lowlevel.wait_readable``), no thread and no
polling. What is heard collects in a :class:`Heard` until a caller takes it.
"""

from __future__ import annotations

import re
import select
from typing import TYPE_CHECKING, Any, Final

import attrs

from tickwork.stores.cluster import Changes
from tickwork.stores.postgres import _cluster as _pg_cluster

if TYPE_CHECKING:
    import psycopg

#: Reads of the listening socket per drain: enough to empty it, bounded against a flood.
_DRAIN_ROUNDS: Final = 64
#: a notice's due time: an integer in ASCII digits (anything else reads as due now)
_INTEGER: Final = re.compile(r"-?[0-9]+")


@attrs.define
class Heard:
    """Notices heard and not yet taken, merged."""

    pending_us: int | None = None
    aborts: bool = False
    schedules: bool = False
    lost: bool = False

    @property
    def any(self) -> bool:
        return self.pending_us is not None or self.aborts or self.schedules or self.lost

    def note(self, notice: _pg_cluster.Notice, node_id: str | None) -> None:
        if notice.kind == _pg_cluster.PENDING_WORK:
            due = int(notice.arg) if _INTEGER.fullmatch(notice.arg) else 0
            self.pending_us = due if self.pending_us is None else min(self.pending_us, due)
        elif notice.kind == _pg_cluster.ABORT:
            self.aborts = self.aborts or (node_id is not None and notice.arg == node_id)
        elif notice.kind == _pg_cluster.SCHEDULES:
            self.schedules = True
        else:  # an older node's bare notice: anything may have changed
            self.lost = True

    def take(self) -> Changes:
        changes = Changes(
            pending_us=self.pending_us, aborts=self.aborts, schedules=self.schedules, lost=self.lost
        )
        self.pending_us, self.aborts, self.schedules, self.lost = None, False, False, False
        return changes


def drain(
    listener: psycopg.Connection[Any],
    *,
    channel: str,
    schema: str,
    own_pid: int | None,
    node_id: str | None,
    heard: Heard,
) -> int:
    """Take in the notices for ``schema`` that other connections sent; returns how many.

    It reads until the socket has nothing more: a server that ended the connection leaves
    its last message and then end-of-file, and only reading the end-of-file tells.

    Raises:
        psycopg.OperationalError: the listening connection is lost.
    """
    pgconn = listener.pgconn
    wanted = channel.encode()
    seen = 0
    for _ in range(_DRAIN_ROUNDS):
        pgconn.consume_input()
        while (n := pgconn.notifies()) is not None:
            if n.relname != wanted or n.be_pid == own_pid:
                continue
            notice = _pg_cluster.parse(schema, n.extra.decode(errors="replace"))
            if notice is not None:
                seen += 1
                heard.note(notice, node_id)
        readable, _w, _x = select.select([pgconn.socket], [], [], 0)
        if not readable:
            break
    return seen
