"""The webhook task's HTTP/1.1 client (tickwork.tasks._http) against a scripted server on
loopback: keep-alive reuse, a keep-alive connection the server closed, chunked and
close-delimited bodies, redirects, deadlines and refused connections."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import trio

from tickwork.tasks import _http
from tickwork.tasks._http import ConnectError, HttpClient, HttpError, TooManyRedirects

Answer = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close)


class Server:
    """Reads requests (head + content-length body) and writes what ``answer`` returns;
    ``close_after`` answers per connection, then closes it."""

    def __init__(self, answer: Answer, close_after: int | None = None) -> None:
        self.answer = answer
        self.close_after = close_after
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf, answered = b"", 0
        async with stream:
            while self.close_after is None or answered < self.close_after:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                buf = buf[length:]
                self.heads.append(head)
                reply = self.answer(head)
                if reply is None:
                    return
                await stream.send_all(reply)
                answered += 1

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def ok(body: bytes = b"ok") -> Answer:
    return lambda _head: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def start(nursery: trio.Nursery, answer: Answer, **kwargs: int) -> Server:
    server = Server(answer, **kwargs)
    await nursery.start(server.serve)
    return server


async def call(client: HttpClient, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return await client.request(
        "POST", url, headers={"x-a": "1"}, content=b"{}", timeout=5.0, **kwargs
    )


async def once(url: str, **kwargs: object):  # type: ignore[no-untyped-def]
    async with HttpClient(max_connections=1) as client:
        return await call(client, url, **kwargs)


async def test_calls_reuse_one_keep_alive_connection(nursery):
    server = await start(nursery, ok())
    async with HttpClient(max_connections=4) as client:
        for _ in range(5):
            response = await call(client, server.url())
            assert (response.status, response.tail) == (200, b"ok")
        await client.aclose()
        assert server.connections == 1
        head = server.heads[0].decode()
        assert head.startswith("POST /hook HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{server.port}" in head
        assert "content-length: 2" in head
        assert "x-a: 1" in head


async def test_a_keep_alive_connection_the_server_closed_is_replaced(nursery):
    server = await start(nursery, ok(), close_after=1)
    async with HttpClient(max_connections=1) as client:
        for _ in range(3):
            assert (await call(client, server.url())).status == 200
            await trio.sleep(0.05)  # the server's close arrives while the connection is idle
        assert server.connections == 3
        assert len(server.heads) == 3  # each request was sent once


async def test_a_close_racing_the_next_request_is_retried_once_on_a_new_connection(
    nursery, monkeypatch
):
    # the check before reuse misses the close (it arrives just after): the request is
    # written to a closed connection, gets no answer, and goes out again on a new one
    monkeypatch.setattr(_http._Conn, "still_open", lambda _self: True)
    server = await start(nursery, ok(), close_after=1)
    async with HttpClient(max_connections=1) as client:
        assert (await call(client, server.url())).status == 200
        # no pause: the request may reach the connection before its close is seen
        assert (await call(client, server.url())).status == 200
        assert server.connections == 2


async def test_chunked_and_close_delimited_bodies_keep_their_tail(nursery):
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = await start(nursery, lambda _h: chunked)
    async with HttpClient() as client:
        assert (await call(client, server.url(), tail_bytes=8)).tail == b"lo world"
        until_close = await start(
            nursery, lambda _h: b"HTTP/1.1 201 X\r\n\r\nall of it", close_after=1
        )
        response = await call(client, until_close.url())
        assert (response.status, response.tail) == (201, b"all of it")


async def test_redirects_only_when_asked_and_a_post_becomes_a_get(nursery):
    def answer(head: bytes) -> bytes:
        if head.startswith(b"POST /hook"):
            return b"HTTP/1.1 302 Found\r\nlocation: /final\r\ncontent-length: 0\r\n\r\n"
        return ok(b"final")(head)

    server = await start(nursery, answer)
    async with HttpClient() as client:
        assert (await call(client, server.url())).status == 302
        response = await call(client, server.url(), follow_redirects=True)
        assert (response.status, response.tail) == (200, b"final")
        assert server.heads[-1].startswith(b"GET /final HTTP/1.1")
        assert b"content-length" not in server.heads[-1]


async def test_endless_redirects_stop(nursery):
    loop = b"HTTP/1.1 307 X\r\nlocation: /hook\r\ncontent-length: 0\r\n\r\n"
    server = await start(nursery, lambda _h: loop)
    with pytest.raises(TooManyRedirects):
        await once(server.url(), follow_redirects=True, max_redirects=3)
    assert len(server.heads) == 4


async def test_the_deadline_covers_the_whole_answer(nursery, autojump_clock):
    async def slow(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, slow, listeners)
    with pytest.raises(_http.TimeoutError, match="within 2 s"):
        async with HttpClient() as client:
            await client.request("GET", f"http://127.0.0.1:{port}/", headers={}, timeout=2)


async def test_a_refused_connection_and_a_broken_answer_are_errors(nursery):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening
        port = s.getsockname()[1]
        with pytest.raises(ConnectError):
            await once(f"http://127.0.0.1:{port}/")
    server = await start(nursery, lambda _h: b"NOT HTTP\r\n\r\n")
    with pytest.raises(HttpError, match=r"not an HTTP/1\.1 answer"):
        await once(server.url())
    cut = await start(
        nursery, lambda _h: b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc", close_after=1
    )
    with pytest.raises(HttpError):
        await once(cut.url())


async def test_connections_in_use_are_bounded(nursery):
    server = await start(nursery, ok())
    async with HttpClient(max_connections=3) as client:
        async with trio.open_nursery() as calls:
            for _ in range(20):
                calls.start_soon(call, client, server.url())
        assert server.connections <= 3
        assert len(server.heads) == 20
