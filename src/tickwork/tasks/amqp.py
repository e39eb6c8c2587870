"""AmqpTask: publish to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms.

params: ``{"exchange": "jobs", "routing_key": "report.daily", "body": text or bytes}``
(or ``"json"``), optional ``"headers"`` (a map of strings) and ``"content_type"``. The
default exchange ``""`` routes to the queue named by ``routing_key``. Every message is
persistent (``delivery_mode`` 2), mandatory (a message no queue takes is returned, not
dropped), and carries ``message_id`` = ``<instance id>-<attempt>`` for consumers that
drop duplicates. The run succeeds only when the broker confirmed the message.

A connection that fails or a broker nack is :class:`HandoffRetryable`; a message no
queue takes, or an exchange that does not exist, is :class:`HandoffRejected`. The
broker is the node's (``TICKWORK_AMQP_URL``), never the params'.

The client is pika on a thread of the task's own (:class:`._thread.WorkerThread`): pika
is the reference AMQP 0-9-1 client for Python, well kept, and its blocking connection
does publisher confirms without an event loop. No maintained AMQP client runs on trio
(aio-pika and aiormq are asyncio-only; trio-asyncio would put a second loop on the path
of every hand-off, see benchmarks/nats_clients.py for what that costs). Concurrent runs
are handed to the thread as batches (:class:`._batch.Batcher`), one crossing per batch.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.task import Task, current_instance
from tickwork.tasks._batch import Batcher
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_name,
    check_str_map,
    handoff_id,
    missing_extra,
    params_map,
)
from tickwork.tasks._settings import HandoffSettings
from tickwork.tasks._thread import WorkerThread
from tickwork.tasks.redis import server_of

__all__ = ["AmqpPublish", "AmqpTask"]

_KEYS = ("exchange", "routing_key", "body", "json", "headers", "content_type")
#: AMQP 0-9-1 exchange names: letters, digits, - _ . : (at most 255)
_EXCHANGE = re.compile(r"[A-Za-z0-9_.:-]{0,255}")
_EXCHANGE_RULE = "letters, digits and - _ . : (at most 255; '' is the default exchange)"
_ROUTING = re.compile(r"[^\x00-\x1f\x7f]{0,255}")
_ROUTING_RULE = "at most 255 characters without control characters"
_CONTENT_TYPE = re.compile(r"[!-~]{1,255}")


def _pika() -> Any:
    try:
        import pika  # noqa: PLC0415 - the amqp extra, imported on first use
    except ImportError:
        raise missing_extra("pika", "amqp") from None
    return pika


@attrs.frozen
class AmqpPublish:
    """One validated publish."""

    exchange: str
    routing_key: str
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content_type: str | None = None

    @classmethod
    def from_params(cls, params: bytes) -> AmqpPublish:
        """Check the amqp params. Raises InvalidArgument saying what is wrong."""
        raw = params_map("amqp", params, _KEYS)
        exchange = check_name(
            "amqp", "exchange", raw.get("exchange", ""), _EXCHANGE, _EXCHANGE_RULE
        )
        if "routing_key" not in raw and exchange == "":
            raise InvalidArgument(
                "amqp params need 'routing_key' (with the default exchange, the queue name)"
            )
        key = check_name("amqp", "routing_key", raw.get("routing_key", ""), _ROUTING, _ROUTING_RULE)
        if len(key.encode()) > 255:
            raise InvalidArgument("amqp 'routing_key' is longer than 255 bytes")
        if exchange == "" and not key:
            raise InvalidArgument("amqp 'routing_key' must name a queue with the default exchange")
        body, content_type = _body(raw)
        return cls(
            exchange=exchange,
            routing_key=key,
            body=body,
            headers=check_str_map("amqp", "headers", raw.get("headers")),
            content_type=content_type,
        )


def _body(raw: Mapping[str, Any]) -> tuple[bytes, str | None]:
    content_type = raw.get("content_type")
    if content_type is not None and (
        not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type)
    ):
        raise InvalidArgument(f"amqp 'content_type' must be a media type, got {content_type!r}")
    if "body" in raw and "json" in raw:
        raise InvalidArgument("amqp params take 'body' or 'json', not both")
    if "json" in raw:
        try:
            body = json.dumps(raw["json"], separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"amqp 'json' cannot be encoded as JSON ({exc})") from None
        return body, content_type or "application/json"
    value = raw.get("body", b"")
    if not isinstance(value, str | bytes):
        raise InvalidArgument(f"amqp 'body' must be text or bytes, got {value!r}")
    return (value.encode() if isinstance(value, str) else value), content_type


@attrs.frozen
class _Message:
    publish: AmqpPublish
    message_id: str


class _Publisher:
    """The pika connection; used only on the task's thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._channel: Any = None

    def publish_batch(self, batch: list[_Message]) -> list[dict[str, Any] | BaseException]:
        pika = _pika()
        answers: list[dict[str, Any] | BaseException] = []
        for message in batch:
            try:
                answers.append(self._publish(pika, message))
            except pika.exceptions.UnroutableError:
                answers.append(HandoffRejected(f"amqp: no queue took {_describe(message)}"))
            except pika.exceptions.NackError:
                answers.append(HandoffRetryable(f"amqp: the broker refused {_describe(message)}"))
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._channel = None
                answers.append(HandoffRejected(f"amqp: {_describe(message)}: {exc.reply_text}"))
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.close()
                answers.append(
                    HandoffRetryable(f"amqp {server_of(self._url)}: {type(exc).__name__} {exc}")
                )
        return answers

    def _publish(self, pika: Any, message: _Message) -> dict[str, Any]:
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(self._url))
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        spec = message.publish
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            content_type=spec.content_type,
            headers=dict(spec.headers) or None,
        )
        # In confirm mode this returns once the broker confirmed (or raises).
        self._channel.basic_publish(
            spec.exchange, spec.routing_key, spec.body, properties, mandatory=True
        )
        return {"exchange": spec.exchange, "routing_key": spec.routing_key, "confirmed": True}

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):  # it is going away either way
                connection.close()


def _describe(message: _Message) -> str:
    spec = message.publish
    return f"message {message.message_id} to exchange {spec.exchange!r} key {spec.routing_key!r}"


class AmqpTask(Task):
    """Publish to RabbitMQ per run (see the module docstring).

    Args:
        url: the broker (``amqp://user:password@host:port/vhost``); default: the settings'
            (``TICKWORK_AMQP_URL``, else ``amqp://guest:guest@127.0.0.1:5672/%2F``).
        settings: where the default URL comes from (default: the environment).
        max_batch: the most messages handed to the thread at once.
    """

    name: ClassVar[str] = "amqp"
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (HandoffRetryable, TaskTimeout)

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: HandoffSettings | None = None,
        max_batch: int = 256,
    ) -> None:
        self._url = url or (settings or HandoffSettings.from_env()).amqp_url
        self._max_batch = max_batch
        self._batcher: Batcher[_Message, dict[str, Any]] | None = None

    def validate_params(self, params: bytes) -> None:
        AmqpPublish.from_params(params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The task's thread (connecting on first use) and the batch sender."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        # pika is imported on the thread by the first publish.
        publisher = _Publisher(self._url)
        thread = WorkerThread(f"tickwork-amqp-{self.name}")

        async def send(batch: list[_Message]) -> Sequence[dict[str, Any] | BaseException]:
            return await thread.run(lambda: publisher.publish_batch(batch))

        try:
            async with trio.open_nursery() as nursery:
                batcher: Batcher[_Message, dict[str, Any]] = Batcher(
                    send, max_batch=self._max_batch
                )
                await nursery.start(batcher.serve)
                self._batcher = batcher
                try:
                    yield
                finally:
                    self._batcher = None
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await thread.close(publisher.close)

    async def run(self, params: bytes) -> dict[str, Any]:
        """Publish and wait for the broker's confirm; see the module docstring."""
        if self._batcher is None:
            raise TickworkError(
                "AmqpTask runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        spec = AmqpPublish.from_params(params)
        return await self._batcher.submit(_Message(spec, handoff_id(current_instance())))
