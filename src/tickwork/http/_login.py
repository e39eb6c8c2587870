"""``/login`` (sign in with a token into a session cookie) and ``/logout``."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tickwork.http._auth import COOKIE, cookie_header
from tickwork.http._body import read_body
from tickwork.http._errors import ApiError, error_response

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["routes"]

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickwork: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/tickwork.css"></head>
<body class="login"><main>
<h1>tickwork</h1>
<form method="post" action="/login">
<p>{message}</p>
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>
<p class="hint">Make a token with <code>tickwork token add --scope read</code>.</p>
</main></body></html>
"""


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no ``//host`` or scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\\\" in value:
        return "/"
    return value


def _page(message: str, target: str, status: int = 200) -> Response:
    body = _PAGE.format(message=html.escape(message), next=html.escape(target, quote=True))
    return HTMLResponse(body, status_code=status)


async def login_page(request: Request) -> Response:
    return _page("Sign in with an API token.", _safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise ApiError(415, "post the sign-in form (application/x-www-form-urlencoded)")
    form = parse_qs((await read_body(request, 16 * 1024)).decode("latin-1"))
    text = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    token = await request.app.state.scheduler.authenticate(text) if text else None
    if token is None:
        if "text/html" in request.headers.get("accept", ""):
            return _page("That token is wrong or revoked.", target, 401)
        return error_response(401, "that token is wrong or revoked")
    sid, _ = request.app.state.sessions.new(text)
    response = RedirectResponse(target, status_code=303)
    name, value = cookie_header(sid, secure=request.app.state.auth.secure_cookie)
    response.raw_headers.append((name, value))
    return response


async def logout(request: Request) -> Response:
    sid = request.cookies.get(COOKIE)
    if sid:
        request.app.state.sessions.drop(sid)
    response = RedirectResponse("/login", status_code=303)
    name, value = cookie_header("", secure=request.app.state.auth.secure_cookie, clear=True)
    response.raw_headers.append((name, value))
    return response


async def session(request: Request) -> Response:
    """Who the caller is: the scope, and the CSRF token its forms and scripts must send."""
    return JSONResponse({"scope": request.state.auth_scope, "csrf_token": request.state.csrf_token})


def routes() -> list[Any]:
    return [
        Route("/api/session", session, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
