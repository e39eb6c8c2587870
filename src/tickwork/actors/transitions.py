"""Where the actors report the transitions they make: the node's event stream.

Each actor that moves an instance (Puller: PENDING -> CLAIMED, Executor: CLAIMED ->
RUNNING, Recorder: the outcome) is given the node's :class:`Transitions` when it is
built and tells it what it did; subscribers (``scheduler.subscribe()``) read the events.
Publishing never blocks (see :mod:`tickwork.events`), and costs one attribute check when
nobody subscribes.
"""

from __future__ import annotations

from typing import final

from tickwork.events import EventHub, TransitionEvent
from tickwork.model import Instance
from tickwork.state import State


@final
class Transitions:
    """The node's outgoing transition events (one per node, given to each actor)."""

    def __init__(self, hub: EventHub, node: str) -> None:
        self.hub = hub
        self._node = node

    @property
    def active(self) -> bool:
        """Whether anybody listens (skip building events when not)."""
        return self.hub.active

    def publish(self, inst: Instance, from_state: State, to_state: State, at_us: int) -> None:
        """``inst`` moved from ``from_state`` to ``to_state`` at ``at_us``."""
        if self.hub.active:
            self.hub.publish(
                TransitionEvent(
                    inst.id,
                    inst.task,
                    from_state,
                    to_state,
                    at_us,
                    self._node,
                    inst.run_at_us,
                    inst.schedule_id,
                )
            )

    def claimed(self, batch: list[Instance], at_us: int) -> None:
        """A batch went PENDING -> CLAIMED."""
        if self.hub.active:
            for inst in batch:
                self.publish(inst, State.PENDING, State.CLAIMED, at_us)
