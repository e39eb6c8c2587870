"""The webhook task's HTTP/1.1 client (tickwork.tasks._http, with its _http_conn and
_http_wire) against a scripted server on loopback: keep-alive reuse, a keep-alive
connection the server closed, chunked and close-delimited bodies, redirects, deadlines
and refused connections."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing

from tickwork.tasks import _http, _http_conn, _http_wire
from tickwork.tasks._http import ConnectError, HttpClient, HttpError, TooManyRedirects

Answer = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close)


class Server:
    """Reads requests (head + content-length body) and writes what ``answer`` returns;
    ``close_after`` answers per connection, then closes it; over TLS with ``tls``."""

    def __init__(
        self, answer: Answer, close_after: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.answer = answer
        self.close_after = close_after
        self.tls = tls
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if self.tls is not None:
            listeners = [trio.SSLListener(t, self.tls, https_compatible=True) for t in tcp]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
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
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def ok(body: bytes = b"ok") -> Answer:
    return lambda _head: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def start(nursery: trio.Nursery, answer: Answer, **kwargs: Any) -> Server:
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
    monkeypatch.setattr(_http_conn.Conn, "still_open", lambda _self: True)
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


# -- the short parser of common answers, the h11 path for the others, and what the
#    connection is fit for afterwards


def answer_then(raw: bytes) -> Answer:
    return lambda _head: raw


async def two_calls(server: Server, **kwargs: Any) -> list[_http.Response]:
    async with HttpClient(max_connections=1) as client:
        return [await call(client, server.url(), **kwargs) for _ in range(2)]


async def test_an_answer_with_bytes_after_it_is_kept_but_not_its_connection(nursery):
    server = await start(
        nursery, answer_then(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK")
    )
    responses = await two_calls(server)
    assert [(r.status, r.tail) for r in responses] == [(200, b"ok")] * 2
    assert server.connections == 2


async def test_connection_close_in_the_answer_is_honoured(nursery):
    close = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, close\r\n\r\nok"
    server = await start(nursery, answer_then(close))
    assert [r.status for r in await two_calls(server)] == [200, 200]
    assert server.connections == 2


async def test_a_large_body_over_many_reads_keeps_its_tail_and_its_connection(nursery):
    body = bytes(range(256)) * 1200  # 300 kB: several reads
    server = await start(nursery, ok(body))
    responses = await two_calls(server, tail_bytes=8)
    assert [r.tail for r in responses] == [body[-8:]] * 2
    assert server.connections == 1


@pytest.mark.parametrize(
    ("raw", "status", "tail", "reused"),
    [
        # 100 Continue before the answer: skipped
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 3\r\n\r\nyes",
            202, b"yes", True,
        ),
        # an HTTP/1.0 answer: its connection is not kept
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", False),
        # 204 has no body whatever its content-length says
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", 204, b"", True),
        # a header folded over two lines (obsolete: h11 unfolds it)
        (b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  2\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", True),
        # two content-lengths that disagree
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", None, None, None),
        # a content-length that is not a number
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok", None, None, None),
    ],
)  # fmt: skip
async def test_answers_the_short_parser_leaves_to_h11(nursery, raw, status, tail, reused):
    server = await start(nursery, answer_then(raw))
    if status is None:
        with pytest.raises(HttpError, match=r"not an HTTP/1\.1 answer"):
            await two_calls(server)
        return
    responses = await two_calls(server)
    assert [(r.status, r.tail) for r in responses] == [(status, tail)] * 2
    assert server.connections == (1 if reused else 2)


async def test_head_answers_have_no_body_whatever_their_content_length(nursery):
    server = await start(nursery, answer_then(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"))
    async with HttpClient(max_connections=1) as client:
        for _ in range(2):
            response = await client.request("HEAD", server.url(), headers={}, timeout=5)
            assert (response.status, response.tail) == (200, b"")
    assert server.connections == 1


class Chunks(_http_conn.Conn):
    """A connection whose server writes ``chunks``, one per read, then ends its stream."""

    def __init__(self, chunks: list[bytes]) -> None:  # no socket
        self.chunks = list(chunks)
        self.answered = False

    async def send_all(self, data: bytes) -> None:
        pass

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""


ANSWERS = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nlocation: /x\r\n\r\nhello",
    b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
]


@pytest.mark.parametrize("raw", ANSWERS)
async def test_an_answer_split_anywhere_reads_the_same(raw):
    whole = await _http_wire.send_and_receive(Chunks([raw]), "POST", b"", 4096)
    assert whole[0].tail == b"hello"
    assert whole[2] is True  # reusable
    for cut in range(1, len(raw)):
        split = await _http_wire.send_and_receive(Chunks([raw[:cut], raw[cut:]]), "POST", b"", 3)
        assert split == (_http.Response(whole[0].status, b"llo"), whole[1], True), cut


async def test_an_answer_cut_short_is_an_error():
    # (the client turns h11's ProtocolError into an HttpError, as for any broken answer)
    for raw in ANSWERS:
        with pytest.raises((HttpError, h11.ProtocolError), match=r"closed|incomplete"):
            await _http_wire.send_and_receive(Chunks([raw[:-2]]), "POST", b"", 4096)


async def test_a_request_that_is_not_valid_http_is_refused_before_it_is_sent(nursery):
    server = await start(nursery, ok())
    async with HttpClient() as client:
        for headers in ({"x-a": "1\r\nx-b: 2"}, {"bad name": "1"}, {"x-a": "é"}):
            with pytest.raises(ValueError, match="cannot be sent"):
                await client.request("POST", server.url(), headers=headers, timeout=5)
        with pytest.raises(ValueError, match="visible ASCII"):
            await client.request("GET", server.url("/ü"), headers={}, timeout=5)
    assert server.heads == []


# -- the pool: places handed over in order, a cancelled waiter takes none, a timeout
#    closes its connection and frees its place


class Gate:
    """A server that answers each request only when let through, with its x-n header."""

    def __init__(self) -> None:
        self.port = 0
        self.order: list[bytes] = []
        self.let_through = trio.Semaphore(0)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            self.order.append(head.split(b"x-n: ")[1].split(b"\r\n")[0])
            await self.let_through.acquire()
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


async def test_calls_waiting_for_a_place_get_it_in_order_and_a_cancelled_one_takes_none(nursery):
    gate = Gate()
    await nursery.start(gate.serve)
    url = f"http://127.0.0.1:{gate.port}/"
    client = HttpClient(max_connections=1)
    done: list[str] = []

    async def one(n: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await client.request("GET", url, headers={"x-n": n}, timeout=5)
            done.append(n)

    async with trio.open_nursery() as calls:
        await calls.start(one, "a")
        await trio.testing.wait_all_tasks_blocked()  # "a" holds the one place
        await calls.start(one, "b")
        cancelled = await calls.start(one, "c")
        await calls.start(one, "d")
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()  # "c" waits for a place: it leaves without one
        for _ in range(3):
            gate.let_through.release()
    assert done == ["a", "b", "d"]
    assert gate.order == [b"a", b"b", b"d"]
    assert client._busy == 0
    await client.aclose()


async def test_a_timeout_closes_its_connection_and_frees_its_place(nursery, autojump_clock):
    gate = Gate()
    await nursery.start(gate.serve)
    url = f"http://127.0.0.1:{gate.port}/"
    async with HttpClient(max_connections=1) as client:
        with pytest.raises(_http.TimeoutError):
            await client.request("GET", url, headers={"x-n": "1"}, timeout=1)
        assert client._busy == 0
        gate.let_through.release()  # the first request's answer, on its closed connection
        gate.let_through.release()
        response = await client.request("GET", url, headers={"x-n": "2"}, timeout=1)
        assert response.status == 200
        assert client.connections_made == 2


# -- TLS through trio.SSLStream


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a self-signed certificate of 127.0.0.1."""
    d: Path = tmp_path_factory.mktemp("tls")
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"),
             "-out", str(d / "cert.pem")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a test certificate: {exc}")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    return server, ssl.create_default_context(cafile=str(d / "cert.pem"))


async def test_tls_calls_share_a_connection_and_a_stranger_certificate_is_refused(
    nursery, tls_contexts
):
    server_ctx, client_ctx = tls_contexts
    server = await start(nursery, ok(b"secure"), tls=server_ctx)
    async with HttpClient(ssl_context=client_ctx) as client:
        for _ in range(3):
            response = await call(client, server.url())
            assert (response.status, response.tail) == (200, b"secure")
        assert client.connections_made == 1
    assert server.connections == 1
    async with HttpClient() as system_store:  # the system's store does not know this one
        with pytest.raises(ConnectError):
            await call(system_store, server.url())


async def test_a_tls_connection_the_server_closed_is_replaced(nursery, tls_contexts):
    server_ctx, client_ctx = tls_contexts
    server = await start(nursery, ok(), close_after=1, tls=server_ctx)
    async with HttpClient(max_connections=1, ssl_context=client_ctx) as client:
        for _ in range(3):
            assert (await call(client, server.url())).status == 200
    assert len(server.heads) == 3


# -- deadlines of exchanges on plain connections: one system task, not a scope per call


def deadline_tasks() -> list[str]:
    root = trio.lowlevel.current_root_task()
    return [
        t.name
        for nursery in root.child_nurseries
        for t in nursery.child_tasks
        if t.name == "tickwork http deadlines"
    ]


async def test_a_shorter_deadline_is_kept_beside_a_longer_one(nursery, autojump_clock):
    gate = Gate()
    await nursery.start(gate.serve)
    url = f"http://127.0.0.1:{gate.port}/"
    async with HttpClient() as client:
        ended: dict[str, float] = {}

        async def one(n: str, timeout: float) -> None:
            with pytest.raises(_http.TimeoutError):
                await client.request("GET", url, headers={"x-n": n}, timeout=timeout)
            ended[n] = trio.current_time()

        start = trio.current_time()
        async with trio.open_nursery() as calls:
            calls.start_soon(one, "long", 100)
            await trio.testing.wait_all_tasks_blocked()  # the task sleeps until 100 s
            calls.start_soon(one, "short", 1)
        assert ended["short"] - start == pytest.approx(1, abs=0.1)
        assert ended["long"] - start == pytest.approx(100, abs=0.1)
        assert deadline_tasks() == ["tickwork http deadlines"]
    await trio.testing.wait_all_tasks_blocked()
    assert deadline_tasks() == []  # aclose ended it


async def test_the_deadline_covers_the_connect(monkeypatch, autojump_clock):
    async def never(*_args: object, **_kwargs: object) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    with pytest.raises(_http.TimeoutError, match="within 3 s"):
        async with HttpClient() as client:
            await client.request("GET", "http://127.0.0.1:9/", headers={}, timeout=3)


def test_a_client_keeps_deadlines_in_a_second_trio_run():
    client = HttpClient()

    async def timed_out() -> None:
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await nursery.start(gate.serve)
            url = f"http://127.0.0.1:{gate.port}/"
            with pytest.raises(_http.TimeoutError):
                await client.request("GET", url, headers={"x-n": "1"}, timeout=2)
            nursery.cancel_scope.cancel()

    for _ in range(2):  # the first run's task ended with it: the second starts its own
        trio.run(timed_out, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_client_used_after_aclose_has_one_deadline_task(nursery, autojump_clock):
    gate = Gate()
    await nursery.start(gate.serve)
    url = f"http://127.0.0.1:{gate.port}/"
    client = HttpClient()
    for n in range(3):
        with pytest.raises(_http.TimeoutError):
            await client.request("GET", url, headers={"x-n": str(n)}, timeout=1)
        await client.aclose()
    with pytest.raises(_http.TimeoutError):
        await client.request("GET", url, headers={"x-n": "last"}, timeout=1)
    await trio.testing.wait_all_tasks_blocked()
    assert deadline_tasks() == ["tickwork http deadlines"]
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert deadline_tasks() == []
