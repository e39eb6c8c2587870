"""RedisTask: ``XADD`` to a stream, or ``PUBLISH`` to a channel, with coredis.

params: ``{"stream": name, "fields": {...}, "maxlen"?: n}`` appends an entry whose fields
are ``fields`` plus ``tickwork-instance`` (the instance id: a consumer drops an entry whose
instance it already handled) and ``tickwork-attempt``; ``{"channel": name, "message":
text or bytes}`` publishes. The server is the node's (``TICKWORK_REDIS_URL``), never the
params'. Concurrent runs share one connection and are sent as pipelined batches.

A connection that fails or a timeout is :class:`HandoffRetryable`; an error answer
(``WRONGTYPE``: the key is not a stream) is :class:`HandoffRejected`. The result is
``{"stream", "id"}`` or ``{"channel", "receivers"}``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.task import Task, current_instance
from tickwork.tasks._batch import Batcher
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_name,
    missing_extra,
    params_map,
)
from tickwork.tasks._settings import HandoffSettings

__all__ = ["RedisSend", "RedisTask"]

_KEYS = ("stream", "fields", "maxlen", "channel", "message")
#: a stream or channel name: 1-256 printable characters, no spaces
_NAME = re.compile(r"[!-~]{1,256}")
_NAME_RULE = "1-256 printable ASCII characters without spaces"
_FIELD = re.compile(r"[^\x00-\x1f]{1,256}")
INSTANCE_FIELD = "tickwork-instance"
ATTEMPT_FIELD = "tickwork-attempt"


def _coredis() -> Any:
    try:
        import coredis  # noqa: PLC0415 - the redis extra, imported on first use
    except ImportError:
        raise missing_extra("coredis", "redis") from None
    return coredis


@attrs.frozen
class RedisSend:
    """One validated hand-off: an XADD (``stream``) or a PUBLISH (``channel``)."""

    stream: str | None = None
    fields: Mapping[str, str | bytes] = attrs.field(factory=dict)
    maxlen: int | None = None
    channel: str | None = None
    message: str | bytes = b""

    @classmethod
    def from_params(cls, params: bytes) -> RedisSend:
        """Check the redis params. Raises InvalidArgument saying what is wrong."""
        raw = params_map("redis", params, _KEYS)
        if ("stream" in raw) == ("channel" in raw):
            raise InvalidArgument(
                "redis params need exactly one of 'stream' (XADD) or 'channel' (PUBLISH)"
            )
        if "channel" in raw:
            if "fields" in raw or "maxlen" in raw:
                raise InvalidArgument("redis 'fields' and 'maxlen' go with 'stream', not 'channel'")
            message = raw.get("message", b"")
            if not isinstance(message, str | bytes):
                raise InvalidArgument(f"redis 'message' must be text or bytes, got {message!r}")
            return cls(channel=check_name("redis", "channel", raw["channel"], _NAME, _NAME_RULE),
                       message=message)  # fmt: skip
        if "message" in raw:
            raise InvalidArgument("redis 'message' goes with 'channel'; a stream takes 'fields'")
        return cls(
            stream=check_name("redis", "stream", raw["stream"], _NAME, _NAME_RULE),
            fields=_check_fields(raw.get("fields")),
            maxlen=_check_maxlen(raw.get("maxlen")),
        )


def _check_fields(value: object) -> dict[str, str | bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"redis 'fields' must be a map of names to values, got {value!r}")
    fields: dict[str, str | bytes] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _FIELD.fullmatch(key):
            raise InvalidArgument(f"redis field name {key!r} must be 1-256 characters")
        if key in (INSTANCE_FIELD, ATTEMPT_FIELD):
            raise InvalidArgument(f"redis field {key!r} is set by tickwork; rename yours")
        if isinstance(item, bool) or not isinstance(item, str | bytes | int | float):
            raise InvalidArgument(
                f"redis field {key!r} must be text, bytes or a number, got {item!r}"
            )
        fields[key] = item if isinstance(item, str | bytes) else str(item)
    return fields


def _check_maxlen(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"redis 'maxlen' must be an integer >= 1, got {value!r}")
    return value


@attrs.frozen
class _Request:
    send: RedisSend
    instance_id: int
    attempt: int


class RedisTask(Task):
    """XADD or PUBLISH per run (see the module docstring).

    Args:
        url: the server (``redis://host:port/db``, ``rediss://`` for TLS); default: the
            settings' (``TICKWORK_REDIS_URL``, else ``redis://127.0.0.1:6379/0``).
        settings: where the default URL comes from (default: the environment).
        max_batch: the most commands pipelined in one round trip.
    """

    name: ClassVar[str] = "redis"
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (HandoffRetryable, TaskTimeout)

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: HandoffSettings | None = None,
        max_batch: int = 512,
    ) -> None:
        self._url = url or (settings or HandoffSettings.from_env()).redis_url
        self._max_batch = max_batch
        self._batcher: Batcher[_Request, dict[str, Any]] | None = None
        self._client: Any = None
        self._nursery: trio.Nursery | None = None
        self._starting = trio.Lock()

    def validate_params(self, params: bytes) -> None:
        RedisSend.from_params(params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """A nursery for the client and the batch sender, both started (and coredis
        imported) by the first run."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = self._batcher = None
                nursery.cancel_scope.cancel()

    async def _sender(self) -> Batcher[_Request, dict[str, Any]]:
        if self._nursery is None:
            raise TickworkError(
                "RedisTask runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        ready = self._batcher
        if ready is not None:
            return ready  # no lock on the common path (see NatsTask._connection)
        async with self._starting:
            if self._batcher is None:
                await self._nursery.start(self._serve)
        assert self._batcher is not None  # noqa: S101 - set by _serve before started()
        return self._batcher

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        client = _coredis().Redis.from_url(self._url)  # connects on first use
        async with client, trio.open_nursery() as nursery:
            self._client = client
            batcher: Batcher[_Request, dict[str, Any]]
            batcher = Batcher(self._send_batch, max_batch=self._max_batch)
            await nursery.start(batcher.serve)
            self._batcher = batcher
            task_status.started()
            await trio.sleep_forever()

    async def run(self, params: bytes) -> dict[str, Any]:
        """Hand the run off; see the module docstring."""
        sender = await self._sender()
        send = RedisSend.from_params(params)
        inst = current_instance()
        return await sender.submit(_Request(send, inst.id, inst.attempts + 1))

    async def _send_batch(self, batch: list[_Request]) -> Sequence[dict[str, Any] | BaseException]:
        coredis = _coredis()
        errors = coredis.exceptions
        try:
            async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                pending = [_queue(pipe, request) for request in batch]
        except Exception as exc:  # noqa: BLE001 - a connection failure, maybe in a group
            # Whether the server applied none, some or all of the batch is unknown: each run
            # is retryable, and its consumer drops what it already had by instance id.
            return [HandoffRetryable(f"redis {self._where()}: {exc!r}") for _ in batch]
        answers: list[dict[str, Any] | BaseException] = []
        for request, reply in zip(batch, pending, strict=True):
            try:
                value = await reply
            except (errors.ConnectionError, TimeoutError) as exc:
                answers.append(HandoffRetryable(f"redis {self._where()}: {exc!r}"))
            except errors.RedisError as exc:
                answers.append(HandoffRejected(f"redis refused {_describe(request.send)}: {exc}"))
            else:
                answers.append(_result(request.send, value))
        return answers

    def _where(self) -> str:
        return server_of(self._url)


def server_of(url: str) -> str:
    """``host:port`` of a URL: what an error message may show (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _queue(pipe: Any, request: _Request) -> Any:
    send = request.send
    if send.channel is not None:
        return pipe.publish(send.channel, send.message)
    fields: dict[str, str | bytes] = {
        **send.fields,
        INSTANCE_FIELD: str(request.instance_id),
        ATTEMPT_FIELD: str(request.attempt),
    }
    if send.maxlen is None:
        return pipe.xadd(send.stream, fields)
    coredis = _coredis()
    return pipe.xadd(
        send.stream,
        fields,
        trim_strategy=coredis.PureToken.MAXLEN,
        threshold=send.maxlen,
        trim_operator=coredis.PureToken.APPROXIMATELY,
    )


def _result(send: RedisSend, value: Any) -> dict[str, Any]:
    if send.channel is not None:
        return {"channel": send.channel, "receivers": int(value)}
    entry = value.decode() if isinstance(value, bytes) else str(value)
    return {"stream": send.stream, "id": entry}


def _describe(send: RedisSend) -> str:
    return f"PUBLISH {send.channel}" if send.channel is not None else f"XADD {send.stream}"
