"""A minimal HTTP/1.1 receiver for benchmarks/handoff.py (asyncio, keep-alive).

    python benchmarks/_receiver.py PORT

Answers every request ``200 ok`` on the same connection, counting them; ``GET /count``
answers the count so far. Just enough HTTP for a benchmark's loopback traffic (requests
with a content-length body), so the receiver costs as little CPU as possible.
"""

from __future__ import annotations

import asyncio
import sys

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
count = 0


class Receiver(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        global count  # noqa: PLW0603 - the one counter of this tiny script
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            if head.startswith(b"get /count"):
                body = str(count).encode()
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
            else:
                count += 1
                self.transport.write(OK)  # type: ignore[attr-defined]


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
