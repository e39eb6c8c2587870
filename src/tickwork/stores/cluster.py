"""What a store shared by several nodes offers beyond :class:`~tickwork.stores.base.Store`.

A *cluster store* (``PostgresStore``) is one that many scheduler nodes use at once. The
scheduler finds out by ``isinstance(store, ClusterStore)`` and then runs in cluster mode
(see ``docs/clustering.md``): a short claim horizon, a short lease, heartbeats that say
which claims are still this node's, and change notices pushed by the store instead of
polled.

The protocol is separate from ``Store`` so that a single-node store (or a user's own)
needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import attrs

from tickwork.stores.base import Store

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Changes", "ClusterStore", "Heartbeat", "NodeInfo", "NodeRegistry"]


@final
@attrs.frozen
class Heartbeat:
    """What one :meth:`ClusterStore.heartbeat` found out."""

    #: claim tokens of the caller whose lease was renewed: every claim it still holds rows
    #: of and whose lease had not lapsed. A claim missing here is no longer the caller's.
    tokens: frozenset[int]
    #: nodes alive (a heartbeat within their lease), the caller included
    nodes: int
    #: how many of them have a node id that sorts before the caller's
    rank: int
    #: microseconds until the earliest lease held by *another* node lapses (zero or
    #: negative: lapsed already), or None when no other node holds anything. A dead
    #: node's work can be taken over from then on.
    next_lapse_us: int | None


@final
@attrs.frozen
class Changes:
    """Changes other connections announced since the previous :meth:`ClusterStore.wait_changed`."""

    #: the earliest due time of PENDING work announced (new, retried or given back), in
    #: the scheduler clock's UTC microseconds; None when no such work was announced
    pending_us: int | None = None
    #: an abort was requested for an instance this store's node holds
    aborts: bool = False
    #: recurring schedules were added, changed, paused, resumed or removed
    schedules: bool = False
    #: notices may have been missed (the listening connection was lost and reopened):
    #: look at everything again
    lost: bool = False

    @property
    def any(self) -> bool:
        """Whether anything at all was announced."""
        return self.pending_us is not None or self.aborts or self.schedules or self.lost


@final
@attrs.frozen
class NodeInfo:
    """One row of the nodes table (``tickwork nodes``)."""

    node_id: str
    #: UTC microseconds, from the database clock
    started_us: int
    last_heartbeat_us: int
    #: set once the node stopped cleanly; None while it runs (or if it died)
    stopped_us: int | None
    #: whether its last heartbeat is recent (within its lease) and it did not stop
    alive: bool
    #: instances it holds in the store now (CLAIMED or RUNNING rows)
    held: int
    #: instances it was running at its last heartbeat (as it reported)
    running: int | None
    host: str | None
    pid: int | None
    version: str | None
    #: the names of the tasks it runs, sorted; None until the node recorded them
    tasks: tuple[str, ...] | None = None
    #: the largest params it accepts (``open_scheduler(max_params_bytes=...)``), if known
    max_params_bytes: int | None = None


@runtime_checkable
class NodeRegistry(Protocol):
    """A store that keeps a table of the nodes that ran on it: the built-in stores do.

    The scheduler records each node's tasks in it (:meth:`record_node`), and the CLI
    reads it (:meth:`nodes`) to refuse an instance of a task that no node runs. A user's
    own store may leave it out: nothing is recorded then, and nothing is checked.
    """

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record what the node ``node_id`` (this store's, opened with it) runs."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """Every node that recorded itself, most recently started first.

        ``alive`` is whether the node runs now: on PostgreSQL its heartbeats are
        recent; on SQLite it holds the file's node lock; in memory it has the store open.
        """
        ...


@runtime_checkable
class ClusterStore(Store, NodeRegistry, Protocol):
    """A :class:`~tickwork.stores.base.Store` that several nodes share at once.

    Its ``claim`` may grant a new claim the lease of the owner's live claims instead of
    ``now + lease`` (never longer), so that all of a node's claims lapse together, one
    lease after its last heartbeat. A node counts on a claim no longer than on its last
    renewal either way.
    """

    async def heartbeat(self, owner: str, lease_us: int, *, held: int, running: int) -> Heartbeat:
        """Renew ``owner``'s live claims and tell the cluster this node is alive.

        One transaction: extends the lease of every claim of ``owner`` whose lease has not
        lapsed (a lapsed claim is never revived: another node may be taking it over),
        forgets claims with no rows left, and records the heartbeat with ``held`` and
        ``running`` (what the node holds in memory and is running) in the nodes table.
        """
        ...

    def granted_lease_us(self, requested_us: int) -> int:
        """The lease the store grants when a node asks for ``requested_us`` (a store may
        impose its own). The node plans with what is granted."""
        ...

    async def wait_changed(self) -> Changes:
        """Wait until another connection announces a change, and return what changed.

        Announcements that arrive while nobody waits are kept and returned by the next
        call at once. Cancel the call to stop waiting (it is safe to cancel at any time).
        """
        ...
