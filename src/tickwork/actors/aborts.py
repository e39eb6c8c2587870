"""The Aborts actor: carries the aborts of instances this node holds into the pipeline.

An abort requested in the store for an instance this node holds (by the API on this
node, or elsewhere: the Leases actor hears of it) arrives as one
:class:`~tickwork.actors.messages.AbortRequested`. The Aborts actor tells the Recorder
first (so that whatever outcome of it comes, the Recorder reports the ABORTED the store
writes) and then sends one :class:`~tickwork.actors.messages.Abort` per instance down
the pipeline: the Timekeeper drops it if it still waits, else hands it to the Executor,
which cancels the run. It stops with the Puller (the first of a graceful stop), so the
pipeline's channels close in order; aborts that come later are dropped, as the
instances are given back or recorded anyway.

It also carries the ``PendingAborted`` of an instance the API aborted while PENDING to
the Recorder, which runs its ``on_abort`` hook under ``hook_concurrency``.
"""

from __future__ import annotations

from typing import final

import trio

from tickwork.actors.messages import (
    Abort,
    AbortsMsg,
    PendingAborted,
    TimekeeperMsg,
)


@final
class Aborts:
    def __init__(
        self,
        *,
        receive: trio.MemoryReceiveChannel[AbortsMsg],
        to_recorder: trio.MemorySendChannel[AbortsMsg],
        to_timekeeper: trio.MemorySendChannel[TimekeeperMsg],
    ) -> None:
        self._receive = receive
        self._to_recorder = to_recorder
        self._to_timekeeper = to_timekeeper
        self.cancel_scope = trio.CancelScope()
        self._carried = 0

    def carried(self) -> int:
        """How many aborts it carried since the node started."""
        return self._carried

    def stop(self) -> None:
        """Carry no more aborts (shutdown); closes its channels into the pipeline."""
        self.cancel_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.cancel_scope:
            async with self._receive, self._to_recorder, self._to_timekeeper:
                task_status.started()
                async for msg in self._receive:
                    await self._to_recorder.send(msg)
                    if isinstance(msg, PendingAborted):
                        continue  # nothing held: only its hook is left to run
                    for iid in msg.instance_ids:
                        await self._to_timekeeper.send(Abort(iid))
                        self._carried += 1
