"""How ``tickwork run`` reads SIGINT and SIGTERM: one request delivered twice is one.

The first SIGINT or SIGTERM asks for a graceful stop. ``timeout``, a service manager
or a wrapper that signals the whole process group often delivers that one request twice
(to the process and to its group, a few microseconds apart), so:

* the **same** signal again within ``DUPLICATE_WINDOW_S`` of the first is a duplicate:
  the graceful stop goes on;
* the same signal **later**, or the **other** signal at any time (SIGTERM after a
  Ctrl-C, Ctrl-C after SIGTERM), is a deliberate second request: stop at once.

Pure (no I/O, times passed in), so the rule is tested on its own; ``docs/operations.md``
states it for users.
"""

from __future__ import annotations

import enum
from typing import Final, final

__all__ = ["DUPLICATE_WINDOW_S", "ShutdownRequests", "Verdict"]

#: How long after the first shutdown signal the same signal counts as the same request.
DUPLICATE_WINDOW_S: Final = 1.0


class Verdict(enum.Enum):
    """What one received signal means."""

    #: the first request: stop gracefully
    STOP = "stop"
    #: the first request delivered again: nothing to do
    DUPLICATE = "duplicate"
    #: a deliberate second request: stop at once
    HURRY = "hurry"


@final
class ShutdownRequests:
    """Tells a node's shutdown signals apart (see the module docstring)."""

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None

    def receive(self, signum: int, now: float) -> Verdict:
        """What ``signum``, received at ``now`` (seconds, monotonic), means."""
        if self._first is None:
            self._first = (signum, now)
            return Verdict.STOP
        first_signum, first_at = self._first
        if signum == first_signum and now - first_at < DUPLICATE_WINDOW_S:
            return Verdict.DUPLICATE
        return Verdict.HURRY
