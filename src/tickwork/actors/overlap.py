"""The Executor's gate for schedule occurrences: is it still wanted, and may it overlap?

When a due batch holds occurrences of recurring schedules, the Executor hands it to
:meth:`OverlapGuard.admit` before anything starts. One store call per batch
(``check_occurrences``) says for each occurrence whether it may run - its schedule may
have been paused (recorded MISSED), removed or replaced (ABORTED) since it was claimed -
and under which overlap policy. The guard then applies the policy against the
occurrences of the same schedule that this node has admitted and not yet finished:

* ``allow``: it runs;
* ``skip``: it is recorded MISSED with the reason;
* ``queue``: it waits until the running one ends; if one already waits, MISSED;
* ``cancel_previous``: the running one is cancelled (ABORTED), then this one runs.

A late occurrence that ``misfire="run_all"`` catches up waits its turn whatever the
policy (except ``allow``), so a catch-up runs its occurrences one after another, in
order. Overlap is decided per node: occurrences of one schedule running on two nodes of
a cluster do not see each other.

Waiting occurrences count against the node's in-memory bound like any held instance;
the guard keeps nothing for a schedule with nothing admitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, final

from tickwork._schedules import Overlap
from tickwork.actors.messages import Kind, Outcome
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork._schedule_plan import OccurrenceCheck
    from tickwork.clock import Clock
    from tickwork.model import Instance
    from tickwork.stores.base import Store

__all__ = ["SUPERSEDED", "OverlapGuard"]

#: The error of an occurrence cancelled by the next one (``overlap="cancel_previous"``).
SUPERSEDED = (
    "cancelled: the next occurrence of its schedule came due while it still ran "
    "(overlap=cancel_previous)"
)


@final
class OverlapGuard:
    """Per-schedule bookkeeping of admitted occurrences (see the module docstring).

    Args:
        emit: records an outcome (the Executor's outbox).
        supersede: cancels an admitted instance as SUPERSEDED (running or not).
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        emit: Callable[[Outcome], None],
        supersede: Callable[[int], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._emit = emit
        self._supersede = supersede
        #: schedule id -> ids admitted (ready or running) and not yet ended
        self._active: dict[str, set[int]] = {}
        #: schedule id -> occurrences waiting for the active ones to end, in due order
        self._waiting: dict[str, deque[Instance]] = {}
        #: ids taken out of a waiting line, on their way back through admit()
        self._released: set[int] = set()
        self.closing = False

    def waiting(self) -> int:
        """How many occurrences wait for the previous one of their schedule."""
        return sum(len(q) for q in self._waiting.values())

    async def admit(self, due: list[Instance]) -> list[Instance]:
        """The instances of ``due`` that may start now; records or parks the others."""
        ask = [i.id for i in due if i.schedule_id is not None and i.id not in self._released]
        if not ask:
            if self._released:
                self._released.difference_update(i.id for i in due)
            return due
        checks = {c.id: c for c in await self._store.check_occurrences(ask, self._clock.now_us())}
        out = []
        for inst in due:
            if inst.schedule_id is None:
                out.append(inst)
            elif inst.id in self._released:
                self._released.discard(inst.id)
                out.append(inst)
            elif self._place(inst, inst.schedule_id, checks.get(inst.id)):
                out.append(inst)
        return out

    def _skip(self, inst: Instance, reason: str) -> None:
        self._emit(Outcome(inst, Kind.SKIPPED, result=reason))

    def _place(self, inst: Instance, sid: str, check: OccurrenceCheck | None) -> bool:
        """Apply the verdict and the overlap policy; True if ``inst`` starts now."""
        if check is not None and not check.run:
            kind = Kind.SKIPPED if check.state is State.MISSED else Kind.ABORTED
            self._emit(Outcome(inst, kind, result=check.reason))
            return False
        overlap = Overlap.ALLOW if check is None else check.overlap
        active = self._active.setdefault(sid, set())
        if not active or overlap is Overlap.ALLOW:
            active.add(inst.id)
            return True
        previous = min(active)
        waiting = self._waiting.setdefault(sid, deque())
        if check is not None and check.catchup:
            waiting.append(inst)
        elif overlap is Overlap.SKIP:
            self._skip(
                inst, f"overlap=skip: occurrence {previous} of this schedule was still running"
            )
        elif overlap is Overlap.QUEUE:
            if waiting:
                self._skip(
                    inst,
                    f"overlap=queue: occurrence {previous} was still running and "
                    f"{waiting[0].id} already waited for it",
                )
            else:
                waiting.append(inst)
        else:  # CANCEL_PREVIOUS: the newest wins; it starts once the cancelled ones end
            while waiting:
                self._skip(
                    waiting.popleft(),
                    f"overlap=cancel_previous: superseded by occurrence {inst.id}",
                )
            waiting.append(inst)
            for iid in sorted(active):
                self._supersede(iid)
        if not waiting:
            self._waiting.pop(sid, None)
        return False

    def done(self, inst: Instance) -> Instance | None:
        """``inst`` ended (any outcome): the occurrence that may start now, if any."""
        sid = inst.schedule_id
        active = None if sid is None else self._active.get(sid)
        if sid is None or active is None or inst.id not in active:
            return None
        active.discard(inst.id)
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
        out = [inst for waiting in self._waiting.values() for inst in waiting]
        self._waiting.clear()
        return out
