"""A place for one idle worker to wait until there is work (the Executor's pool).

At a steady rate instances come due one or a few at a time: a worker that ended whenever
the ready queue emptied would cost a task spawn and a cancel scope per run. Instead the
last one parks here, and the Executor wakes it rather than spawning a task.
"""

from __future__ import annotations

from typing import final

import trio


@final
class IdleWorker:
    """At most one task waits here at a time; :meth:`wake` reschedules it."""

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    @property
    def waiting(self) -> bool:
        return self._task is not None

    async def wait(self) -> bool:
        """Park the calling task until :meth:`wake`. Returns False at once, without
        waiting, when another task waits already; a cancel leaves the place free."""
        if self._task is not None:
            return False
        self._task = me = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._task is me:
                self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return True

    def wake(self) -> bool:
        """Reschedule the waiting task, if there is one; returns whether there was."""
        task, self._task = self._task, None
        if task is None:
            return False
        trio.lowlevel.reschedule(task)
        return True
