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

The client is pika, the reference AMQP 0-9-1 client for Python, its asynchronous
connection running on a thread of the task's own (:mod:`._amqp_confirms`). No maintained
AMQP client runs on trio (aio-pika and aiormq are asyncio-only; trio-asyncio would put a
second loop on the path of every hand-off, see benchmarks/nats_clients.py for what that
costs). Concurrent runs are handed to the thread as batches (:class:`._batch.Batcher`):
a batch is published back to back and confirmed together (``multiple`` acks), one
crossing and one round trip per batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout
from tickwork.task import Task, current_instance
from tickwork.tasks._amqp_confirms import ConfirmingPublisher, Outgoing
from tickwork.tasks._batch import BatchedHandoff
from tickwork.tasks._handoff import (
    HandoffRetryable,
    check_name,
    check_str_map,
    handoff_id,
    missing_extra,
    params_map,
)
from tickwork.tasks._settings import HandoffSettings
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
        self._handoff: BatchedHandoff[Outgoing, dict[str, Any]]
        self._handoff = BatchedHandoff("AmqpTask", max_batch=max_batch)

    def validate_params(self, params: bytes) -> None:
        AmqpPublish.from_params(params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The task's thread (connecting on first use) and the batch sender."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        _pika()  # the extra is there (a clear error otherwise); connecting waits for a run
        publisher = ConfirmingPublisher(
            self._url, server_of(self._url), name=f"tickwork-amqp-{self.name}"
        )
        try:
            async with self._handoff.serving(publisher.publish):
                yield
        finally:
            with trio.CancelScope(shield=True):
                await publisher.close()

    async def run(self, params: bytes) -> dict[str, Any]:
        """Publish and wait for the broker's confirm; see the module docstring."""
        batcher = self._handoff.running()
        spec = AmqpPublish.from_params(params)
        message = Outgoing(
            spec.exchange,
            spec.routing_key,
            spec.body,
            handoff_id(current_instance()),
            dict(spec.headers) or None,
            spec.content_type,
        )
        return await batcher.submit(message)
