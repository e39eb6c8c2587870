"""Store calls that survive transient faults: retry with backoff, report, give up cleanly.

The node's actors reach the store through a :class:`ResilientStore`. A call that fails
with a transient error (``StoreUnavailable``, SQLite "database is locked" / "disk I/O
error" / "database or disk is full", an ``OSError``) is retried by the calling actor with
exponential backoff and full jitter; meanwhile the node keeps running, logs the
degradation once, and reports it in ``statistics().store``. A store that stays broken for
longer than ``give_up_after`` makes the call raise ``StoreError``, which stops the node
with that message instead of hanging.

The calls of the public API (``schedule``, ``get``, ``abort``...) go through
:attr:`ResilientStore.user_calls` instead: they fail fast with ``StoreUnavailable``
(after ``user_call_retry`` seconds of retrying; at once by default), so that a caller
learns of an outage at once instead of hanging for minutes, while the actors retry.

Retrying is safe because every store call is one transaction: a failed call changed
nothing. Outcome writes are fenced, so a retried write can never overwrite another's.
"""

from __future__ import annotations

import bisect
import copy
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar, final

import attrs
import trio

from tickwork.errors import StoreError, StoreUnavailable
from tickwork.stores._wrapper import StoreWrapper
from tickwork.stores.base import Store

log = logging.getLogger("tickwork.store")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, sqlite3.OperationalError, OSError)


#: Upper bounds (seconds) of the store call latency buckets (``ResilientStore.latency``).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@final
@attrs.define
class CallLatency:
    """How long one kind of store call took, as a histogram (successful calls only).

    ``buckets[i]`` counts calls that took at most ``LATENCY_BUCKETS[i]`` and more than the
    bound before (not cumulative); ``over`` those above the last bound.
    """

    buckets: list[int] = attrs.field(factory=lambda: [0] * len(LATENCY_BUCKETS))
    over: int = 0
    count: int = 0
    total: float = 0.0

    def add(self, seconds: float) -> None:
        i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        if i < len(self.buckets):
            self.buckets[i] += 1
        else:
            self.over += 1
        self.count += 1
        self.total += seconds


@final
@attrs.frozen
class StoreHealth:
    """How the node's store calls are going."""

    healthy: bool
    #: calls that failed (and were retried, or refused a user call), since the node started
    failures: int
    #: seconds the current outage has lasted (0 when healthy)
    degraded_for: float
    last_error: str | None


@attrs.define
class _Outage:
    """What the node's store calls have been through, shared by the actors' calls and the
    user calls (:attr:`ResilientStore.user_calls`)."""

    #: calls that failed (retried or not), since the node started
    failures: int = 0
    #: per call being retried: when it first failed
    failing: dict[object, float] = attrs.field(factory=dict)
    gave_up: bool = False
    last_error: str | None = None
    latency: dict[str, CallLatency] = attrs.field(factory=dict)


@final
class ResilientStore(StoreWrapper):
    """A :class:`Store` wrapper that retries transient failures (see the module doc).

    Every protocol call goes through :meth:`_call` (the forwarding is
    :class:`~tickwork.stores.StoreWrapper`'s).
    """

    def __init__(
        self,
        store: Store,
        *,
        give_up_after: float = 120.0,
        user_call_retry: float = 0.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(store)
        self._give_up_after = give_up_after
        self._base = backoff_base
        self._cap = backoff_cap
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._outage = _Outage()
        #: None for the actors' calls (retried up to ``give_up_after``); for user calls,
        #: how long a call retries before it raises StoreUnavailable
        self._user_limit: float | None = None
        #: The same store for the calls of the public API (``schedule``, ``get``,
        #: ``abort``...): a transient failure raises ``StoreUnavailable`` once the call
        #: has retried for ``user_call_retry`` seconds (at once with 0, the default),
        #: while the actors' calls keep retrying. Health and latency are shared.
        self.user_calls: ResilientStore = copy.copy(self)
        self.user_calls._user_limit = user_call_retry  # noqa: SLF001 - its own twin
        self.user_calls.user_calls = self.user_calls

    def latency(self) -> dict[str, CallLatency]:
        """Per kind of call (``"claim"``, ``"finish"``...): how long its calls took, read
        live (the metrics endpoint copies what it shows)."""
        return self._outage.latency

    def health(self) -> StoreHealth:
        outage = self._outage
        failing = outage.failing
        return StoreHealth(
            healthy=not failing,
            failures=outage.failures,
            degraded_for=trio.current_time() - min(failing.values()) if failing else 0.0,
            last_error=outage.last_error,
        )

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        # The outage is tracked per call being retried: a call that keeps failing while
        # others succeed still gives up after the limit (it is not reset by them), and the
        # node is degraded for as long as any call is.
        delay = self._base
        key = object()
        since: float | None = None
        try:
            while True:
                started = trio.current_time()
                try:
                    result = await fn()
                except TRANSIENT as exc:
                    since = self._failed(what, exc, key, since)
                    await trio.sleep(self._rng.uniform(0, delay))
                    delay = min(self._cap, delay * 2)
                else:
                    hist = self._outage.latency.get(what)
                    if hist is None:
                        hist = self._outage.latency[what] = CallLatency()
                    hist.add(trio.current_time() - started)
                    return result
        finally:
            failing = self._outage.failing
            first = failing.pop(key, None)
            if first is not None and not failing:
                log.warning("store recovered after %.1f s", trio.current_time() - first)

    def _failed(self, what: str, exc: BaseException, key: object, since: float | None) -> float:
        """Note a transient failure of the call ``key``, failing since ``since`` (None: this
        is its first failure), and return since when it fails.

        Raises:
            StoreUnavailable: a user call that has retried long enough (at once by default).
            StoreError: the call has failed for longer than ``give_up_after``: the node
                stops.
        """
        outage = self._outage
        now = trio.current_time()
        outage.failures += 1
        outage.last_error = f"{what}: {type(exc).__name__}: {exc}"
        first = now if since is None else since
        if self._user_limit is not None and (outage.gave_up or now - first >= self._user_limit):
            msg = (
                f"the store is unavailable ({outage.last_error}); the node keeps retrying "
                "its own calls: try again later"
            )
            raise StoreUnavailable(msg) from exc
        if since is None:
            if not outage.failing:
                log.warning("store call %s failed (%s); retrying with backoff", what, exc)
            outage.failing[key] = now
        if outage.gave_up or now - first > self._give_up_after:
            # Once given up, every later failing call (the release on the way out) gives
            # up at once instead of waiting out a new limit.
            outage.gave_up = True
            msg = (
                f"the store has been failing for {now - first:.0f} s "
                f"(last: {outage.last_error}); stopping the node. Fix the store "
                "(disk space, permissions, database server) and start it again"
            )
            raise StoreError(msg) from exc
        return first
