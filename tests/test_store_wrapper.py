"""StoreWrapper forwards every Store protocol method through its one override point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from tests.support.faults import Crashed, FaultyStore
from tests.support.protocol_check import STORE_METHODS, protocol_mismatches
from tickwork.model import Finish, NewRow
from tickwork.node.resilience import ResilientStore
from tickwork.schedules.schedule import new_schedule
from tickwork.schedules.triggers import Interval
from tickwork.state import State
from tickwork.stores import MemoryStore, Store, StoreWrapper

T = TypeVar("T")
S = 1_000_000
NOW = 1_700_000_000 * S


class Recording(StoreWrapper):
    """Records each call that reaches the override point, and what the inner store
    answered."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.seen: list[tuple[str, object]] = []

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        result = await call()
        self.seen.append((method, result))
        return result


#: One call of every protocol method but the life-cycle ones, in an order that makes each
#: do real work on a MemoryStore (an instance to claim, a schedule to pause...).
CALLS: dict[str, Callable[[Store], Awaitable[Any]]] = {
    "insert": lambda s: s.insert([NewRow("t", NOW, b"p"), NewRow("t", NOW, b"q")], NOW),
    "next_pending_at": lambda s: s.next_pending_at(),
    "claim": lambda s: s.claim("me", NOW, 10, NOW, 60 * S),
    "start": lambda s: s.start("me", [(1, 1)], NOW),
    "renew": lambda s: s.renew("me", NOW, 60 * S),
    "request_abort": lambda s: s.request_abort(2, NOW),
    "abort_requests": lambda s: s.abort_requests("me"),
    "finish": lambda s: s.finish(
        "me", [Finish(1, 1, State.SUCCEEDED, 1, started_us=NOW, finished_us=NOW)], NOW
    ),
    "release": lambda s: s.release("me", NOW, [2]),
    "recover": lambda s: s.recover(NOW),
    "get": lambda s: s.get(1),
    "list": lambda s: s.list(state=State.SUCCEEDED, limit=5),
    "count": lambda s: s.count(task="t"),
    "count_by_state": lambda s: s.count_by_state(),
    "history": lambda s: s.history(1),
    "change_token": lambda s: s.change_token(),
    "prune": lambda s: s.prune(NOW - S, 10),  # keeps what is checked below
    "add_schedule": lambda s: s.add_schedule(
        new_schedule("t", Interval(timedelta(hours=1)), schedule_id="h"), NOW
    ),
    "get_schedule": lambda s: s.get_schedule("h"),
    "list_schedules": lambda s: s.list_schedules(limit=5),
    "pause_schedule": lambda s: s.pause_schedule("h", NOW),
    "resume_schedule": lambda s: s.resume_schedule("h", NOW),
    "check_occurrences": lambda s: s.check_occurrences([3], NOW, admit=[3]),
    "remove_schedule": lambda s: s.remove_schedule("h", NOW),
}


def test_the_wrappers_have_every_protocol_method_with_its_signature() -> None:
    for cls in (StoreWrapper, ResilientStore, FaultyStore, Recording):
        assert protocol_mismatches(cls(MemoryStore())) == [], cls


def test_the_signature_check_can_fail() -> None:
    class Drifted(StoreWrapper):
        async def count(self, *, state: State | None = None) -> int:  # type: ignore[override]
            return 0

        def next_pending_at(self) -> int | None:  # type: ignore[override]
            return None

    assert protocol_mismatches(Drifted(MemoryStore())) == [
        "next_pending_at: not an async method",
        (
            "count: [('state', <_ParameterKind.KEYWORD_ONLY: 3>, None)] != "
            "[('state', <_ParameterKind.KEYWORD_ONLY: 3>, None), "
            "('task', <_ParameterKind.KEYWORD_ONLY: 3>, None)]"
        ),
    ]
    assert protocol_mismatches(object()) == [f"{name}: missing" for name in STORE_METHODS]

    class Backwards(StoreWrapper):
        async def granted_lease_us(self, requested_us: int) -> int:
            return requested_us

    from tickwork.stores.cluster import ClusterStore

    assert protocol_mismatches(Backwards(MemoryStore()), ClusterStore) == [
        "record_node: missing",
        "nodes: missing",
        "heartbeat: missing",
        "granted_lease_us: an async method",
        "wait_changed: missing",
    ]


async def test_every_protocol_call_goes_through_the_override_point() -> None:
    """Each protocol method (but ``open``/``aclose``) reaches ``_call`` under its own name,
    and the wrapper returns exactly what the inner store answered."""
    assert set(CALLS) == set(STORE_METHODS) - {"open", "aclose"}
    inner = MemoryStore()
    wrapper = Recording(inner)
    await wrapper.open(node_id="me")
    for name, call in CALLS.items():
        result = await call(wrapper)
        assert wrapper.seen[-1] == (name, result)
        assert wrapper.seen[-1][1] is result
    assert [name for name, _ in wrapper.seen] == list(CALLS)
    # the calls did reach the inner store, with their arguments
    first = await inner.get(1)
    assert first is not None
    assert first.state is State.SUCCEEDED
    assert [a.state for a in await inner.history(1)] == [State.SUCCEEDED]
    assert await inner.get_schedule("h") is None  # removed last
    await wrapper.aclose()


async def test_list_without_where_reaches_a_store_that_predates_it() -> None:
    class Old(MemoryStore):
        async def list(self, *, state=None, task=None, limit=100, before_id=None):  # type: ignore[no-untyped-def,override]
            return await super().list(state=state, task=task, limit=limit, before_id=before_id)

    store = StoreWrapper(Old())
    await store.open()
    await store.insert([NewRow("t", NOW, b"p")], NOW)
    assert [i.task for i in await store.list()] == ["t"]


async def test_faulty_store_passes_other_methods_through_its_gate() -> None:
    from tickwork.stores.postgres import PostgresStore

    store = FaultyStore(PostgresStore("postgresql://unused", lease=timedelta(seconds=2)))
    assert store.granted_lease_us(5 * S) == 2 * S  # a plain method stays plain
    store.crash_now()
    with pytest.raises(Crashed):
        await store.heartbeat("me", S, held=0, running=0)  # an async one meets the gate
    assert store.calls["heartbeat"] == 1
