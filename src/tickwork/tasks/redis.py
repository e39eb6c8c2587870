"""RedisTask: ``XADD`` to a stream, or ``PUBLISH`` to a channel.

params: ``{"stream": name, "fields": {...}, "maxlen"?: n}`` appends an entry whose fields
are ``fields`` plus ``tickwork-instance`` (the instance id: a consumer drops an entry whose
instance it already handled) and ``tickwork-attempt``; ``{"channel": name, "message":
text or bytes}`` publishes. The server is the node's (``TICKWORK_REDIS_URL``), never the
params'. Concurrent runs share one connection and are sent as pipelined batches, by a
small trio client of the Redis protocol (:mod:`._resp`; why not coredis is said there).

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

from tickwork.errors import InvalidArgument, TaskTimeout
from tickwork.task import Task, current_instance
from tickwork.tasks._batch import BatchedHandoff
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_name,
    params_map,
)
from tickwork.tasks._resp import RespClosed, RespConnection, RespError, connect, encode
from tickwork.tasks._settings import HandoffSettings

__all__ = ["RedisSend", "RedisTask"]

_KEYS = ("stream", "fields", "maxlen", "channel", "message")
#: a stream or channel name: 1-256 printable characters, no spaces
_NAME = re.compile(r"[!-~]{1,256}")
_NAME_RULE = "1-256 printable ASCII characters without spaces"
_FIELD = re.compile(r"[^\x00-\x1f]{1,256}")
INSTANCE_FIELD = "tickwork-instance"
ATTEMPT_FIELD = "tickwork-attempt"


#: seconds a pipelined batch may take before its runs are retryable failures
BATCH_TIMEOUT = 10.0


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
        self._handoff: BatchedHandoff[_Request, dict[str, Any]]
        self._handoff = BatchedHandoff("RedisTask", max_batch=max_batch)
        self._conn: RespConnection | None = None

    def validate_params(self, params: bytes) -> None:
        RedisSend.from_params(params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The batch sender; it connects on the first batch (and again after a failure)."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        try:
            async with self._handoff.serving(self._send_batch):
                yield
        finally:
            if self._conn is not None:
                await self._conn.aclose()  # cancel-safe: closes at once
                self._conn = None

    async def run(self, params: bytes) -> dict[str, Any]:
        """Hand the run off; see the module docstring."""
        batcher = self._handoff.running()
        send = RedisSend.from_params(params)
        inst = current_instance()
        return await batcher.submit(_Request(send, inst.id, inst.attempts + 1))

    async def _send_batch(self, batch: list[_Request]) -> Sequence[dict[str, Any] | BaseException]:
        try:
            with trio.fail_after(BATCH_TIMEOUT):
                if self._conn is None or self._conn.closed:
                    self._conn = await connect(self._url)
                replies = await self._conn.pipeline([_command(request) for request in batch])
        except (RespClosed, trio.TooSlowError) as exc:
            # Whether the server applied none, some or all of the batch is unknown: each run
            # is retryable, and its consumer drops what it already had by instance id.
            why = str(exc) or f"no answer within {BATCH_TIMEOUT:g} s"
            return [HandoffRetryable(f"redis {self._where()}: {why}") for _ in batch]
        answers: list[dict[str, Any] | BaseException] = []
        for request, reply in zip(batch, replies, strict=True):
            if isinstance(reply, RespError):
                answers.append(HandoffRejected(f"redis refused {_describe(request.send)}: {reply}"))
            else:
                answers.append(_result(request.send, reply))
        return answers

    def _where(self) -> str:
        return server_of(self._url)


def server_of(url: str) -> str:
    """``host:port`` of a URL: what an error message may show (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _command(request: _Request) -> bytes:
    send = request.send
    if send.channel is not None:
        return encode(["PUBLISH", send.channel, send.message])
    args: list[str | bytes] = ["XADD", send.stream or ""]
    if send.maxlen is not None:
        args += ["MAXLEN", "~", str(send.maxlen)]
    args.append("*")
    for key, value in send.fields.items():
        args += [key, value]
    args += [INSTANCE_FIELD, str(request.instance_id), ATTEMPT_FIELD, str(request.attempt)]
    return encode(args)


def _result(send: RedisSend, value: Any) -> dict[str, Any]:
    if send.channel is not None:
        return {"channel": send.channel, "receivers": int(value)}
    entry = value.decode() if isinstance(value, bytes) else str(value)
    return {"stream": send.stream, "id": entry}


def _describe(send: RedisSend) -> str:
    return f"PUBLISH {send.channel}" if send.channel is not None else f"XADD {send.stream}"
