"""Per-task concurrency for the Executor (``Task.max_concurrent``): the runs of each task
in progress, and the due instances parked until a run of their task ends.

A parked instance holds no worker, so a task at its limit cannot starve the others. When
a run of its task ends it goes to the front of the ready queue, and the time it waited
is counted (``statistics().executor.slot_wait_us``).
"""

from __future__ import annotations

from collections import deque
from typing import final

import trio

from tickwork.model import Instance

__all__ = ["TaskSlots"]


@final
class TaskSlots:
    """The slots of the tasks that have a ``max_concurrent``, by task name."""

    def __init__(self) -> None:
        # per task name: instances waiting for a slot (with when they became ready), and
        # runs in progress
        self._blocked: dict[str, deque[tuple[Instance, float]]] = {}
        self._running: dict[str, int] = {}
        #: total time parked instances waited for a slot, in seconds
        self.wait_total = 0.0

    @property
    def waiting(self) -> int:
        """Instances parked now."""
        return sum(len(queue) for queue in self._blocked.values())

    def take(self, task: str, limit: int, inst: Instance, ready_since: float) -> bool:
        """Take a slot of ``task`` for ``inst``; at ``limit``, park ``inst`` instead and
        return False (it comes back from :meth:`give_back`)."""
        running = self._running.get(task, 0)
        if running >= limit:
            self._blocked.setdefault(task, deque()).append((inst, ready_since))
            return False
        self._running[task] = running + 1
        return True

    def give_back(self, task: str) -> Instance | None:
        """A run of ``task`` ended. Returns the first instance parked for it, if any: the
        caller runs it next."""
        self._running[task] -= 1
        blocked = self._blocked.get(task)
        if not blocked:
            return None
        waiting, since = blocked.popleft()
        self.wait_total += trio.current_time() - since
        return waiting

    def remove(self, instance_id: int) -> Instance | None:
        """Unpark an instance (aborted); None if it is not parked."""
        for queue in self._blocked.values():
            for i, (inst, _) in enumerate(queue):
                if inst.id == instance_id:
                    del queue[i]
                    return inst
        return None

    def drain(self) -> list[Instance]:
        """Unpark every instance (shutdown), in order of task, then of parking."""
        parked = [inst for queue in self._blocked.values() for inst, _ in queue]
        self._blocked.clear()
        return parked
