"""The systemd service notification protocol (``sd_notify(3)``), for ``Type=notify`` units.

A message is a few ``KEY=value`` lines sent as one datagram to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``). The
node sends ``READY=1`` once every actor runs, ``WATCHDOG=1`` every half of
``$WATCHDOG_USEC`` from a trio task of its own (so a hung event loop stops feeding the
watchdog and systemd restarts the node), and ``STOPPING=1`` when it begins to shut down.
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

import attrs
import trio

__all__ = ["ServiceNotifier"]

log = logging.getLogger("tickwork.systemd")

#: what systemd sets for its service, and the node's children must not inherit: a bash
#: command that notifies would speak for the node
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str | None) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path, or an abstract name (``@``)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; ignored", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` messages (half the timeout), or None if not asked."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is another process's
    try:
        timeout = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; ignored", usec)
        return None
    return timeout / 2 / 1e6 if timeout > 0 else None


@attrs.define
class ServiceNotifier:
    """Sends the node's state to its service manager; does nothing without one."""

    address: str | None
    watchdog_interval: float | None
    _failed: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> ServiceNotifier:
        """Read (and remove, so the node's children do not inherit them) systemd's variables."""
        env = os.environ if env is None else env
        notifier = cls(_address(env.get("NOTIFY_SOCKET")), _watchdog_interval(env))
        for name in _VARIABLES:
            env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message, never waiting.

        A failure is logged once and otherwise ignored: the node keeps running, and a
        service manager that misses ``READY=1`` or the watchdog acts on its own. A full
        queue at the receiver drops the message rather than wait: waiting for a peer's
        datagram queue cannot be done without polling (the sending socket stays writable).
        """
        if self.address is None:
            return
        message = "\n".join(fields).encode()
        try:
            # A socket per message: one every few seconds at most, and nothing to close.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # noqa: FBT003 - the socket API's own flag
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at NOTIFY_SOCKET: %s", exc)
            self._failed = True
        else:
            if self._failed:
                log.info("notifying the service manager again")
            self._failed = False

    async def feed_watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC``, until cancelled.

        It runs as a task of the node's event loop: when the loop is stuck, the feed stops
        and the service manager restarts the node after the timeout.
        """
        if self.address is None or self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
