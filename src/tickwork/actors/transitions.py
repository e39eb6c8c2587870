"""Where the actors report the transitions they make: the node's event stream.

Each actor that moves an instance (Puller: PENDING -> CLAIMED, Executor: CLAIMED ->
RUNNING, Recorder: the outcome) is given the node's :class:`Transitions` when it is
built and tells it what it did; subscribers (``scheduler.subscribe()``) read the events.
Publishing never blocks (see :mod:`tickwork.events`: a batch is published as one chunk
of the instances, built into events only when a subscriber reads them), and costs one
attribute check when nobody subscribes.
"""

from __future__ import annotations

from typing import final

from tickwork.events import EventHub
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
        """``inst`` moved from ``from_state`` to ``to_state`` at ``at_us`` (a run's start,
        an abort): it waits with the others published one by one until a subscriber
        reads them together."""
        self.hub.moved(inst, from_state, to_state, at_us)

    def claimed(self, batch: list[Instance], at_us: int) -> None:
        """A batch went PENDING -> CLAIMED (one chunk for the batch)."""
        self.hub.moved_together(batch, State.PENDING, State.CLAIMED, at_us)

    def recorded(
        self,
        instances: list[Instance],
        froms: list[State],
        tos: list[State],
        errors: list[str | None],
        at_us: int,
    ) -> None:
        """A recorded batch: ``instances[k]`` went from ``froms[k]`` to ``tos[k]``, ended
        with ``errors[k]`` (one chunk for the batch)."""
        self.hub.recorded(instances, froms, tos, errors, at_us)
