"""Upcoming instances apart from the history: one listing for the API, the CLI and the UI.

*Upcoming* at a time T is what is still to come: PENDING or CLAIMED and due at or after T.
The *history* is every other instance (ended, running, or overdue). A per-second schedule
materialises occurrences ahead of time; listing them apart keeps them from swamping what
already happened.

Upcoming is listed as two store pages (PENDING, CLAIMED), each through its own index, and
merged newest first: a few upcoming rows among millions of ended ones are found without
walking the ended ones. The history is one page with the condition
``NOT (state IN (PENDING, CLAIMED) AND run_at >= T)``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import attrs

from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.model import Instance, InstanceFilter
    from tickwork.stores.base import Store

__all__ = ["list_instances"]

_UPCOMING = (State.PENDING, State.CLAIMED)


async def list_instances(
    store: Store,
    *,
    state: State | None,
    task: str | None,
    limit: int,
    before_id: int | None,
    where: InstanceFilter,
    upcoming: bool | None,
    now_us: int,
) -> list[Instance]:
    """A page of instances newest first; ``upcoming`` True/False splits it at ``now_us``
    (None: every instance)."""
    if upcoming is None:
        return await _page(store, state, task, limit, before_id, where)
    if not upcoming:
        history = attrs.evolve(where, history_at_us=now_us)
        return await _page(store, state, task, limit, before_id, history)
    due_from = now_us if where.due_from_us is None else max(now_us, where.due_from_us)
    ahead = attrs.evolve(where, due_from_us=due_from)
    pages = [
        await _page(store, s, task, limit, before_id, ahead)
        for s in _UPCOMING
        if state is None or state is s
    ]
    merged = heapq.merge(*pages, key=lambda inst: -inst.id)
    return [inst for _, inst in zip(range(limit), merged, strict=False)]


async def _page(  # noqa: PLR0917 - Store.list's filters, in its order
    store: Store,
    state: State | None,
    task: str | None,
    limit: int,
    before_id: int | None,
    where: InstanceFilter,
) -> list[Instance]:
    # A filter that filters nothing is left out: the stores' plain path is their fastest.
    empty = where == type(where)()
    return await store.list(
        state=state, task=task, limit=limit, before_id=before_id, where=None if empty else where
    )
