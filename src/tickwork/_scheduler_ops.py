"""The Scheduler's operator methods (a mixin of :class:`tickwork.Scheduler`): retry an
ended instance, and the nodes that share the store. What the HTTP API and the CLI offer
beyond scheduling and reading."""

from __future__ import annotations

import builtins
import os
import socket
from typing import TYPE_CHECKING

import trio

from tickwork import _operations
from tickwork.stores.cluster import ClusterStore, NodeInfo

if TYPE_CHECKING:
    from tickwork._resilient import ResilientStore
    from tickwork.actors.capacity import Capacity
    from tickwork.actors.executor import Executor
    from tickwork.actors.puller import Puller
    from tickwork.clock import Clock
    from tickwork.task import TaskRegistry

__all__ = ["OperationMethods"]


class OperationMethods:
    """``retry`` and ``nodes``; see ``docs/http.md``."""

    if TYPE_CHECKING:
        node_id: str
        _store: ResilientStore
        _registry: TaskRegistry
        _clock: Clock
        _puller: Puller
        _executor: Executor
        _capacity: Capacity
        _started_at: float

        def _check_open(self) -> None: ...

    async def retry(self, instance_id: int) -> int:
        """Run a FAILED, ABORTED or MISSED instance again: returns the id of a new PENDING
        instance, due now, with the same task, params, ``max_attempts`` and timeout.

        The new instance's ``retry_of`` is ``instance_id``. Retrying one instance twice
        (or from two nodes at once) stores one retry: the second call returns its id.

        Raises:
            NotFound: no instance has this id.
            InvalidState: the instance has not ended in FAILED, ABORTED or MISSED.
            UnknownTask: its task is not registered on this node.
        """
        self._check_open()
        old = await self._store.get(_operations.check_id(instance_id))
        if old is not None:
            self._registry.require(old.task)
        now = self._clock.now_us()
        _, new_id = await _operations.retry(self._store, instance_id, now)
        self._puller.note_pending(now)
        return new_id

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes that use this store, most recently started first.

        On a cluster store, every node that ever opened it (from its nodes table); on a
        single-node store, this node (its lock proves it is the only one).
        """
        self._check_open()
        inner = self._store.inner
        if isinstance(inner, ClusterStore):
            return await inner.nodes()
        await trio.lowlevel.checkpoint()
        now = self._clock.now_us()
        uptime_us = int((trio.current_time() - self._started_at) * 1_000_000)
        running = self._executor.statistics().running
        return [
            NodeInfo(
                node_id=self.node_id,
                started_us=now - uptime_us,
                last_heartbeat_us=now,
                stopped_us=None,
                alive=True,
                held=self._capacity.statistics().held,
                running=running,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=_version(),
            )
        ]


def _version() -> str:
    from tickwork import __version__  # noqa: PLC0415 - the package imports this module

    return __version__
