"""The Executor's gate for schedule occurrences: is it still wanted, and may it overlap?

When a due batch holds occurrences of recurring schedules, the Executor hands it to
:meth:`OverlapGuard.admit` before anything starts. One store call per batch
(``check_occurrences``) says for each occurrence whether it may run - its schedule may
have been paused (recorded MISSED), removed or replaced (ABORTED) since it was claimed -
and under which overlap policy. The guard then applies the policy against the other
occurrences of the same schedule that are running or waiting to start, on this node or
on any other node sharing the store:

* ``allow``: it runs;
* ``skip``: it is recorded MISSED with the reason;
* ``queue``: it waits until the running one ends; if one already waits, MISSED;
* ``cancel_previous``: the running one is cancelled (ABORTED), then this one runs; if the
  running one is the *newer* (another node started it first), this one is MISSED.

A late occurrence that ``misfire="run_all"`` catches up waits its turn whatever the
policy (except ``allow``), so a catch-up runs its occurrences one after another, in
order.

**An overlap needs a run in flight.** An occurrence overlaps only an occurrence of its
schedule that had *started* here by the time it came due (its due time). Occurrences that
come due before the previous one started - several due at once after a restart, or behind
a full executor - are a backlog, not an overlap: the schedule's misfire policy decides
(``run_all``: each runs, in order, one at a time; ``run_once`` and ``skip``: the first
runs, the others are recorded MISSED, coalesced into it).

**Across nodes.** Each schedule has one *admitted occurrence* in the store (see
:class:`tickwork.schedules.plan.Slot`). The batch's store call also *admits*, for every
schedule that has nothing running or waiting here, the first of its occurrences: under
the schedule's row lock, the store records it as admitted unless an occurrence held by
another node is (CLAIMED or RUNNING under the claim it was admitted with), or an older
occurrence already due is held by another node and not admitted (it waits there: the
oldest goes first); then it names that one instead (``InFlight.waiting`` for the latter).
Two nodes admitting occurrences of one schedule at the same moment take turns on the
lock, so the second sees the first. Nothing is written when an occurrence ends: the
admitted one stops counting as soon as its outcome is written (or it is given back, or
its node's lease lapsed and another node took it over). So:

* ``skip``: MISSED, naming the other occurrence and its node;
* ``queue`` (and a catch-up): it waits here, and every :data:`RECHECK_US` (one second on
  the node's clock) the guard asks the store again; it starts once the other one ended.
  If the other one is itself waiting, ``queue`` records this one MISSED (one waits);
* ``cancel_previous``: the other one's abort is requested through the store (the node
  running it is notified and cancels it), and this one waits for it to end as for
  ``queue``.

This node's own occurrences are decided here, without the store (a node knows which of
its occurrences run; one that just ended may still be CLAIMED in the store until its
outcome is written). An occurrence that ended on another node counts there until its
outcome is committed (milliseconds; the Recorder batches writes): one coming due in that
moment is skipped or waits one recheck.

Waiting occurrences count against the node's in-memory bound like any held instance;
the guard keeps nothing for a schedule with nothing admitted or waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal, final

import trio

from tickwork.actors._overlap_policy import against_local, against_remote
from tickwork.actors.messages import Kind, Outcome
from tickwork.schedules.plan import iso
from tickwork.schedules.schedule import Misfire, Overlap
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.clock import Clock
    from tickwork.model import Instance
    from tickwork.schedules.plan import InFlight, OccurrenceCheck
    from tickwork.stores.base import Store

__all__ = ["RECHECK_US", "SUPERSEDED", "OverlapGuard"]

#: The error of an occurrence cancelled by the next one (``overlap="cancel_previous"``).
SUPERSEDED = (
    "cancelled: the next occurrence of its schedule came due while it still ran "
    "(overlap=cancel_previous)"
)

#: How often an occurrence waiting for another node's asks the store again (clock µs).
RECHECK_US: Final = 1_000_000

#: What :meth:`OverlapGuard._place` did: start it now, park or record it, or ask again.
_Placed = Literal["run", "held", "again"]

#: Rounds of :meth:`OverlapGuard.admit` for occurrences whose schedule's last occurrence
#: here ended while the store was asked (they are asked again, now to be admitted).
_ROUNDS: Final = 3


@final
class OverlapGuard:
    """Per-schedule bookkeeping of admitted occurrences (see the module docstring).

    Args:
        emit: records an outcome (the Executor's outbox).
        supersede: cancels an admitted instance as SUPERSEDED (running or not).
        recheck_us: how often occurrences waiting for another node's ask again.
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        emit: Callable[[Outcome], None],
        supersede: Callable[[int], None],
        recheck_us: int = RECHECK_US,
    ) -> None:
        self._store = store
        self._clock = clock
        self._emit = emit
        self._supersede = supersede
        self._recheck_us = recheck_us
        #: schedule id -> ids admitted (ready or running) and not yet ended
        self._active: dict[str, set[int]] = {}
        #: admitted occurrence id -> when its run started (clock µs), once it started
        self._starts: dict[int, int] = {}
        #: schedule id -> occurrences waiting for the active ones to end, in due order
        self._waiting: dict[str, deque[Instance]] = {}
        #: ids taken out of a waiting line, on their way back through admit()
        self._released: set[int] = set()
        #: one admit at a time: each decides on what the previous one left
        self._lock = trio.Lock()
        #: set when a line starts waiting for another node (wakes recheck())
        self._wake = trio.Event()
        #: the recheck's sleep; drain() cuts it short
        self._nap = trio.CancelScope()
        self.closing = False

    def waiting(self) -> int:
        """How many occurrences wait for the previous one of their schedule."""
        return sum(len(q) for q in self._waiting.values())

    async def admit(self, due: list[Instance]) -> list[Instance]:
        """The instances of ``due`` that may start now; records or parks the others."""
        if all(i.schedule_id is None for i in due):
            return due
        async with self._lock:
            out: list[Instance] = []
            todo = due
            for rounds_left in range(_ROUNDS - 1, -1, -1):
                started, todo = await self._admit_round(todo, last=rounds_left == 0)
                out += started
                if not todo:
                    break
            if self.closing:  # released during shutdown: they never start
                for inst in out:
                    self._emit(Outcome(inst, Kind.INTERRUPTED))
                return []
            return out

    def _to_admit(self, due: list[Instance]) -> set[int]:
        """The ids to ask the store to admit: those that start now unless another node
        runs their schedule (released ones, and the first of a schedule with nothing
        running or waiting here)."""
        asked: set[int] = set()
        deciding: set[str] = set()  # schedules of this batch that one of it is asked for
        for inst in due:
            if inst.schedule_id is not None and inst.id in self._released:
                asked.add(inst.id)
                deciding.add(inst.schedule_id)
        for inst in due:
            sid = inst.schedule_id
            if sid is None or sid in deciding:
                continue
            if not self._active.get(sid) and not self._waiting.get(sid):
                asked.add(inst.id)
                deciding.add(sid)
        return asked

    async def _admit_round(
        self, due: list[Instance], *, last: bool
    ) -> tuple[list[Instance], list[Instance]]:
        """One store call: (instances that start now, instances to ask about again)."""
        asked = self._to_admit(due)
        ids = [i.id for i in due if i.schedule_id is not None]
        now = self._clock.now_us()
        checks = {c.id: c for c in await self._store.check_occurrences(ids, now, admit=asked)}
        started: list[Instance] = []
        again: list[Instance] = []
        aborts: list[int] = []
        for inst in due:
            placed: _Placed = "run"
            if inst.schedule_id is not None:
                check = checks.get(inst.id)
                placed = self._place(
                    inst, inst.schedule_id, check, inst.id in asked, aborts, last=last
                )
            if placed == "run":
                started.append(inst)
            elif placed == "again":
                again.append(inst)
        for iid in aborts:  # cancel_previous: the other node's occurrence
            await self._store.request_abort(iid, now)
        return started, again

    def _skip(self, inst: Instance, reason: str) -> None:
        self._emit(Outcome(inst, Kind.SKIPPED, result=reason))

    def _place(
        self,
        inst: Instance,
        sid: str,
        check: OccurrenceCheck | None,
        asked: bool,
        aborts: list[int],
        *,
        last: bool,
    ) -> _Placed:
        """Apply the verdict and the overlap policy to ``inst``."""
        released = inst.id in self._released
        self._released.discard(inst.id)
        if check is not None and not check.run:
            # (a released one is still active here: its outcome releases the next one)
            kind = Kind.SKIPPED if check.state is State.MISSED else Kind.ABORTED
            self._emit(Outcome(inst, kind, result=check.reason))
            return "held"
        overlap = Overlap.ALLOW if check is None else check.overlap
        active = self._active.setdefault(sid, set())
        if overlap is Overlap.ALLOW:
            active.add(inst.id)
            return "run"
        if released or asked:
            return self._asked(inst, sid, check, active, aborts, released=released)
        if not active and not self._waiting.get(sid):
            # Not asked because one of its schedule was here then; it has ended since.
            del self._active[sid]
            if not last:
                return "again"
            self._waiting[sid] = deque([inst])  # asked at the next recheck
            self._wake.set()
            return "held"
        running = self._in_flight(inst, active)
        if active and not running and not (check is not None and check.catchup):
            self._backlog(inst, sid, check, min(active))
        else:
            self._local(inst, sid, check, running or active)
        if not active:
            del self._active[sid]
        return "held"

    def _asked(
        self,
        inst: Instance,
        sid: str,
        check: OccurrenceCheck | None,
        active: set[int],
        aborts: list[int],
        *,
        released: bool,
    ) -> _Placed:
        """``inst`` was asked to be admitted: it runs, unless another node runs one."""
        other = None if check is None else check.in_flight
        if other is None:
            active.add(inst.id)
            return "run"
        active.discard(inst.id)  # (a released one's place, kept for it)
        if not active:
            del self._active[sid]
        self._remote(inst, sid, check, other, aborts, again=released)
        return "held"

    def started(self, inst: Instance, at_us: int) -> None:
        """The Executor started ``inst``'s run at ``at_us`` (an admitted occurrence)."""
        sid = inst.schedule_id
        if sid is not None and inst.id in self._active.get(sid, ()):
            self._starts[inst.id] = at_us

    def _in_flight(self, inst: Instance, active: set[int]) -> set[int]:
        """The occurrences of ``active`` whose run had started when ``inst`` came due."""
        due = inst.run_at_us
        return {i for i in active if self._starts.get(i, due + 1) <= due}

    def _backlog(self, inst: Instance, sid: str, check: OccurrenceCheck | None, first: int) -> None:
        """``inst`` came due before ``first`` (admitted here) had started: the misfire
        policy decides, not the overlap policy."""
        misfire = Misfire.RUN_ONCE if check is None else check.misfire
        if misfire is Misfire.RUN_ALL:
            self._waiting.setdefault(sid, deque()).append(inst)  # in order, one at a time
            return
        self._skip(
            inst,
            f"misfire={misfire.value}: due {iso(inst.run_at_us)} while occurrence {first} "
            "of this schedule, due earlier, had not started yet (they came due together, "
            "e.g. after a restart); coalesced into its run",
        )

    def _local(
        self, inst: Instance, sid: str, check: OccurrenceCheck | None, active: set[int]
    ) -> None:
        """The policy against this node's own occurrences (running, or waiting here)."""
        waiting = self._waiting.setdefault(sid, deque())
        against_local(inst, check, active, waiting, skip=self._skip, supersede=self._supersede)
        if not waiting:
            self._waiting.pop(sid, None)

    def _remote(
        self,
        inst: Instance,
        sid: str,
        check: OccurrenceCheck | None,
        other: InFlight,
        aborts: list[int],
        *,
        again: bool,
    ) -> None:
        """The policy against another node's occurrence of the schedule (``other``)."""
        waiting = self._waiting.setdefault(sid, deque())
        against_remote(inst, check, other, waiting, aborts, skip=self._skip, again=again)
        if waiting:
            self._wake.set()
        else:
            del self._waiting[sid]

    def done(self, inst: Instance) -> Instance | None:
        """``inst`` ended (any outcome): the occurrence that may start now, if any."""
        sid = inst.schedule_id
        active = None if sid is None else self._active.get(sid)
        if sid is None or active is None or inst.id not in active:
            return None
        active.discard(inst.id)
        self._starts.pop(inst.id, None)
        if active:
            return None
        waiting = self._waiting.get(sid)
        if not waiting or self.closing:
            del self._active[sid]
            return None
        nxt = waiting.popleft()
        if not waiting:
            del self._waiting[sid]
        active.add(nxt.id)
        self._released.add(nxt.id)
        return nxt

    async def recheck(self, readmit: Callable[[list[Instance]], Awaitable[None]]) -> None:
        """Run by the Executor: while occurrences wait for another node's, every
        ``recheck_us`` hand the first of each such line back to ``readmit`` (the Executor's
        admission, which calls :meth:`admit`: it starts, or waits again)."""
        while not self.closing:
            if not any(sid not in self._active for sid in self._waiting):
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            self._nap = trio.CancelScope()
            with self._nap:
                await self._clock.sleep_until_us(self._clock.now_us() + self._recheck_us)
            if self._stopped():  # drain() took the waiting ones
                return
            heads = []
            for sid in [s for s in self._waiting if s not in self._active]:
                waiting = self._waiting[sid]
                nxt = waiting.popleft()
                if not waiting:
                    del self._waiting[sid]
                self._active[sid] = {nxt.id}
                self._released.add(nxt.id)
                heads.append(nxt)
            await readmit(heads)

    def _stopped(self) -> bool:
        return self.closing  # (a call: mypy keeps what the loop's condition narrowed)

    def remove(self, instance_id: int) -> Instance | None:
        """Take a waiting occurrence out of its line (it was aborted); None if not here."""
        for sid, waiting in self._waiting.items():
            for inst in waiting:
                if inst.id == instance_id:
                    waiting.remove(inst)
                    if not waiting:
                        del self._waiting[sid]
                    return inst
        return None

    def drain(self) -> list[Instance]:
        """Shutdown: every waiting occurrence (they never start)."""
        self.closing = True
        self._wake.set()
        self._nap.cancel()
        out = [inst for waiting in self._waiting.values() for inst in waiting]
        self._waiting.clear()
        return out
