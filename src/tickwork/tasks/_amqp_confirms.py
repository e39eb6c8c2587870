"""Publishing with publisher confirms, many in flight: pika's SelectConnection on a thread.

pika's blocking channel waits for each confirm before the next publish (one round trip
per message). Here the asynchronous connection runs its I/O loop on a thread of its own;
a batch of messages is published back to back and each message's answer comes with the
broker's ``basic.ack``/``basic.nack`` for its delivery tag (``multiple`` acks confirm many
at once), so a batch costs one round trip. A message no queue takes comes back
(``basic.return``, before its ack) and is refused. An exchange is checked once
(``exchange.declare`` passive, on a channel of its own) before the first publish to it:
a publish to a missing exchange would close the publishing channel and take the other
messages in flight with it.

Everything below runs on the loop's thread except :meth:`ConfirmingPublisher.publish`
(trio) and :meth:`ConfirmingPublisher.close`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import trio

from tickwork.tasks._handoff import HandoffRejected, HandoffRetryable

__all__ = ["CONFIRM_TIMEOUT", "ConfirmingPublisher", "Outgoing"]

#: seconds a batch waits for the broker's confirms before its runs are retryable failures
CONFIRM_TIMEOUT: Final = 30.0
Answer = dict[str, Any] | BaseException


@attrs.frozen
class Outgoing:
    """One message to publish (persistent, mandatory)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, str] | None = None
    content_type: str | None = None

    def describe(self) -> str:
        return f"message {self.message_id} to exchange {self.exchange!r} key {self.routing_key!r}"


@attrs.define
class _Job:
    batch: Sequence[Outgoing]
    deliver: Callable[[list[Answer]], None]
    answers: list[Answer | None]
    left: int

    def answer(self, index: int, value: Answer) -> None:
        if self.answers[index] is None:
            self.answers[index] = value
            self.left -= 1
            if self.left == 0:
                self.deliver(self.answers)  # type: ignore[arg-type] # all set now


class ConfirmingPublisher:
    """A connection made on first use (and again after it is lost) on its own thread."""

    def __init__(self, url: str, where: str, *, name: str = "tickwork-amqp") -> None:
        import pika  # noqa: PLC0415 - the amqp extra; the task checked it is there
        from pika.adapters.select_connection import IOLoop  # noqa: PLC0415

        self._pika = pika
        self._params = pika.URLParameters(url)
        self._where = where
        self._ioloop = IOLoop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._thread.start()
        # loop-thread state
        self._connection: Any = None
        self._channel: Any = None  # the publishing channel, in confirm mode
        self._checker: Any = None  # the channel exchanges are checked on
        self._opening = False
        self._waiting: list[_Job] = []
        self._tag = 0
        self._pending: dict[int, tuple[_Job, int]] = {}
        self._returned: Counter[str] = Counter()
        self._known: set[str] = {""}  # exchanges that exist ("" always does)
        self._checks: list[tuple[str, list[tuple[_Job, int]]]] = []
        self._stopping = False

    # -- the trio side

    async def publish(self, batch: Sequence[Outgoing]) -> list[Answer]:
        """Publish ``batch``; each message's answer once the broker confirmed it."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[list[Answer]] = []

        def arrived(answers: list[Answer]) -> None:
            box.append(answers)
            done.set()

        def deliver(answers: list[Answer]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(arrived, answers)

        job = _Job(batch, deliver, [None] * len(batch), len(batch))
        self._ioloop.add_callback_threadsafe(lambda: self._submit(job))
        with trio.move_on_after(CONFIRM_TIMEOUT):
            await done.wait()
            return box[0]
        failure = HandoffRetryable(f"amqp {self._where}: no confirm within {CONFIRM_TIMEOUT:g} s")
        return [failure] * len(batch)

    async def close(self) -> None:
        """Close the connection and end the thread."""
        self._ioloop.add_callback_threadsafe(self._shutdown)
        await trio.to_thread.run_sync(self._thread.join, abandon_on_cancel=True)

    # -- the loop's thread

    def _run_loop(self) -> None:
        try:
            self._ioloop.start()
        finally:
            self._ioloop.close()

    def _shutdown(self) -> None:
        self._stopping = True
        if self._connection is not None and not self._connection.is_closed:
            self._connection.close()  # stops the loop once closed
        else:
            self._ioloop.stop()

    def _submit(self, job: _Job) -> None:
        if self._channel is not None and self._channel.is_open:
            self._publish(job)
            return
        self._waiting.append(job)
        if not self._opening:
            self._open()

    def _open(self) -> None:
        self._opening = True
        connection = self._connection
        if connection is None or connection.is_closed:
            self._connection = self._pika.SelectConnection(
                self._params,
                on_open_callback=self._on_connection,
                on_open_error_callback=self._on_connection_failed,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=self._ioloop,
            )
        elif connection.is_open:
            self._on_connection(connection)

    def _on_connection(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready(channel))

    def _ready(self, channel: Any) -> None:
        self._channel, self._tag, self._opening = channel, 0, False
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            self._publish(job)

    def _fail_all(self, error: BaseException) -> None:
        self._opening = False
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            for i in range(len(job.batch)):
                job.answer(i, error)
        pending, self._pending = self._pending, {}
        for job, i in pending.values():
            job.answer(i, error)
        checks, self._checks = self._checks, []
        for _, held in checks:
            for job, i in held:
                job.answer(i, error)

    def _on_connection_failed(self, _connection: Any, error: BaseException) -> None:
        self._channel = self._checker = None
        self._fail_all(HandoffRetryable(f"amqp {self._where}: {type(error).__name__} {error}"))
        if self._stopping:
            self._ioloop.stop()

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._on_connection_failed(_connection, reason)

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._channel:
            return  # closed before it was ready: the connection's close says why
        self._channel = None
        text = getattr(reason, "reply_text", str(reason))
        pending, self._pending = self._pending, {}
        for job, i in pending.values():
            message = job.batch[i]
            if getattr(reason, "reply_code", 0) == 404 and f"'{message.exchange}'" in text:
                self._known.discard(message.exchange)  # deleted since it was checked
                job.answer(i, HandoffRejected(f"amqp: {message.describe()}: {text}"))
            else:
                job.answer(i, HandoffRetryable(f"amqp {self._where}: channel closed: {text}"))
        if self._waiting and not self._stopping:
            self._open()

    # publishing

    def _publish(self, job: _Job) -> None:
        unknown: dict[str, list[tuple[_Job, int]]] = {}
        for i, message in enumerate(job.batch):
            if message.exchange in self._known:
                self._send(job, i)
            else:
                unknown.setdefault(message.exchange, []).append((job, i))
        for exchange, held in unknown.items():
            self._check(exchange, held)

    def _send(self, job: _Job, index: int) -> None:
        message = job.batch[index]
        properties = self._pika.BasicProperties(
            delivery_mode=self._pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            content_type=message.content_type,
            headers=message.headers or None,
        )
        self._tag += 1
        self._pending[self._tag] = (job, index)
        self._channel.basic_publish(
            message.exchange, message.routing_key, message.body, properties, mandatory=True
        )

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self._returned[properties.message_id] += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = type(method).__name__ == "Ack"
        tags = (
            [t for t in self._pending if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            if (item := self._pending.pop(tag, None)) is None:
                continue
            job, i = item
            message = job.batch[i]
            if self._returned[message.message_id]:
                self._returned[message.message_id] -= 1
                if not self._returned[message.message_id]:
                    del self._returned[message.message_id]
                job.answer(i, HandoffRejected(f"amqp: no queue took {message.describe()}"))
            elif acked:
                job.answer(i, {"exchange": message.exchange, "routing_key": message.routing_key,
                               "confirmed": True})  # fmt: skip
            else:
                job.answer(i, HandoffRetryable(f"amqp: the broker refused {message.describe()}"))

    # checking exchanges

    def _check(self, exchange: str, held: list[tuple[_Job, int]]) -> None:
        for name, waiting in self._checks:
            if name == exchange:
                waiting.extend(held)
                return
        self._checks.append((exchange, held))
        if len(self._checks) == 1:
            self._next_check()

    def _next_check(self) -> None:
        if not self._checks:
            return
        if self._checker is None or not self._checker.is_open:
            self._checker = None
            self._connection.channel(on_open_callback=self._on_checker)
            return
        exchange = self._checks[0][0]
        self._checker.exchange_declare(
            exchange, passive=True, callback=lambda _frame: self._checked(exchange, None)
        )

    def _on_checker(self, channel: Any) -> None:
        def closed(_channel: Any, reason: BaseException) -> None:
            self._checker = None
            if self._checks and getattr(reason, "reply_code", 0) == 404:
                self._checked(self._checks[0][0], getattr(reason, "reply_text", str(reason)))

        channel.add_on_close_callback(closed)
        self._checker = channel
        self._next_check()

    def _checked(self, exchange: str, missing: str | None) -> None:
        if not self._checks or self._checks[0][0] != exchange:
            return
        _, held = self._checks.pop(0)
        if missing is None:
            self._known.add(exchange)
        for job, i in held:
            if missing is not None:
                job.answer(i, HandoffRejected(f"amqp: {job.batch[i].describe()}: {missing}"))
            elif self._channel is not None and self._channel.is_open:
                self._send(job, i)
            else:
                job.answer(i, HandoffRetryable(f"amqp {self._where}: the channel closed"))
        self._next_check()
