"""An in-process store: the whole Store protocol, held in dicts and sorted lists.

Nothing survives the process, but everything else is faithful (claims, leases, fencing,
dedup, history, abort requests), so the actors and tests run against the same contract
as on a durable store. Every method is O(log n) per instance touched: PENDING rows live
in a sorted index by ``(run_at, id)``, held rows in one by lease expiry.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs
import trio

from tickwork.errors import InvalidArgument, StoreLocked
from tickwork.model import (
    LIST_PARAMS_BYTES,
    Attempt,
    Instance,
    InstanceFilter,
    NewRow,
)
from tickwork.state import NEW_STATES, TERMINAL, State
from tickwork.stores.memory._claims import MemoryClaims
from tickwork.stores.memory._schedules import MemoryScheduleMethods
from tickwork.stores.memory._tokens import MemoryTokens

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable, Sequence

    from tickwork.stores.cluster import NodeInfo

__all__ = ["MemoryStore"]


def _listed(inst: Instance) -> Instance:
    """``inst`` as a listing gives it: params over LIST_PARAMS_BYTES left out."""
    if len(inst.params) <= LIST_PARAMS_BYTES:
        return inst
    return attrs.evolve(inst, params=b"", params_size=len(inst.params))


class MemoryStore(MemoryTokens, MemoryScheduleMethods, MemoryClaims):
    """The Store protocol in memory, for tests and for schedulers that need no durability.

    One object is one database: closing and opening it again (a simulated restart) keeps
    its contents. Like a single-node durable store it admits one node at a time.
    ``change_token()`` is None, as nothing else can write to it. Its rows and indexes are
    :class:`~tickwork.stores.memory._rows.MemoryRows`'; the claim life cycle is
    :class:`~tickwork.stores.memory._claims.MemoryClaims`'.
    """

    # -- life ---------------------------------------------------------------------------

    async def open(self, *, node_id: str | None = None) -> None:
        """Open the store; with ``node_id``, as the one node allowed to run on it.

        Raises:
            StoreLocked: another node has it open.
        """
        await trio.lowlevel.checkpoint()
        if node_id is not None:
            if self._node is not None and self._node != node_id:
                raise StoreLocked(
                    f"this MemoryStore is already used by node {self._node!r}; "
                    "close that scheduler first or give this one its own MemoryStore"
                )
            if self._node is None:
                self._nodes.register(node_id)
            self._node = node_id
        self._open = True

    async def aclose(self) -> None:
        """Close the store and release the node lock. Idempotent; the contents stay."""
        await trio.lowlevel.checkpoint()
        if self._node is not None:
            self._nodes.unregister(self._node)
        self._open = False
        self._node = None

    async def record_node(
        self, node_id: str, *, tasks: Sequence[str], max_params_bytes: int
    ) -> None:
        """Record what ``node_id`` runs (see :class:`~tickwork.stores.cluster.NodeRegistry`)."""
        self._check_open()
        await self._nodes.record_node(node_id, tasks=tasks, max_params_bytes=max_params_bytes)

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that opened this store, newest first; alive while open."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._nodes.listing(sum(len(ids) for ids in self._held.values()))

    # -- writes -------------------------------------------------------------------------

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances and return their ids in order; duplicates get the existing id."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        self._check_params(rows)
        for row in rows:
            if row.state not in NEW_STATES:
                raise InvalidArgument(
                    f"a new instance starts PENDING or terminal, not {row.state.name}"
                )
        ids: list[int] = []
        for row in rows:
            fire = None
            if row.schedule_id is not None and row.fire_at_us is not None:
                fire = (row.schedule_id, row.fire_at_us)
            existing = None
            if row.dedup_key is not None:
                existing = self._dedup.get(row.dedup_key)
            if existing is None and fire is not None:
                existing = self._fires.get(fire)
            if existing is not None:
                ids.append(existing)
                continue
            self._last_id += 1
            iid = self._last_id
            self._put(
                Instance(
                    id=iid,
                    task=row.task,
                    run_at_us=row.run_at_us,
                    params=row.params,
                    state=row.state,
                    error=row.error,
                    schedule_id=row.schedule_id,
                    fire_at_us=row.fire_at_us,
                    dedup_key=row.dedup_key,
                    max_attempts=row.max_attempts,
                    timeout_us=row.timeout_us,
                    created_us=now_us,
                    updated_us=now_us,
                )
            )
            if row.dedup_key is not None:
                self._dedup[row.dedup_key] = iid
            if fire is not None:
                self._fires[fire] = iid
            ids.append(iid)
        return ids

    # -- reads --------------------------------------------------------------------------

    async def next_pending_at(self) -> int | None:
        """The earliest ``run_at_us`` of a PENDING row, or None."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return int(self._pending[0][0]) if self._pending else None

    async def get(self, instance_id: int) -> Instance | None:
        """One instance, or None."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return self._rows.get(instance_id)

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> list[Instance]:
        """Instances newest first (id descending), filtered; ``before_id`` pages."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return []
        top = self._last_id + 1 if before_id is None else min(before_id, self._last_id + 1)
        ids: Iterable[int]
        if state is None:
            ids = range(top - 1, 0, -1)  # ids are 1..last_id (minus what prune deleted)
        else:
            ids = self._by_state[state].irange(maximum=top, inclusive=(True, False), reverse=True)
        rows = (r for i in ids if (r := self._rows.get(i)) is not None)
        if task is not None:
            rows = (r for r in rows if r.task == task)
        if where is not None:
            rows = (r for r in rows if where.matches(r))
        return [_listed(r) for r in itertools.islice(rows, limit)]

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return sum(
            n
            for (s, t), n in self._counts.items()
            if (state is None or s is state) and (task is None or t == task)
        )

    async def count_by_state(self) -> dict[State, int]:
        """Stored instances per state, every state present."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        out = dict.fromkeys(State, 0)
        for (s, _), n in self._counts.items():
            out[s] += n
        return out

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """Recorded attempts of one instance, oldest first."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return list(self._history.get(instance_id, ()))

    async def change_token(self) -> int | None:
        """None: nothing outside this process can write to a MemoryStore (no polling)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        return None

    # -- retention ----------------------------------------------------------------------

    async def prune(self, before_us: int, limit: int) -> int:
        """Delete up to ``limit`` terminal instances ended before ``before_us`` and up to
        ``limit`` history rows finished before it. See Store.prune.

        A scan of the terminal rows (this store is for tests and small deployments).
        """
        await trio.lowlevel.checkpoint()
        self._check_open()
        if limit <= 0:
            return 0
        old = sorted(
            (row.updated_us, iid)
            for state in TERMINAL
            for iid in self._by_state[state]
            if (row := self._rows[iid]).updated_us < before_us
        )[:limit]
        for _, iid in old:
            row = self._rows.pop(iid)
            self._by_state[row.state].remove(iid)
            self._counts[(row.state, row.task)] -= 1
            if row.dedup_key is not None and self._dedup.get(row.dedup_key) == iid:
                del self._dedup[row.dedup_key]
            if row.schedule_id is not None and row.fire_at_us is not None:
                fire = (row.schedule_id, row.fire_at_us)
                if self._fires.get(fire) == iid:
                    del self._fires[fire]
        attempts = sorted(
            (a.finished_us, iid, n)
            for iid, rows in self._history.items()
            for n, a in enumerate(rows)
            if a.finished_us < before_us
        )[:limit]
        drop: dict[int, set[int]] = {}
        for _, iid, n in attempts:
            drop.setdefault(iid, set()).add(n)
        for iid, positions in drop.items():
            kept = [a for n, a in enumerate(self._history[iid]) if n not in positions]
            if kept:
                self._history[iid] = kept
            else:
                del self._history[iid]
        return len(old) + len(attempts)
