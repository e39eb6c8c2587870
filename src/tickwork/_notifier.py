"""The notifier actor of :mod:`tickwork.notify` (the settings and the host live there)."""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from tickwork._time import from_us
from tickwork.errors import TickworkError
from tickwork.events import EventsLost, Subscription, TransitionEvent
from tickwork.notify import Notify, NotifyEvent
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.stores.base import Store

__all__ = ["Notifier"]

log = logging.getLogger("tickwork.notify")

_TERMINAL: Final = frozenset({State.SUCCEEDED, State.FAILED, State.ABORTED, State.MISSED})
#: instances remembered as notified (at most once each); older ones are forgotten
_REMEMBERED: Final = 100_000
#: messages waiting to be posted; more are dropped (and counted)
_OUTBOX: Final = 100
#: seconds a schedule's ``notify`` read from the store is used at most before it is read
#: again (a change made through the node or heard of from elsewhere forgets it sooner:
#: this bounds what a store that tells of no change keeps stale)
SCHEDULE_TTL: Final = 60.0


@attrs.frozen
class _Message:
    event: NotifyEvent
    notify: Notify
    inst: TransitionEvent
    suppressed: int


@attrs.define
class _Limit:
    """One key's rate limit, under the setting it was counted for: a schedule replaced
    with another ``notify`` (target or settings) starts a limit of its own."""

    notify: Notify
    next_at: float = 0.0  # trio time before which this key posts nothing
    held: int = 0


class Notifier:
    """The actor: reads the node's events, decides, posts (see :mod:`tickwork.notify`)."""

    def __init__(self, events: Subscription, settings: dict[str, Notify], store: Store) -> None:
        self._events = events
        self._store = store
        self._settings = settings
        self._notified: OrderedDict[int, None] = OrderedDict()
        self._limits: dict[str, _Limit] = {}
        #: per running instance: its overdue deadline, its start event, the setting used
        self._running: dict[int, tuple[float, TransitionEvent, Notify]] = {}
        self._overdue: list[tuple[float, int]] = []  # (trio deadline, instance id)
        self._wake = trio.Event()
        self._stopped = False
        self._outbox, self._inbox = trio.open_memory_channel[_Message](_OUTBOX)
        self.dropped = 0
        #: schedule id -> (its notify, trio time until which that is used)
        self._by_schedule: dict[str, tuple[Notify | None, float]] = {}
        #: counts :meth:`forget` calls: a read that began before one is not kept
        self._forgets = 0

    async def run(self, done: trio.Event) -> None:
        """Until the node's event stream ends, then until every queued notice is posted
        (the host bounds that wait); sets ``done`` then."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._post_loop)
                nursery.start_soon(self._overdue_loop)
                with self._events as events, self._outbox:
                    async for item in events:
                        if isinstance(item, EventsLost):
                            log.warning("notifier fell behind: %d events not seen", item.count)
                        else:
                            self._see(item, await self._setting(item))
                    # the node stopped: no run is overdue any more, and the post loop
                    # ends once the outbox is empty
                    self._stopped = True
                    self._wake.set()
        finally:
            done.set()

    async def _setting(self, ev: TransitionEvent) -> Notify | None:
        """The schedule's own ``notify`` (read from the store, kept until :meth:`forget`
        or :meth:`forget_all`, for at most :data:`SCHEDULE_TTL` seconds), else the task's."""
        sid = ev.schedule_id
        if sid is None:
            return self._settings.get(ev.task)
        now = trio.current_time()
        cached = self._by_schedule.get(sid)
        if cached is None or cached[1] <= now:
            forgets = self._forgets
            try:
                schedule = await self._store.get_schedule(sid)
            except TickworkError as exc:
                log.debug("could not read schedule %r: %s", sid, exc)
                schedule = None
            own = None if schedule is None else schedule.notify
            if len(self._by_schedule) >= _REMEMBERED:
                self._by_schedule.clear()
            cached = (own, now + SCHEDULE_TTL)
            if forgets == self._forgets:  # else it may have been read before a change
                self._by_schedule[sid] = cached
        return cached[0] or self._settings.get(ev.task)

    def forget(self, schedule_id: str) -> None:
        """Read the schedule's ``notify`` from the store at its next event (it was
        stored, replaced or removed through this node)."""
        self._forgets += 1
        self._by_schedule.pop(schedule_id, None)

    def forget_all(self) -> None:
        """Read every schedule's ``notify`` from the store again at its next event
        (another process may have changed schedules)."""
        self._forgets += 1
        self._by_schedule.clear()

    def _see(self, ev: TransitionEvent, notify: Notify | None) -> None:
        if notify is None:
            return
        if ev.to_state is State.RUNNING:
            if notify.overdue_after is not None and "overdue" in notify.on:
                deadline = trio.current_time() + notify.overdue_after.total_seconds()
                self._running[ev.instance_id] = (deadline, ev, notify)
                heapq.heappush(self._overdue, (deadline, ev.instance_id))
                self._wake.set()
            return
        if ev.to_state in _TERMINAL or ev.to_state is State.PENDING:
            self._running.pop(ev.instance_id, None)
        if ev.to_state is State.FAILED and "failed" in notify.on:
            self._queue("failed", notify, ev)
        elif ev.to_state is State.MISSED and "missed" in notify.on:
            self._queue("missed", notify, ev)

    async def _overdue_loop(self) -> None:
        while not self._stopped:
            while self._overdue and self._overdue[0][0] <= trio.current_time():
                deadline, iid = heapq.heappop(self._overdue)
                # only this run's own deadline: a retry of the instance has a later one
                if self._running.get(iid, (None,))[0] == deadline:
                    _, ev, notify = self._running.pop(iid)
                    self._queue("overdue", notify, ev)
            self._wake = trio.Event()
            deadline = self._overdue[0][0] if self._overdue else float("inf")
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def _queue(self, event: NotifyEvent, notify: Notify, ev: TransitionEvent) -> None:
        if ev.instance_id in self._notified:
            return  # at most once per instance
        self._notified[ev.instance_id] = None
        if len(self._notified) > _REMEMBERED:
            self._notified.popitem(last=False)
        # per schedule; one-off instances share their task's limit
        key = f"schedule:{ev.schedule_id}" if ev.schedule_id else f"task:{ev.task}"
        limit = self._limits.get(key)
        if limit is None or limit.notify != notify:
            if limit is not None and limit.held:
                log.info(
                    "%s: its notify changed; %d notices held back under the previous one "
                    "are not counted in the new one's", key, limit.held,
                )  # fmt: skip
            limit = self._limits[key] = _Limit(notify)
        now = trio.current_time()
        if now < limit.next_at:
            limit.held += 1
            return
        limit.next_at = now + notify.min_interval.total_seconds()
        message = _Message(event, notify, ev, limit.held)
        limit.held = 0
        try:
            self._outbox.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1
            log.warning("notice outbox full: dropped the %s notice of %d", event, ev.instance_id)

    async def _post_loop(self) -> None:
        from tickwork.tasks.webhook import post_webhook  # noqa: PLC0415 - needs httpx

        secret = _secret()
        async for message in self._inbox:
            payload = await self._payload(message)
            try:
                await post_webhook(
                    message.notify.url,
                    payload,
                    message_id=f"tickwork-notify-{message.inst.instance_id}",
                    secret=secret,
                    timeout=message.notify.timeout,
                )
            except (TickworkError, OSError) as exc:
                log.warning(
                    "could not post the %s notice of instance %d to %s: %s",
                    message.event,
                    message.inst.instance_id,
                    message.notify.url,
                    exc,
                )

    async def _payload(self, message: _Message) -> dict[str, Any]:
        ev = message.inst
        error = None
        if message.event == "failed":
            try:
                # from the store, not the scheduler: the notice of an outcome recorded
                # while the node stops is written after the scheduler closed
                stored = await self._store.get(ev.instance_id)
            except TickworkError:
                stored = None
            error = None if stored is None else stored.error
        what = {
            "failed": "failed",
            "missed": "was missed",
            "overdue": f"is still running after {message.notify.overdue_after}",
        }[message.event]
        origin = f" (schedule {ev.schedule_id!r})" if ev.schedule_id else ""
        text = f"tickwork: instance {ev.instance_id} of task {ev.task!r}{origin} {what}"
        if error:
            text += f": {error[:500]}"
        if message.suppressed:
            text += f" ({message.suppressed} more notices of this task held back)"
        return {
            "text": text,
            "event": message.event,
            "instance_id": ev.instance_id,
            "task": ev.task,
            "schedule_id": ev.schedule_id,
            "state": ev.to_state.name,
            "error": error,
            "run_at": from_us(ev.run_at_us).isoformat() if ev.run_at_us else None,
            "at": from_us(ev.at_us).isoformat(),
            "node": ev.node,
            "suppressed": message.suppressed,
        }


def _secret() -> str | None:
    from tickwork.tasks import HandoffSettings  # noqa: PLC0415 - a cycle at import time

    return HandoffSettings.from_env().webhook_secret
