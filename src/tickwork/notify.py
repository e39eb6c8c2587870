"""Failure notifications: ``Task.notify = Notify(url=...)`` posts a JSON message to a webhook
when an instance of the task fails for good, is MISSED, or runs longer than expected.
A schedule may have a ``notify`` of its own (``add_schedule(..., notify=Notify(...))``,
stored with it), used for its occurrences instead of the task's; the notifier reads it
from the store and keeps what it read until schedules change (for at most
:data:`~tickwork._notifier.SCHEDULE_TTL` seconds): one stored, replaced or removed through
the node is read again at its next event, and every one once the node's Leases actor hears
that another process changed schedules (``SchedulesChanged``: PostgreSQL's notice, or a
change SQLite's poll saw). A node runs the notifier when a task of it has a ``notify``, a
stored schedule had one when it started, a schedule with one is added through it (the
notifier starts then), or it heard of a change elsewhere and finds a stored schedule with
one.

The node's notifier is a small actor of its own, subscribed to the node's event stream
(``scheduler.subscribe()``): it never blocks the Recorder or any other actor (a full
subscription buffer drops events, a full outbox drops messages, both counted and logged).
It outlives the node's drain: the notices of what the node records while it stops are
posted before the node's ``open_scheduler`` block ends (for at most :data:`DRAIN_LIMIT`).
Each instance is notified at most once, and each schedule (or task, for instances not
from a schedule) at most once per ``min_interval`` (the messages it held back are counted
in the next one; a schedule replaced with another ``notify`` starts afresh). The message
is Slack-compatible (``text``) and carries the generic fields beside it; it is posted with
the webhook task's code (Standard Webhooks signature when ``TICKWORK_WEBHOOK_SECRET`` is
set, ``webhook-id`` = ``tickwork-notify-<instance id>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, final
from urllib.parse import urlsplit

import attrs
import trio

from tickwork._time import td_us
from tickwork.errors import InvalidArgument, TickworkError

if TYPE_CHECKING:
    from tickwork._notifier import Notifier
    from tickwork.actors.messages import SchedulesChanged
    from tickwork.node.scheduler import Scheduler
    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.base import Store
    from tickwork.task import Task

__all__ = ["DRAIN_LIMIT", "Notify", "NotifyEvent", "open_notifier"]

log = logging.getLogger("tickwork.notify")

NotifyEvent = Literal["failed", "missed", "overdue"]
_EVENTS: Final = ("failed", "missed", "overdue")
#: seconds the notices still being posted may hold up the end of a node's stop
DRAIN_LIMIT: Final = 10.0
#: seconds a POST of a notice may take unless ``Notify(timeout=...)`` says otherwise
DEFAULT_TIMEOUT: Final = 10.0
#: after a look through the schedules for a ``notify`` that took t seconds, wait this many
#: times t before the next (a node without a notifier spends at most a tenth of its time
#: looking, however many schedules it has and however often other processes write)
_LOOK_PAUSE: Final = 9.0
#: the stored notify settings whose bad timeout was logged (each once), and their bound
_warned: set[str] = set()
_WARNED_LIMIT: Final = 1_000


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


def _timeout_problem(value: object) -> str | None:
    """Why ``value`` is not a usable POST timeout, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of seconds, got {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"must be a finite number of seconds > 0, got {value!r}"
    return None


def _check_timeout(_self: object, _attr: object, value: object) -> None:
    problem = _timeout_problem(value)
    if problem is not None:
        raise InvalidArgument(f"Notify timeout {problem}")


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
        timeout: seconds the POST may take (a finite number > 0).
    """

    url: str = attrs.field(validator=_check_url)
    on: tuple[NotifyEvent, ...] = attrs.field(
        default=("failed", "missed", "overdue"), converter=tuple, validator=_check_on
    )
    overdue_after: timedelta | None = attrs.field(default=None, validator=_check_positive)
    min_interval: timedelta = attrs.field(default=timedelta(minutes=5), validator=_check_positive)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_check_timeout)


def notify_to_json(notify: Notify) -> str:
    """``notify`` as the JSON text a store keeps with a schedule."""
    return json.dumps(
        {
            "url": notify.url,
            "on": list(notify.on),
            "overdue_after_us": None
            if notify.overdue_after is None
            else td_us(notify.overdue_after),
            "min_interval_us": td_us(notify.min_interval),
            "timeout": notify.timeout,
        },
        separators=(",", ":"),
    )


def notify_from_json(text: str) -> Notify:
    """The :class:`Notify` stored as ``text`` by :func:`notify_to_json`.

    A stored timeout that :class:`Notify` refuses (0, negative, NaN, infinite or not a
    number: written before it was checked) reads as :data:`DEFAULT_TIMEOUT`, with a
    warning: a stored schedule never keeps a node from starting nor a listing from being
    read.
    """
    d = json.loads(text)
    overdue = d.get("overdue_after_us")
    return Notify(
        url=d["url"],
        on=tuple(d["on"]),
        overdue_after=None if overdue is None else timedelta(microseconds=overdue),
        min_interval=timedelta(microseconds=d["min_interval_us"]),
        timeout=_stored_timeout(d.get("timeout"), d["url"]),
    )


def _stored_timeout(raw: object, url: object) -> float:
    """A stored notify's timeout, or :data:`DEFAULT_TIMEOUT` (logged) for one it refuses."""
    value = raw
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        with contextlib.suppress(ValueError):
            value = float(raw)  # how the unchecked setting was read before
    problem = _timeout_problem(value)
    if isinstance(value, float) and problem is None:
        return value
    said = f"a stored notify (url {url!r}): its timeout {problem}"
    if said not in _warned:  # once per process: such a row is read at every event
        if len(_warned) >= _WARNED_LIMIT:
            _warned.clear()
        _warned.add(said)
        log.warning("%s; using %g s", said, DEFAULT_TIMEOUT)
    return DEFAULT_TIMEOUT


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


@final
class NotifierHost:
    """Where the notifier runs: opened around the node, so it outlives the node's drain."""

    def __init__(self, nursery: trio.Nursery, settings: dict[str, Notify], store: Store) -> None:
        self._nursery = nursery
        self._settings = settings
        self._store = store
        self.done = trio.Event()
        self.done.set()  # nothing to wait for until a notifier runs
        #: a stored schedule has a ``notify`` of its own (found when the node started)
        self.schedules = False
        self._scheduler: Scheduler | None = None
        self._watching = trio.Event()
        self._notifier: Notifier | None = None

    def watch(self, scheduler: Scheduler) -> None:
        """Start notifying about ``scheduler``'s events (nothing if no task asks: then
        the first schedule with a ``notify`` stored through it, or heard of, starts the
        notifier)."""
        self._scheduler = scheduler
        self._watching.set()
        if self._settings or self.schedules:
            self._start(scheduler)

    def hear_changes(self) -> trio.MemorySendChannel[SchedulesChanged]:
        """The channel on which the node's Leases actor tells of schedules changed by
        another process (``SchedulesChanged``; it closes it when it stops)."""
        from tickwork.actors.messages import SchedulesChanged  # noqa: PLC0415 - a cycle

        send, receive = trio.open_memory_channel[SchedulesChanged](1)
        self._nursery.start_soon(self._hear, receive)
        return send

    async def _hear(self, receive: trio.MemoryReceiveChannel[SchedulesChanged]) -> None:
        """Schedules changed elsewhere: a running notifier reads each schedule's
        ``notify`` again at its next event; without one, look for a schedule that has a
        ``notify`` now, and start the notifier if one does."""
        async with receive:
            async for _changed in receive:
                await self._watching.wait()
                if self._notifier is not None:
                    self._notifier.forget_all()
                    continue
                began = trio.current_time()
                try:
                    found = await _any_schedule_notifies(self._store)
                except TickworkError as exc:
                    log.warning("could not look for schedules with a notify: %s", exc)
                    found = False
                scheduler = self._scheduler
                if found and self._notifier is None and scheduler and not scheduler.closed:
                    log.info("a schedule with a notify was stored elsewhere: notifying")
                    self.schedules = True
                    self._start(scheduler)
                await trio.sleep(_LOOK_PAUSE * (trio.current_time() - began))

    def storing(self, schedule: Schedule) -> None:
        """``schedule`` is about to be stored through the node: if it has a ``notify``
        and no notifier runs, start one now, subscribed before its first occurrence can
        run."""
        if schedule.notify is None or self._notifier is not None:
            return
        self.schedules = True
        if self._scheduler is not None and not self._scheduler.closed:
            self._start(self._scheduler)

    def stored(self, schedule_id: str) -> None:
        """The schedule was stored, replaced or removed through the node: the notifier
        reads its ``notify`` again at its next event instead of using what it kept."""
        if self._notifier is not None:
            self._notifier.forget(schedule_id)

    def _start(self, scheduler: Scheduler) -> None:
        from tickwork._notifier import Notifier  # noqa: PLC0415 - a cycle at import time

        # subscribed here, before the caller runs anything, so no event is missed
        notifier = Notifier(scheduler.subscribe(), self._settings, self._store)
        self._notifier = notifier
        self.done = trio.Event()
        self._nursery.start_soon(notifier.run, self.done)


async def _any_schedule_notifies(store: Store) -> bool:
    """Whether a stored schedule has a ``notify`` of its own (a page of schedules at a
    time; a node without any runs no notifier, so its events cost nothing more)."""
    after: str | None = None
    while True:
        page = await store.list_schedules(limit=1_000, after_id=after)
        if any(s.notify is not None for s in page):
            return True
        if len(page) < 1_000:
            return False
        after = page[-1].id


@asynccontextmanager
async def open_notifier(tasks: Iterable[Task], store: Store) -> AsyncIterator[NotifierHost]:
    """The notifier's host; :meth:`NotifierHost.watch` starts it on a node. Leave the block
    after the node has stopped: the notices of its last outcomes are posted first (for at
    most :data:`DRAIN_LIMIT` seconds), unless the block ends with an exception."""
    settings = notify_settings(tasks)
    async with trio.open_nursery() as nursery:
        host = NotifierHost(nursery, settings, store)
        host.schedules = await _any_schedule_notifies(store)
        try:
            yield host
        except BaseException:
            nursery.cancel_scope.cancel()
            raise
        # the node's event stream ended with the Recorder's last write: post what is left
        with trio.move_on_after(DRAIN_LIMIT):
            await host.done.wait()
        nursery.cancel_scope.cancel()
