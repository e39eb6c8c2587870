"""Failure notifications: ``Task.notify = Notify(url=...)`` posts a JSON message to a webhook
when an instance of the task fails for good, is MISSED, or runs longer than expected.

The node's notifier is a small actor of its own, subscribed to the node's event stream
(``scheduler.subscribe()``): it never blocks the Recorder or any other actor (a full
subscription buffer drops events, a full outbox drops messages, both counted and logged).
Each instance is notified at most once, and each task at most once per ``min_interval``
(the messages it held back are counted in the next one). The message is Slack-compatible
(``text``) and carries the generic fields beside it; it is posted with the webhook task's
code (Standard Webhooks signature when ``TICKWORK_WEBHOOK_SECRET`` is set, ``webhook-id``
= ``tickwork-notify-<instance id>``).
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, final
from urllib.parse import urlsplit

import attrs
import trio

from tickwork._time import from_us
from tickwork.errors import InvalidArgument, TickworkError
from tickwork.events import EventsLost, TransitionEvent
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.node.scheduler import Scheduler
    from tickwork.task import Task

__all__ = ["Notify", "NotifyEvent"]

log = logging.getLogger("tickwork.notify")

NotifyEvent = Literal["failed", "missed", "overdue"]
_EVENTS: Final = ("failed", "missed", "overdue")
_TERMINAL: Final = frozenset({State.SUCCEEDED, State.FAILED, State.ABORTED, State.MISSED})
#: instances remembered as notified (at most once each); older ones are forgotten
_REMEMBERED: Final = 100_000
#: messages waiting to be posted; more are dropped (and counted)
_OUTBOX: Final = 100


def _check_url(_self: object, _attr: object, url: Any) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidArgument(f"Notify url must be an http:// or https:// URL, got {url!r}")


def _check_on(_self: object, _attr: object, on: tuple[str, ...]) -> None:
    unknown = [e for e in on if e not in _EVENTS]
    if unknown or not on:
        raise InvalidArgument(
            f"Notify on must be a non-empty list of {', '.join(_EVENTS)}; got {list(on)!r}"
        )


def _check_positive(_self: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is None and attr.name == "overdue_after":
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidArgument(f"Notify {attr.name} must be a timedelta > 0, got {value!r}")


@final
@attrs.frozen
class Notify:
    """Where and when to post a notification about a task's instances.

    Args:
        url: the webhook to POST to (a Slack incoming webhook, or any JSON receiver).
        on: which events notify: ``"failed"`` (failed for good, after its last attempt),
            ``"missed"`` (skipped by its schedule's misfire policy), ``"overdue"`` (still
            running ``overdue_after`` after it started).
        overdue_after: how long a run is expected to take at most; None: no overdue notice.
        min_interval: at most one message per task in this interval; the ones held back
            are counted in the next message (``suppressed``).
        timeout: seconds the POST may take.
    """

    url: str = attrs.field(validator=_check_url)
    on: tuple[NotifyEvent, ...] = attrs.field(
        default=("failed", "missed", "overdue"), converter=tuple, validator=_check_on
    )
    overdue_after: timedelta | None = attrs.field(default=None, validator=_check_positive)
    min_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_check_positive)
    timeout: float = 10.0


def notify_settings(tasks: Iterable[Task]) -> dict[str, Notify]:
    """Each task's ``notify`` by task name (tasks without one left out).

    Raises:
        InvalidArgument: a task's ``notify`` is not a :class:`Notify`.
    """
    return {task.name: n for task in tasks if (n := _notify_of(task)) is not None}


def _notify_of(task: Task) -> Notify | None:
    setting = getattr(task, "notify", None)
    if setting is not None and not isinstance(setting, Notify):
        raise InvalidArgument(
            f"task {task.name!r}: notify must be a tickwork.Notify or None, got {setting!r}"
        )
    return setting


@attrs.frozen
class _Message:
    event: NotifyEvent
    notify: Notify
    inst: TransitionEvent
    suppressed: int


@attrs.define
class _Limit:
    next_at: float = 0.0  # trio time before which this key posts nothing
    held: int = 0


@asynccontextmanager
async def run_notifier(scheduler: Scheduler, tasks: Iterable[Task]) -> AsyncIterator[None]:
    """Run the notifier beside the node while the block runs (nothing if no task asks)."""
    settings = notify_settings(tasks)
    if not settings:
        yield
        return
    notifier = _Notifier(scheduler, settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


class _Notifier:
    def __init__(self, scheduler: Scheduler, settings: dict[str, Notify]) -> None:
        self._scheduler = scheduler
        self._settings = settings
        self._notified: OrderedDict[int, None] = OrderedDict()
        self._limits: dict[str, _Limit] = {}
        self._running: dict[int, tuple[float, TransitionEvent]] = {}  # (deadline, start)
        self._overdue: list[tuple[float, int]] = []  # (trio deadline, instance id)
        self._wake = trio.Event()
        self._outbox, self._inbox = trio.open_memory_channel[_Message](_OUTBOX)
        self.dropped = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scheduler.subscribe() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._post_loop)
                nursery.start_soon(self._overdue_loop)
                task_status.started()
                async for item in events:
                    if isinstance(item, EventsLost):
                        log.warning("notifier fell behind: %d events not seen", item.count)
                    else:
                        self._see(item)

    def _see(self, ev: TransitionEvent) -> None:
        notify = self._settings.get(ev.task)
        if notify is None:
            return
        if ev.to_state is State.RUNNING:
            if notify.overdue_after is not None and "overdue" in notify.on:
                deadline = trio.current_time() + notify.overdue_after.total_seconds()
                self._running[ev.instance_id] = (deadline, ev)
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
        while True:
            while self._overdue and self._overdue[0][0] <= trio.current_time():
                deadline, iid = heapq.heappop(self._overdue)
                # only this run's own deadline: a retry of the instance has a later one
                if self._running.get(iid, (None,))[0] == deadline:
                    _, ev = self._running.pop(iid)
                    self._queue("overdue", self._settings[ev.task], ev)
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
        limit = self._limits.setdefault(key, _Limit())
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
                error = (await self._scheduler.get(ev.instance_id)).error
            except TickworkError:
                error = None
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
