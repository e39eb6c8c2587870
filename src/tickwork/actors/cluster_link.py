"""A node's link to its cluster: which claims are still its own, heartbeats, change notices.

Only a node on a :class:`~tickwork.stores.cluster.ClusterStore` has one. It gives the
node three things (see ``docs/clustering.md``); the Leases actor
(``actors/leases.py``) runs its heartbeats and reads its change notices, the Puller
uses its lease bookkeeping and pull slots:

* **Leases, seen from the node.** A lease runs on the database clock, which the node
  cannot read; what it knows is when it *asked*. A claim or renewal sent at ``t`` (on
  trio's monotonic clock) produces a lease that lapses no earlier than ``t + lease`` on
  the database, so the node treats the claim as its own until ``t + lease - margin``.
  A renewal extends a claim only if it *came back* before that deadline: then it
  committed before the lease lapsed, and no other node can have taken the claim over.
  The Executor asks :meth:`LeaseBook.valid` before it starts an instance, so a node that
  cannot renew (its database session cut, its process stalled) stops starting
  instances before any other node may take them: at-least-once instances run twice only
  if they were already running when the lease was lost.
* **Heartbeats**: every ``lease / 3``, one store call that renews the live claims, tells
  the cluster the node is alive, and says when the first lease of another node lapses,
  so the Puller can take over a dead node's work at that moment instead of polling.
* **Change notices**: the store pushes what other nodes announce (new work due soon,
  abort requests, schedule changes); the Puller wakes on them at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Callable
from typing import Final, final

import attrs
import trio

from tickwork.errors import StoreUnavailable
from tickwork.stores.cluster import Changes, ClusterStore

log = logging.getLogger("tickwork.cluster")

#: What a heartbeat or a notice wait may raise and still be tried again.
_TRANSIENT: Final = (StoreUnavailable, OSError)
#: After a failed heartbeat, try again this soon (it is also bounded by the period).
_RETRY_S: Final = 0.25
#: Wait this much past the moment a lease lapses before trying to take it over: the
#: database clock decides, and a claim a little early finds nothing to take.
_LAPSE_SLACK_S: Final = 0.05
#: The most a lease's deadline is shortened by on the node (see LeaseBook).
_MAX_MARGIN_S: Final = 1.0


@final
@attrs.frozen
class LeaseStatistics:
    #: claims (claim tokens) the node holds and may start instances of
    claims: int
    #: claims given up because a renewal came back too late (or not at all)
    lost: int
    #: seconds until the earliest held claim's deadline, or None
    next_deadline_s: float | None


@final
class LeaseBook:
    """Per claim token: until when (trio time) this node may start instances of it."""

    def __init__(self, lease_s: float) -> None:
        margin = min(lease_s / 10, _MAX_MARGIN_S)
        self._usable = lease_s - margin
        # token -> (deadline, when its claim was sent)
        self._held: dict[int, tuple[float, float]] = {}
        # The deadline of the node's claims as of its last renewal: the store grants a
        # new claim the lease of the node's live claims (they lapse together).
        self._renewed_until: float | None = None
        self._lost = 0

    def claimed(self, token: int | None, sent_at: float) -> None:
        """A claim sent at ``sent_at`` returned rows under ``token``.

        Its lease is the node's live claims' if it has any (else a fresh one), so it is
        counted on no longer than the last renewal's deadline.
        """
        if token is None:
            return
        deadline = sent_at + self._usable
        if self._renewed_until is None:
            self._renewed_until = deadline
        self._held[token] = (min(deadline, self._renewed_until), sent_at)

    def valid(self, token: int | None) -> bool:
        """Whether instances of this claim may still be started."""
        entry = self._held.get(token) if token is not None else None
        return entry is not None and trio.current_time() < entry[0]

    def renewed(self, sent_at: float, returned_at: float, live: frozenset[int]) -> int:
        """A heartbeat sent at ``sent_at`` came back at ``returned_at`` with the ``live``
        claims (the ones it renewed). Returns how many claims were lost.

        A claim sent after the heartbeat keeps its own deadline. Any other claim is kept
        only if the heartbeat renewed it and came back before its deadline; one that is
        not live any more had no rows left (all recorded) or was lost to another node.
        """
        lost = 0
        for token, (deadline, claimed_at) in list(self._held.items()):
            if claimed_at >= sent_at:
                continue
            if token in live and returned_at < deadline:
                self._held[token] = (max(deadline, sent_at + self._usable), claimed_at)
                continue
            del self._held[token]
            if token in live or returned_at >= deadline:
                lost += 1
        self._lost += lost
        # What the store renewed lapses no earlier than this; new claims share it.
        self._renewed_until = max(self._renewed_until or sent_at, sent_at + self._usable)
        return lost

    def statistics(self) -> LeaseStatistics:
        first = min((d for d, _ in self._held.values()), default=None)
        return LeaseStatistics(
            claims=len(self._held),
            lost=self._lost,
            next_deadline_s=None if first is None else first - trio.current_time(),
        )


@final
@attrs.frozen
class ClusterStatistics:
    #: live nodes at the last heartbeat, this one included, and this node's place
    #: among them (by node id), which sets its pull slots
    nodes: int
    rank: int
    heartbeats: int
    heartbeat_failures: int
    #: seconds since the last heartbeat came back (None: none yet)
    last_heartbeat_s: float | None
    #: seconds until another node's lease lapses and its work may be taken over
    takeover_in_s: float | None
    #: change notices received from other nodes
    notices: int
    leases: LeaseStatistics


@final
class ClusterLink:
    """Heartbeats, lease bookkeeping and change notices of one node (module docstring)."""

    def __init__(
        self,
        *,
        store: ClusterStore,
        owner: str,
        lease_us: int,
        held: Callable[[], int],
        running: Callable[[], int],
        leases: LeaseBook | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._lease_us = lease_us
        self._held = held
        self._running = running
        #: the node's claims and until when it may start their instances (the Executor
        #: asks it before each start)
        self.leases = leases or LeaseBook(lease_us / 1e6)
        self.nodes = 1
        self.rank = 0
        #: trio time at which another node's lease lapses (its work becomes takeable)
        self.takeover_at: float | None = None
        self._beat_soon = trio.Event()
        self._heartbeats = 0
        self._failures = 0
        self._last_beat: float | None = None
        self._notices = 0

    def fair_share(self, want: int, floor: int) -> int:
        """At most ``want``, split between the live nodes (never below ``floor``).

        Nodes woken together by one notice claim concurrently; taking a share each and
        coming back for more makes them interleave instead of the fastest taking all.
        """
        return min(want, max(floor, math.ceil(want / max(self.nodes, 1))))

    def slot_at(self, at_us: int, round_us: int) -> int:
        """This node's first pull slot at or after ``at_us`` (wall-clock microseconds).

        Time is cut into rounds of ``round_us``; in each, the live nodes pull one after
        another, node of rank ``r`` at ``r / nodes`` of the round. Each pull then takes
        what became due since the previous node's, so on a steady workload every node
        gets the same share, and the cluster pulls ``nodes`` times per round, not more.
        """
        round_us = max(round_us, 1)
        offset = round_us * self.rank // self.nodes
        rounds = -((offset - at_us) // round_us)  # ceil((at_us - offset) / round_us)
        return offset + rounds * round_us

    async def beat(self) -> bool:
        """One heartbeat; transient store failures are logged and counted, not raised.

        Returns whether it learnt when another node's lease lapses (the Puller re-aims).
        """
        sent = trio.current_time()
        try:
            beat = await self._store.heartbeat(
                self._owner, self._lease_us, held=self._held(), running=self._running()
            )
        except _TRANSIENT as exc:
            self._failures += 1
            log.warning("heartbeat failed (%s); leases lapse unless a retry succeeds", exc)
            return False
        back = trio.current_time()
        self._heartbeats += 1
        self._last_beat = back
        lost = self.leases.renewed(sent, back, beat.tokens)
        if lost:
            log.warning(
                "lost %d claims: their lease could not be renewed in time; another node "
                "takes their instances over",
                lost,
            )
        self.nodes = max(beat.nodes, 1)
        self.rank = min(max(beat.rank, 0), self.nodes - 1)
        if beat.next_lapse_us is None:
            self.takeover_at = None
            return False
        self.takeover_at = back + max(beat.next_lapse_us, 0) / 1e6 + _LAPSE_SLACK_S
        return True

    def pulled(self, at: float) -> None:
        """The Puller pulled at ``at``: a takeover due by then was attempted. Beat again
        at once to learn when the next of the other nodes' leases lapses (a dead node's
        claims lapse one after another, as it made them)."""
        if self.takeover_at is not None and at >= self.takeover_at:
            self.takeover_at = None
            self._beat_soon.set()

    async def heartbeats(self) -> AsyncGenerator[bool, None]:
        """Beat every ``lease / 3`` (sooner again after a failure, or when the Puller
        asks: :meth:`pulled`), forever; the first beat one period from now (the caller
        beat once before). Yields what each :meth:`beat` returned."""
        period = self._lease_us / 3e6
        delay = period
        while True:
            with trio.move_on_after(delay):
                await self._beat_soon.wait()
            self._beat_soon = trio.Event()
            failures = self._failures
            takeover = await self.beat()
            delay = period if self._failures == failures else min(period, _RETRY_S)
            yield takeover

    async def next_changes(self) -> Changes:
        """The next change notice; a lost listening connection reads as ``lost``."""
        try:
            changes = await self._store.wait_changed()
        except _TRANSIENT as exc:
            log.warning("lost the change notices (%s); looking at everything", exc)
            await trio.sleep(_RETRY_S)
            return Changes(lost=True)
        self._notices += 1
        return changes

    def statistics(self) -> ClusterStatistics:
        now = trio.current_time()
        return ClusterStatistics(
            nodes=self.nodes,
            rank=self.rank,
            heartbeats=self._heartbeats,
            heartbeat_failures=self._failures,
            last_heartbeat_s=None if self._last_beat is None else now - self._last_beat,
            takeover_in_s=None if self.takeover_at is None else self.takeover_at - now,
            notices=self._notices,
            leases=self.leases.statistics(),
        )
