"""What BashTask does with its process: feed a long command on stdin, read stdout and
stderr at once into bounded tails, signal the process group, and say how it exited."""

from __future__ import annotations

import os
import signal

import trio

__all__ = [
    "Tail",
    "describe_exit",
    "feed",
    "read_both",
    "signal_group",
    "signal_name",
    "tails_text",
]


_CHUNK = 65536
#: How much of each tail goes into an exception message (the stored ``error`` text).
_MESSAGE_TAIL = 1024


async def feed(scope: trio.CancelScope, proc: trio.Process, script: bytes) -> None:
    """Write a long command to bash's stdin and close it (see ``bash.MAX_ARGUMENT_CMD``)."""
    stdin = proc.stdin
    assert stdin is not None  # noqa: S101 - opened with stdin=PIPE
    with scope:
        try:
            async with stdin:
                await stdin.send_all(script)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # bash is gone before it read it all: its exit status says why


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group. False when the group has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only a member that changed its credentials (setuid) refuses: nothing to do.
        return True
    return True


async def read_both(scope: trio.CancelScope, proc: trio.Process, out: Tail, err: Tail) -> None:
    """Drain stdout and stderr concurrently into their tails, inside ``scope``."""
    assert proc.stdout is not None  # noqa: S101 - opened with PIPE
    assert proc.stderr is not None  # noqa: S101 - opened with PIPE
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.drain, proc.stdout)
            nursery.start_soon(err.drain, proc.stderr)
    with trio.CancelScope(shield=True):
        await proc.stdout.aclose()
        await proc.stderr.aclose()


class Tail:
    """The last ``limit`` bytes of a stream, in memory bounded by about twice that."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._truncated = False
        self.eof = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        """Read ``stream`` to its end, keeping the tail."""
        while chunk := await stream.receive_some(_CHUNK):
            self._buf += chunk
            # Trimming at 2x, not at every chunk, keeps the copying amortised O(1)/byte.
            if len(self._buf) > 2 * self._limit:
                del self._buf[: len(self._buf) - self._limit]
                self._truncated = True
        self.eof.set()

    def text(self) -> str:
        """The tail decoded as UTF-8 (undecodable bytes replaced)."""
        data = bytes(self._buf[-self._limit :]) if self._limit else b""
        if self._truncated or len(self._buf) > self._limit:
            # The cut may fall inside a character: drop the (at most 3) continuation
            # bytes of its start rather than show a replacement character.
            skip = 0
            while skip < min(3, len(data)) and 0x80 <= data[skip] < 0xC0:
                skip += 1
            data = data[skip:]
        return data.decode("utf-8", errors="replace")


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        return f"bash command was killed by {signal_name(-exit_code)}"
    text = f"bash command exited with code {exit_code}"
    if exit_code > 128 and exit_code - 128 in signal.valid_signals():
        # bash reports a child killed by signal N as exit code 128+N
        text += f" (128+{exit_code - 128}: likely killed by {signal_name(exit_code - 128)})"
    return text


def tails_text(stdout: str, stderr: str) -> str:
    parts = [
        f"; {label} tail: {tail[-_MESSAGE_TAIL:]!r}"
        for label, tail in (("stderr", stderr), ("stdout", stdout))
        if tail
    ]
    return "".join(parts)
