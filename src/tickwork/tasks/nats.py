"""NatsTask: publish to NATS JetStream and wait for the stream's ack.

params: ``{"subject": "jobs.report", "data": text or bytes}`` (or ``"json"``: any value,
sent as JSON), optional ``"headers"`` and ``"timeout"`` (seconds to wait for the ack,
default 5). The message carries ``Nats-Msg-Id: <instance id>-<attempt>``, so the
stream's duplicate window drops a run repeated after a crash. The server is the node's
(``TICKWORK_NATS_URL``), never the params'.

The run succeeds when a stream stored the message (the result is ``{"stream", "seq",
"duplicate"}``). No ack in time, a lost connection or a stream that is temporarily
unavailable is :class:`HandoffRetryable`; no stream for the subject, a stream that
refused the message, or a message over the server's ``max_payload`` (the server would drop
the connection, and every publish in flight with it) is :class:`HandoffRejected`.

The client is a small trio client of the NATS protocol (:mod:`._nats_client`); why not
nats-py through trio-asyncio is measured in ``benchmarks/nats_clients.py`` and said in
``pyproject.toml``. Concurrent runs share one connection: their publishes are written
together and their acks come back on one reply subscription, so a run costs its frame,
one park and its ack, and the round trip is paid once per batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, NamedTuple

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.model import unpack
from tickwork.task import Task, current_instance
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_name,
    check_str_map,
    check_timeout,
    handoff_id,
    params_map,
)
from tickwork.tasks._nats_client import (
    NatsClosed,
    NatsConnection,
    NatsTooLarge,
    connect,
    header_block,
)
from tickwork.tasks._settings import HandoffSettings
from tickwork.tasks.redis import server_of

__all__ = ["NatsPublish", "NatsTask"]

_KEYS = ("subject", "data", "json", "headers", "timeout")
_KEY_SET = frozenset(_KEYS)
#: params kept checked (see NatsTask._frame): at most this many, each at most this large
_CACHED = 256
_CACHED_SIZE = 4096
#: dot-separated tokens of printable ASCII, no wildcards (a publish names one subject)
_WORD = r"[!-)+,\-/-=?-~]+"  # printable ASCII but . * >
_SUBJECT = re.compile(rf"{_WORD}(\.{_WORD})*")
_SUBJECT_RULE = "dot-separated tokens of printable characters, without spaces or * >"
_HEADER = re.compile(r"[!-9;-~]+")  # a token: printable, no ':'
DEFAULT_TIMEOUT = 5.0
MSG_ID = "Nats-Msg-Id"
#: JetStream API error codes worth retrying (503: JetStream temporarily unavailable)
_RETRYABLE_CODES = frozenset({503, 408})
#: the header block of a publish without headers of its own, up to the Nats-Msg-Id value
_HEAD = b"NATS/1.0\r\n%s: " % MSG_ID.encode()
_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps(...) builds one per call
#: a plain ack as nats-server writes it (anything else goes through json.loads)
_ACK = re.compile(
    rb'\{"stream":"([^"\\]*)",\s*(?:"domain":"[^"\\]*",\s*)?"seq":(\d+)(,\s*"duplicate":\s*true)?\}'
)


@attrs.frozen
class NatsPublish:
    """One validated publish."""

    subject: str
    payload: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_params(cls, params: bytes) -> NatsPublish:
        """Check the nats params. Raises InvalidArgument saying what is wrong."""
        try:
            raw = unpack(params)
        except Exception:  # noqa: BLE001 - msgpack raises several kinds; said below
            raw = None
        if type(raw) is not dict or not raw.keys() <= _KEY_SET:
            raw = params_map("nats", params, _KEYS)  # raises, saying what is wrong
        if "subject" not in raw:
            raise InvalidArgument("nats params need 'subject', e.g. 'jobs.report'")
        subject = raw["subject"]
        if isinstance(subject, str) and len(subject) > 256:
            raise InvalidArgument("nats 'subject' is longer than 256 characters")
        check_name("nats", "subject", subject, _SUBJECT, _SUBJECT_RULE)
        if "data" in raw and "json" in raw:
            raise InvalidArgument("nats params take 'data' or 'json', not both")
        payload = b""
        if "json" in raw:
            try:
                payload = _JSON.encode(raw["json"]).encode()
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"nats 'json' cannot be encoded as JSON ({exc})") from None
        elif "data" in raw:
            data = raw["data"]
            if not isinstance(data, str | bytes):
                raise InvalidArgument(f"nats 'data' must be text or bytes, got {data!r}")
            payload = data.encode() if isinstance(data, str) else data
        return cls(
            subject=subject,
            payload=payload,
            headers=_check_headers(raw.get("headers")),
            timeout=check_timeout("nats", raw.get("timeout"), DEFAULT_TIMEOUT),
        )


def _check_headers(value: object) -> dict[str, str]:
    headers = check_str_map("nats", "headers", value)
    for name, text in headers.items():
        if not _HEADER.fullmatch(name) or any(c in text for c in "\r\n"):
            raise InvalidArgument(f"nats header {name!r}: {text!r} is not a valid header")
        if name.lower() == MSG_ID.lower():
            raise InvalidArgument(f"nats header {MSG_ID!r} is set by tickwork; remove it")
    return headers


class _Frame(NamedTuple):
    """What a publish of one params sends, but its Nats-Msg-Id value."""

    subject: str
    subject_bytes: bytes
    head: bytes  # the header block up to the Nats-Msg-Id value
    payload: bytes
    timeout: float

    @classmethod
    def of(cls, params: bytes) -> _Frame:
        spec = NatsPublish.from_params(params)
        head = header_block(spec.headers) + MSG_ID.encode() + b": " if spec.headers else _HEAD
        return cls(spec.subject, spec.subject.encode(), head, spec.payload, spec.timeout)


class NatsTask(Task):
    """Publish to JetStream per run (see the module docstring).

    Args:
        url: the server (``nats://[user:password@]host:port``); default: the settings'
            (``TICKWORK_NATS_URL``, else ``nats://127.0.0.1:4222``).
        settings: where the default URL comes from (default: the environment).
    """

    name: ClassVar[str] = "nats"
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (HandoffRetryable, TaskTimeout)

    def __init__(self, url: str | None = None, *, settings: HandoffSettings | None = None) -> None:
        self._url = url or (settings or HandoffSettings.from_env()).nats_url
        self._where = server_of(self._url)
        self._nursery: trio.Nursery | None = None
        self._conn: NatsConnection | None = None
        self._connecting = trio.Lock()
        self._frames: dict[bytes, _Frame] = {}

    def validate_params(self, params: bytes) -> None:
        self._frame(params)

    def _frame(self, params: bytes) -> _Frame:
        """The checked frame of ``params``, from the cache when recently seen.

        A node checks params when they are scheduled and again when they run, and a
        schedule runs the same params each time: the last few small ones are kept
        (params are bytes, so an entry cannot go stale).
        """
        frame = self._frames.get(params)
        if frame is None:
            frame = _Frame.of(params)
            if len(params) <= _CACHED_SIZE:
                if len(self._frames) >= _CACHED:
                    del self._frames[next(iter(self._frames))]  # the oldest
                self._frames[params] = frame
        return frame

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """A nursery for the connection, made on first use and again after it is lost."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                self._conn = None
                nursery.cancel_scope.cancel()

    async def _connection(self) -> NatsConnection:
        if self._nursery is None:
            raise TickworkError(
                "NatsTask runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        conn = self._conn
        if conn is not None and not conn.closed:
            # no lock on the common path: a trio.Lock is held across a checkpoint, so a
            # thousand runs taking it in turn hand off one per pass of the scheduler
            return conn
        async with self._connecting:
            if self._conn is None or self._conn.closed:
                self._conn = await connect(self._url, self._nursery)
            return self._conn

    async def run(self, params: bytes) -> dict[str, Any]:
        """Publish and wait for the ack; see the module docstring."""
        frame = self._frame(params)
        head = frame.head + handoff_id(current_instance()).encode() + b"\r\n\r\n"
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = await self._connection()
            reply = await conn.publish(frame.subject_bytes, head, frame.payload, frame.timeout)
        except NatsClosed as exc:
            raise HandoffRetryable(f"nats {self._where}: {exc}") from None
        except NatsTooLarge as exc:
            raise HandoffRejected(f"nats {self._where}: {frame.subject!r}: {exc}") from None
        except trio.TooSlowError:
            raise HandoffRetryable(
                f"nats {self._where}: no JetStream ack for {frame.subject!r} "
                f"within {frame.timeout:g} s"
            ) from None
        if reply.status == "503":
            raise HandoffRejected(
                f"nats {self._where}: no stream stores subject {frame.subject!r} (no responders)"
            )
        return _ack(frame.subject, reply.payload)


def _ack(subject: str, payload: bytes) -> dict[str, Any]:
    plain = _ACK.fullmatch(payload)
    if plain is not None:
        stream, seq, duplicate = plain.groups()
        return {"stream": stream.decode(), "seq": int(seq), "duplicate": duplicate is not None}
    try:
        ack = json.loads(payload)
    except ValueError:
        raise HandoffRejected(f"nats: the reply to {subject!r} is not a JetStream ack") from None
    if not isinstance(ack, dict):
        raise HandoffRejected(f"nats: the reply to {subject!r} is not a JetStream ack")
    error = ack.get("error")
    if isinstance(error, dict):
        text = f"nats: JetStream refused {subject!r}: {error.get('description')} ({error})"
        if error.get("code") in _RETRYABLE_CODES:
            raise HandoffRetryable(text)
        raise HandoffRejected(text)
    if "stream" not in ack or "seq" not in ack:
        raise HandoffRejected(f"nats: the reply to {subject!r} is not a JetStream ack: {ack}")
    return {"stream": ack["stream"], "seq": ack["seq"], "duplicate": bool(ack.get("duplicate"))}
