"""Who may do what: bearer tokens, the session cookie of ``/login``, CSRF, security headers.

A pure ASGI middleware in front of every route (see ``docs/http.md``):

* ``Authorization: Bearer <token>``: the token's scope. No CSRF check: a browser never
  sends this header on its own.
* the session cookie set by ``/login`` (HttpOnly, SameSite=Strict): the scope of the token
  it signed in with, looked up again on every request (a revoked token ends its sessions).
  Every POST/PUT/DELETE in a session must carry its CSRF token (a form field or a header
  ``csrf_token`` / ``X-CSRF-Token``): 403 otherwise.
* neither: when the app is *open* (no token stored, served on loopback) the request is
  ``admin``; otherwise 401 for the API and a redirect to ``/login?next=...`` for pages.

Whatever the credentials, a state-changing request that a browser marks as cross-site
(``Origin`` not this host, or ``Sec-Fetch-Site: cross-site``) is refused, and an open app
answers only requests addressed to a loopback host name (DNS rebinding).
``request.state.auth_scope`` is ``"read"``, ``"admin"`` or None, and
``request.state.csrf_token`` the session's CSRF token (or None).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, quote, urlsplit

import attrs
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response

from tickwork.errors import SchedulerClosed, StoreError
from tickwork.http._errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from tickwork.node.scheduler import Scheduler

__all__ = ["COOKIE", "AuthConfig", "Guard", "Session", "Sessions"]

log = logging.getLogger("tickwork.http")

COOKIE: Final = "tickwork_session"
_SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC: Final = ("/healthz", "/readyz", "/login", "/static/", "/api/openapi.json")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_FORM_LIMIT: Final = 64 * 1024

SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        (
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            b"frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


@attrs.define
class AuthConfig:
    """How the app authenticates (set by ``create_app``)."""

    #: whether requests without credentials may act as admin when no token is stored
    #: (only when served on loopback)
    open_loopback: bool = True
    #: whether /metrics needs a token (read scope) like the API
    metrics_need_token: bool = True
    #: mark the session cookie Secure (serve behind TLS)
    secure_cookie: bool = False
    #: sessions live this long without use
    session_idle: float = 12 * 3600.0


@attrs.define
class Session:
    """A signed-in browser: the token it signed in with (None: an open app's visitor)."""

    token_text: str | None
    csrf: str
    last_used: float


class Sessions:
    """Server-side sessions by random id, at most ``limit`` (the least recently used go)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._limit = limit

    def new(self, token_text: str | None) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token_text, secrets.token_urlsafe(32), time.monotonic())
        self._by_id[sid] = session
        while len(self._by_id) > self._limit:
            self._by_id.popitem(last=False)
        return sid, session

    def get(self, sid: str, idle: float) -> Session | None:
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > idle:
            del self._by_id[sid]
            return None
        session.last_used = now
        self._by_id.move_to_end(sid)
        return session

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)


def cookie_header(sid: str, *, secure: bool, clear: bool = False) -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` header of a session id (or one that clears it)."""
    value = "" if clear else sid
    attrs_ = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    if clear:
        attrs_ += "; Max-Age=0"
    return b"set-cookie", f"{COOKIE}={value}{attrs_}".encode("latin-1")


def _is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in _PUBLIC)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]", maxsplit=1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _replayable(receive: Receive, limit: int) -> tuple[bytes, Receive] | None:
    """Read a small body whole (None past ``limit``) and a ``receive`` that replays it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self, app: ASGIApp, scheduler: Scheduler, config: AuthConfig, sessions: Sessions
    ) -> None:
        self._app = app
        self._scheduler = scheduler
        self._config = config
        self._sessions = sessions
        self._tokens_exist: bool | None = None
        self._checked_at = -float("inf")
        self._open_logged = False

    async def _any_token(self) -> bool:
        # Looked up at most every 2 s: a token added with the CLI closes an open app soon.
        now = time.monotonic()
        if self._tokens_exist is None or now - self._checked_at > 2.0:
            self._tokens_exist = bool(await self._scheduler.tokens())
            self._checked_at = now
        return self._tokens_exist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in SECURITY_HEADERS}
                ]
                message = {**message, "headers": headers + list(SECURITY_HEADERS) + extra}
            await send(message)

        try:
            response, receive = await self._decide(scope, receive, extra)
        except (SchedulerClosed, StoreError) as exc:  # tokens cannot be read now
            # probes (healthz, readyz) still answer; anything else is unavailable
            response = None if _is_public(scope["path"]) else error_response(503, str(exc))
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self._app(scope, receive, send_with_headers)

    async def _decide(
        self, scope: Scope, receive: Receive, extra: list[tuple[bytes, bytes]]
    ) -> tuple[Response | None, Receive]:
        """Set the request's scope and CSRF token; a response when it is refused."""
        headers = Headers(scope=scope)
        method: str = scope["method"]
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        state["auth_scope"] = None
        state["csrf_token"] = None
        unsafe = method not in _SAFE
        is_open = await self._is_open(scope)
        if is_open and _host_name(headers.get("host", "")) not in _LOOPBACK_HOSTS:
            return error_response(
                403, "this open (no token) API answers only loopback hosts"
            ), receive
        if unsafe and _cross_site(headers):
            return error_response(403, "cross-site request refused", "cross_site"), receive
        granted, receive, refusal = await self._credentials(scope, receive, headers, is_open)
        if refusal is not None:
            return refusal, receive
        if (
            is_open
            and state["csrf_token"] is None
            and method == "GET"
            and not path.startswith("/api/")
            and not _is_public(path)
            and path != "/metrics"
        ):
            # an open app's pages still need a CSRF token for their forms
            sid, session = self._sessions.new(None)
            state["csrf_token"] = session.csrf
            extra.append(cookie_header(sid, secure=self._config.secure_cookie))
        state["auth_scope"] = granted
        return self._authorize(scope, granted, unsafe), receive

    async def _is_open(self, scope: Scope) -> bool:
        client = scope.get("client") or ("", 0)
        if not self._config.open_loopback or client[0] not in _LOOPBACK_HOSTS:
            return False
        if await self._any_token():
            return False
        if not self._open_logged:
            self._open_logged = True
            log.warning("HTTP API open: no token is configured, loopback requests act as admin")
        return True

    async def _credentials(
        self, scope: Scope, receive: Receive, headers: Headers, is_open: bool
    ) -> tuple[str | None, Receive, Response | None]:
        """The scope the credentials grant (bearer token, else session, else open)."""
        state = scope["state"]
        auth = headers.get("authorization")
        if auth is not None:
            kind, _, text = auth.partition(" ")
            found = None
            if kind.lower() == "bearer":
                found = await self._scheduler.authenticate(text.strip())
            if found is None:
                return None, receive, _unauthorized("the bearer token is wrong or revoked")
            return found.scope, receive, None
        sid = cookie_parser(headers.get("cookie", "")).get(COOKIE)
        session = self._sessions.get(sid, self._config.session_idle) if sid else None
        if session is None:
            return ("admin" if is_open else None), receive, None
        state["csrf_token"] = session.csrf
        granted: str | None = "admin" if is_open else None
        if session.token_text is not None:
            token = await self._scheduler.authenticate(session.token_text)
            granted = None if token is None else token.scope
        if scope["method"] not in _SAFE and not _is_public(scope["path"]):
            checked = await _csrf_ok(receive, headers, session.csrf)
            if checked is None:
                return granted, receive, error_response(403, "missing or wrong csrf_token", "csrf")
            receive = checked
        return granted, receive, None

    def _authorize(self, scope: Scope, granted: str | None, unsafe: bool) -> Response | None:
        path: str = scope["path"]
        if _is_public(path) or (path == "/metrics" and not self._config.metrics_need_token):
            return None
        if granted is None:
            if not path.startswith("/api/") and path != "/metrics" and scope["method"] == "GET":
                query = scope["query_string"].decode("latin-1")
                target = path + ("?" + query if query else "")
                return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
            return _unauthorized("sign in: send Authorization: Bearer <token>")
        if unsafe and granted != "admin":
            return error_response(403, "this token has the read scope; this needs admin", "scope")
        return None


def _unauthorized(message: str) -> Response:
    return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})


def _cross_site(headers: Headers) -> bool:
    """A browser says the request comes from another site (a form or script there)."""
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


async def _csrf_ok(receive: Receive, headers: Headers, expected: str) -> Receive | None:
    """The ``receive`` to use from now on when the CSRF token is right, else None."""
    given = headers.get("x-csrf-token") or headers.get("csrf_token")
    if given is not None:
        return receive if hmac.compare_digest(given, expected) else None
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    read = await _replayable(receive, _FORM_LIMIT)
    if read is None:
        return None
    body, replay = read
    values = parse_qs(body.decode("latin-1")).get("csrf_token", [])
    if len(values) != 1 or not hmac.compare_digest(values[0], expected):
        return None
    return replay
