"""Who may do what over HTTP: every refusal of the auth middleware, sign-in, CSRF."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import tickwork
from tests.support.http_support import Quiet, in_process
from tickwork.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

NEW = {"task": "quiet", "at": "2100-01-01T00:00:00Z"}


@pytest.fixture
async def node(autojump_clock) -> AsyncIterator[tickwork.Scheduler]:
    async with tickwork.open_scheduler(
        tickwork.MemoryStore(), tasks=[Quiet()], clock=VirtualClock()
    ) as scheduler:
        yield scheduler


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    return str(response.json()["error"]["code"])


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


async def test_open_on_loopback_without_tokens(node):
    async with in_process(node) as api:
        assert (await api.get("/api/session")).json() == {"scope": "admin", "csrf_token": None}
        assert (await api.post("/api/instances", json=NEW)).status_code == 201
        # a browser's cross-site form post is refused even so
        evil = {
            "Origin": "http://evil.example",
            "content-type": "application/x-www-form-urlencoded",
        }
        assert refused(await api.post("/api/instances/1/abort", headers=evil), 403) == "cross_site"
        fetch = {"Sec-Fetch-Site": "cross-site"}
        assert refused(await api.post("/api/instances/1/abort", headers=fetch), 403) == "cross_site"
        # DNS rebinding: a name that is not loopback, resolved to 127.0.0.1
        rebound = await api.get("/api/instances", headers={"Host": "evil.example:8377"})
        assert refused(rebound, 403) == "forbidden"
    async with in_process(node, client="10.1.2.3") as remote:
        assert refused(await remote.get("/api/instances"), 401) == "unauthorized"


async def test_tokens_close_the_api(node):
    admin, admin_text = await node.add_token("admin", "ops")
    _, read_text = await node.add_token("read")
    async with in_process(node) as api:
        assert refused(await api.get("/api/instances"), 401) == "unauthorized"
        assert refused(await api.get("/api/instances", headers=bearer("tw_wrong")), 401)
        wrong = admin_text[:-4] + "AAAA"
        assert refused(await api.get("/api/instances", headers=bearer(wrong)), 401)
        assert (await api.get("/api/instances", headers=bearer(read_text))).status_code == 200
        write = await api.post("/api/instances", json=NEW, headers=bearer(read_text))
        assert refused(write, 403) == "scope"
        made = await api.post("/api/instances", json=NEW, headers=bearer(admin_text))
        assert made.status_code == 201
        await node.remove_token(admin.id)
        revoked = await api.get("/api/instances", headers=bearer(admin_text))
        assert refused(revoked, 401) == "unauthorized"
        # no token needed
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).status_code == 200
        assert (await api.get("/api/openapi.json")).status_code == 200
        assert refused(await api.get("/metrics"), 401)
        assert (await api.get("/metrics", headers=bearer(read_text))).status_code == 200
        # pages send people to sign in
        page = await api.get("/instances?state=FAILED")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Finstances%3Fstate%3DFAILED"
    async with in_process(node, metrics_need_token=False) as api:
        assert (await api.get("/metrics")).status_code == 200


async def test_sign_in_session_and_csrf(node):
    _, admin_text = await node.add_token("admin")
    _, read_text = await node.add_token("read")
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with in_process(node) as api:
        login = await api.get("/login?next=/schedules")
        assert login.status_code == 200
        assert 'value="/schedules"' in login.text
        assert "<script" not in login.text
        bad = await api.post("/login", content=b"token=tw_nope&next=/", headers=form)
        assert bad.status_code == 401
        done = await api.post(
            "/login", content=f"token={admin_text}&next=//evil.example".encode(), headers=form
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/"  # no open redirect
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        me = (await api.get("/api/session")).json()
        assert me["scope"] == "admin"
        csrf = me["csrf_token"]
        assert csrf
        # a post from the session without its CSRF token is refused, with it accepted
        assert refused(await api.post("/api/instances", json=NEW), 403) == "csrf"
        wrong = await api.post("/api/instances", json=NEW, headers={"X-CSRF-Token": "x"})
        assert refused(wrong, 403) == "csrf"
        ok = await api.post("/api/instances", json=NEW, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 201
        iid = ok.json()["id"]
        no_field = await api.post(f"/api/instances/{iid}/abort", content=b"a=1", headers=form)
        assert refused(no_field, 403) == "csrf"
        by_form = await api.post(
            f"/api/instances/{iid}/abort", content=f"csrf_token={csrf}".encode(), headers=form
        )
        assert by_form.json()["state"] == "ABORTED"
        out = await api.post("/logout", content=f"csrf_token={csrf}".encode(), headers=form)
        assert out.status_code == 303
        assert refused(await api.get("/api/instances"), 401)
        # a read token's session cannot write
        await api.post("/login", content=f"token={read_text}".encode(), headers=form)
        me = (await api.get("/api/session")).json()
        assert me["scope"] == "read"
        write = await api.post(
            "/api/instances", json=NEW, headers={"X-CSRF-Token": me["csrf_token"]}
        )
        assert refused(write, 403) == "scope"


async def test_a_revoked_token_ends_its_sessions(node):
    token, text = await node.add_token("admin")
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with in_process(node) as api:
        await api.post("/login", content=f"token={text}".encode(), headers=form)
        assert (await api.get("/api/instances")).status_code == 200
        await node.remove_token(token.id)
        assert refused(await api.get("/api/instances"), 401)


async def test_token_api(node):
    token, text = await node.add_token("read", "grafana")
    assert text.startswith(f"tw_{token.id}_")
    assert [t.id for t in await node.tokens()] == [token.id]
    assert (await node.authenticate(text)) == token
    assert await node.authenticate(text + "x") is None
    with pytest.raises(tickwork.InvalidArgument, match="scope"):
        await node.add_token("root")
    with pytest.raises(tickwork.NotFound):
        await node.remove_token("nope")


async def test_an_open_app_gives_its_pages_a_csrf_session(node):
    async with in_process(node, ui=False) as api:
        assert "set-cookie" not in (await api.get("/healthz")).headers
        assert "set-cookie" not in (await api.get("/api/instances")).headers
        page = await api.get("/instances")  # a page (no UI mounted here: 404, cookie anyway)
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        me = (await api.get("/api/session")).json()
        assert me["scope"] == "admin"
        # a browser session's posts carry its CSRF token, open app or not
        assert refused(await api.post("/api/instances", json=NEW), 403) == "csrf"
        ok = await api.post("/api/instances", json=NEW, headers={"X-CSRF-Token": me["csrf_token"]})
        assert ok.status_code == 201
