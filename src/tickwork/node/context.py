"""What a :class:`~tickwork.node.scheduler.Scheduler` holds of its running node.

The wiring builds one :class:`NodeContext` once every actor has started and hands it to
the Scheduler; nothing in it is filled in later. The API reaches the actors only through
the two channels it holds (``PendingAt`` to the Puller, ``AbortRequested`` to the Aborts
actor) and reads their ``statistics()``.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, final

import attrs
import trio

from tickwork.actors.messages import AbortRequested, PendingAt
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.events import EventHub
from tickwork.node._actors import NodeActors
from tickwork.node.resilience import ResilientStore
from tickwork.node.settings import NodeSettings
from tickwork.task import TaskRegistry

if TYPE_CHECKING:
    from tickwork.notify import NotifierHost

__all__ = ["NodeContext"]


@final
@attrs.frozen(kw_only=True)
class NodeContext:
    settings: NodeSettings
    store: ResilientStore
    registry: TaskRegistry
    clock: Clock
    hub: EventHub
    #: where the API reports the transitions it makes (PENDING -> ABORTED)
    events: Transitions
    actors: NodeActors
    #: the node's notifier (``tickwork.notify``): told of the schedules this node stores
    notices: NotifierHost | None = None
    #: trio time at which the node started
    started_at: float = attrs.field(factory=trio.current_time)

    async def stored_pending(self, run_at_us: int) -> None:
        """Tell the Puller an instance due at ``run_at_us`` was stored."""
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # node stopping
            await self.actors.to_puller.send(PendingAt(run_at_us))

    async def abort_held(self, instance_ids: tuple[int, ...]) -> None:
        """Carry out aborts requested in the store of instances this node holds."""
        # (once the node stops, what it holds is recorded or given back anyway)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.actors.to_aborts.send(AbortRequested(instance_ids))

    def close(self) -> None:
        """The node stops: the API sends nothing more; abort waiters ask the store."""
        self.actors.to_puller.close()
        self.actors.to_aborts.close()
        self.actors.abort_waiters.close()
