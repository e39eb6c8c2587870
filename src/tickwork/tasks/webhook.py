"""WebhookTask: an HTTP call per run, signed the Standard Webhooks way.

params: ``{"url", "method"?="POST", "headers"?, "json"? | "body"?, "timeout"?=10,
"expect"?, "follow_redirects"?=False}``. The secret comes from the node
(``TICKWORK_WEBHOOK_SECRET``, ``whsec_<base64>``), never from params; without one the
call goes unsigned (``webhook-id`` and ``webhook-timestamp`` are still sent).

A 5xx, a timeout or a connection that fails is :class:`HandoffRetryable` (the task's
retry policy applies); any other status outside ``expect`` (default: 2xx) is
:class:`HandoffRejected`, final. The result is ``{"status", "body"}`` (a bounded tail).

:func:`post_webhook` is the same call for code that is not a task (notifications).
"""

from __future__ import annotations

import functools
import json as jsonlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import attrs

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.task import Task, current_instance
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_str_map,
    check_timeout,
    handoff_id,
    missing_extra,
    params_map,
)
from tickwork.tasks._settings import HandoffSettings
from tickwork.tasks._signing import parse_secret, signed_headers

if TYPE_CHECKING:
    from tickwork.tasks._http import HttpClient

__all__ = ["WebhookCall", "WebhookTask", "post_webhook"]

_KEYS = ("url", "method", "headers", "json", "body", "timeout", "expect", "follow_redirects")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: set by the task itself; a params header of these names is refused
_RESERVED = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "host",
     "transfer-encoding"}
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: what HTTP/1.1 carries as it is: a URL's visible ASCII, a header value's (and tabs)
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
_VALUE_CHARS = re.compile(r"[\x20-\x7e\t]*")
DEFAULT_TIMEOUT = 10.0
_TAIL = 4096


@functools.cache
def _client_module() -> Any:
    try:
        from tickwork.tasks import _http  # noqa: PLC0415 - needs h11 (the webhook extra)
    except ImportError:
        raise missing_extra("h11", "webhook") from None
    return _http


@attrs.frozen
class WebhookCall:
    """One validated call (see :meth:`from_params`)."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content: bytes = b""
    timeout: float = DEFAULT_TIMEOUT
    expect: frozenset[int] | None = None
    follow_redirects: bool = False

    @classmethod
    def from_params(cls, params: bytes) -> WebhookCall:
        """Check the webhook params. Raises InvalidArgument saying what is wrong."""
        raw = params_map("webhook", params, _KEYS)
        if "url" not in raw:
            raise InvalidArgument("webhook params need 'url', e.g. https://example.com/hook")
        headers = _check_headers(raw.get("headers"))
        if "json" in raw and "body" in raw:
            raise InvalidArgument("webhook params take 'json' or 'body', not both")
        content = b""
        if "json" in raw:
            content = _json_bytes(raw["json"])
            headers.setdefault("content-type", "application/json")
        elif "body" in raw:
            body = raw["body"]
            if isinstance(body, str):
                content = body.encode()
            elif isinstance(body, bytes):
                content = body
            else:
                raise InvalidArgument(f"webhook 'body' must be text or bytes, got {body!r}")
        method = raw.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise InvalidArgument(
                f"webhook 'method' must be one of {sorted(_METHODS)}, got {method!r}"
            )
        follow = raw.get("follow_redirects", False)
        if not isinstance(follow, bool):
            raise InvalidArgument(
                f"webhook 'follow_redirects' must be true or false, got {follow!r}"
            )
        return cls(
            url=check_url(raw["url"]),
            method=method.upper(),
            headers=headers,
            content=content,
            timeout=check_timeout("webhook", raw.get("timeout"), DEFAULT_TIMEOUT),
            expect=_check_expect(raw.get("expect")),
            follow_redirects=follow,
        )


@functools.lru_cache(maxsize=1024)
def _call_of(params: bytes) -> WebhookCall:
    """:meth:`WebhookCall.from_params`, remembered: a schedule's runs (and a burst of
    instances) share their params, and checking them costs more than the call's framing."""
    return WebhookCall.from_params(params)


def check_url(url: object) -> str:
    """An absolute http(s) URL with a host. Raises InvalidArgument otherwise."""
    if not isinstance(url, str) or not url or len(url) > 8192 or any(c.isspace() for c in url):
        raise InvalidArgument(f"webhook 'url' must be an http(s) URL without spaces, got {url!r}")
    if not _URL_CHARS.fullmatch(url):
        raise InvalidArgument(
            f"webhook 'url' must be ASCII without control characters (percent-encode the "
            f"others), got {url!r}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise InvalidArgument(f"webhook 'url' {url!r} is malformed ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"webhook 'url' must be http:// or https:// with a host, got {url!r}")
    if port == 0:
        raise InvalidArgument(f"webhook 'url' has port 0: {url!r}")
    return url


def _check_headers(value: object) -> dict[str, str]:
    headers = {k.lower(): v for k, v in check_str_map("webhook", "headers", value).items()}
    for name, text in headers.items():
        if not _TOKEN.fullmatch(name):
            raise InvalidArgument(f"webhook header name {name!r} is not a valid HTTP token")
        if name in _RESERVED:
            raise InvalidArgument(f"webhook header {name!r} is set by tickwork; remove it")
        if any(c in text for c in "\r\n\0"):
            raise InvalidArgument(f"webhook header {name!r} holds a line break or NUL")
        if not _VALUE_CHARS.fullmatch(text):
            raise InvalidArgument(
                f"webhook header {name!r} holds a character that is not printable ASCII"
            )
    return headers


def _check_expect(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599 for v in value
        )
    ):
        raise InvalidArgument(
            f"webhook 'expect' must be a non-empty list of HTTP status codes, got {value!r}"
        )
    return frozenset(value)


def _json_bytes(value: object) -> bytes:
    try:
        return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"webhook 'json' cannot be encoded as JSON ({exc})") from None


async def send(
    client: HttpClient,
    call: WebhookCall,
    *,
    key: bytes | None,
    message_id: str,
    tail_bytes: int = _TAIL,
) -> dict[str, Any]:
    """Make ``call`` signed with ``key`` (or unsigned): ``{"status", "body"}``.

    Raises:
        HandoffRetryable: a 5xx, a timeout, a connection that failed.
        HandoffRejected: any other status outside ``call.expect`` (default: 2xx).
    """
    http = _client_module()
    headers = {
        **call.headers,
        **signed_headers(key, message_id, int(time.time()), call.content),
    }
    try:
        response = await client.request(
            call.method,
            call.url,
            headers=headers,
            content=call.content,
            timeout=call.timeout,
            follow_redirects=call.follow_redirects,
            tail_bytes=tail_bytes,
        )
    except http.TimeoutError as exc:
        raise HandoffRetryable(
            f"webhook {call.method} {call.url} timed out after {call.timeout:g} s ({exc})"
        ) from None
    except http.TooManyRedirects as exc:
        raise HandoffRejected(f"webhook {call.method} {call.url}: {exc}") from None
    except http.HttpError as exc:
        raise HandoffRetryable(f"webhook {call.method} {call.url} failed: {exc!r}") from None
    status = response.status
    text = response.tail.decode("utf-8", errors="replace")
    if call.expect is not None and status in call.expect:
        return {"status": status, "body": text}
    if call.expect is None and 200 <= status < 300:
        return {"status": status, "body": text}
    message = f"webhook {call.method} {call.url} answered {status}: {text[-512:]!r}"
    if status >= 500:
        raise HandoffRetryable(message)
    raise HandoffRejected(message)


async def post_webhook(
    url: str,
    payload: object,
    *,
    message_id: str,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the HTTP call's own timeout
    client: HttpClient | None = None,
) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url``, signed with ``secret`` (``whsec_...``) or not.

    For code that is not a scheduled run (failure notifications): the same checks, headers
    and failures as :class:`WebhookTask`. ``message_id`` is the ``webhook-id`` (the
    receiver's idempotency key). Pass ``client`` (a :class:`tickwork.tasks._http.HttpClient`)
    to reuse connections.

    Raises:
        InvalidArgument: a bad URL, header, payload or secret.
        HandoffRetryable, HandoffRejected: as :func:`send`.
    """
    from tickwork.model import pack  # noqa: PLC0415 - avoid a cycle at import time

    raw: dict[str, Any] = {"url": url, "json": payload, "timeout": timeout}
    if headers:
        raw["headers"] = dict(headers)
    call = WebhookCall.from_params(pack(raw))
    key = None if secret is None else parse_secret(secret)
    if client is not None:
        return await send(client, call, key=key, message_id=message_id)
    own = _client_module().HttpClient(max_connections=1)
    try:
        return await send(own, call, key=key, message_id=message_id)
    finally:
        await own.aclose()


class WebhookTask(Task):
    """Call a URL per run (see the module docstring for params, result and failures).

    Args:
        secret: the Standard Webhooks secret (``whsec_<base64>``); default: the settings'
            (``TICKWORK_WEBHOOK_SECRET``); None there means unsigned calls.
        settings: where the default secret comes from (default: the environment).
        max_connections: keep-alive connections held open at once (per node).
    """

    name: ClassVar[str] = "webhook"
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (HandoffRetryable, TaskTimeout)
    #: bytes of the response body kept in the result
    tail_bytes: ClassVar[int] = _TAIL

    def __init__(
        self,
        secret: str | None = None,
        *,
        settings: HandoffSettings | None = None,
        max_connections: int = 256,
    ) -> None:
        if secret is None:
            secret = (settings or HandoffSettings.from_env()).webhook_secret
        self._key = None if secret is None else parse_secret(secret)
        self._max_connections = max_connections
        self._client: HttpClient | None = None
        self._live = False

    @property
    def signed(self) -> bool:
        """Whether calls carry a ``webhook-signature``."""
        return self._key is not None

    def validate_params(self, params: bytes) -> None:
        _call_of(params)  # a burst of instances scheduled at once shares its params

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        self._live = True
        try:
            yield
        finally:
            self._live = False
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()  # cancel-safe: idle connections close at once

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """An HTTP client with keep-alive connections, shared by the node's runs (made,
        and h11 imported, by the first run: a node that makes no call pays nothing)."""
        return self._open()

    def _http(self) -> HttpClient:
        if not self._live:
            raise TickworkError(
                "WebhookTask runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        if self._client is None:
            # Calls beyond max_connections wait for a connection before their timeout
            # starts: a node runs up to max_concurrency calls at once.
            self._client = _client_module().HttpClient(max_connections=self._max_connections)
        return self._client

    async def run(self, params: bytes) -> dict[str, Any]:
        """Make the call; see the module docstring."""
        client = self._http()
        call = _call_of(params)
        return await send(
            client,
            call,
            key=self._key,
            message_id=handoff_id(current_instance()),
            tail_bytes=self.tail_bytes,
        )
