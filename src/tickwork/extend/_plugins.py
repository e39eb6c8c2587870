"""Plugins: a user's own actor in the node's nursery, with the scheduler at hand.

The shape follows Oban's plugins: an object the node validates when it is configured
and starts once the node is ready, handing it the node's context (here the
``Scheduler``, whose ``subscribe()`` is the event stream, the node id and the clock).
Plugins start after every actor is running, in the order given, and are cancelled first
when the node stops, before it stops claiming and drains: a plugin is a user of the
node, like the ``async with`` body. A plugin that raises stops the node the way an
exception from the body does, and ``open_scheduler`` raises ``PluginCrashed``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar, final

import attrs
import trio

from tickwork.errors import InvalidArgument, PluginCrashed

if TYPE_CHECKING:
    from tickwork.clock import Clock
    from tickwork.events import Subscription
    from tickwork.node.scheduler import Scheduler

log = logging.getLogger("tickwork.plugins")


@final
@attrs.frozen(slots=True)
class PluginContext:
    """What a plugin gets from the node it runs in."""

    #: the node's public API (schedule, abort, get, list, statistics, ...)
    scheduler: Scheduler
    #: the node's id in the store
    node_id: str
    #: the node's wall clock (``now()``, ``sleep_until()``): a VirtualClock in tests
    clock: Clock

    def subscribe(self, *, buffer: int = 10_000) -> Subscription:
        """The node's event stream: ``scheduler.subscribe(buffer=buffer)``."""
        return self.scheduler.subscribe(buffer=buffer)


class Plugin:
    """A user's actor in the node. Subclass it, set ``name`` and implement ``run``.

    ``run(context)`` runs for as long as the node does (it is cancelled when the node
    stops) or returns early when its work is done. If it accepts a ``task_status``
    keyword, the node waits for ``task_status.started()`` before the ``async with`` body
    runs (trio's ``nursery.start`` convention); otherwise it is started and not waited
    for. ``validate()`` checks the plugin's settings when ``open_scheduler`` is called,
    before the store opens.
    """

    #: the plugin's name in logs and errors (default: the class name)
    name: ClassVar[str] = ""

    def validate(self) -> None:
        """Refuse bad settings with ``tickwork.InvalidArgument``. Default: accept."""

    async def run(self, context: PluginContext) -> None:
        """The plugin's work. Override this."""
        raise NotImplementedError(f"plugin {plugin_name(self)!r} does not implement run()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {plugin_name(self)!r}>"


def plugin_name(plugin: Plugin) -> str:
    return plugin.name or type(plugin).__name__


def check_plugins(plugins: object) -> tuple[Plugin, ...]:
    """Refuse anything but a sequence of validated plugins with distinct names."""
    if isinstance(plugins, Plugin) or not isinstance(plugins, Iterable):
        raise InvalidArgument(f"plugins must be a list of plugins, e.g. plugins=[Pruner()], "
                              f"got {plugins!r}")  # fmt: skip
    checked = tuple(plugins)
    seen: set[str] = set()
    for plugin in checked:
        if not isinstance(plugin, Plugin):
            raise InvalidArgument(
                f"plugins must be tickwork.Plugin instances, got {plugin!r}"
                + ("; pass an instance, not the class" if isinstance(plugin, type) else "")
            )
        name = plugin_name(plugin)
        if name in seen:
            raise InvalidArgument(f"two plugins are named {name!r}; plugin names must be unique")
        seen.add(name)
        plugin.validate()
    return checked


def _takes_task_status(plugin: Plugin) -> bool:
    return "task_status" in inspect.signature(plugin.run).parameters


async def _run_plugin(
    plugin: Plugin,
    context: PluginContext,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    name = plugin_name(plugin)
    try:
        if _takes_task_status(plugin):
            await plugin.run(context, task_status=task_status)  # type: ignore[call-arg]
        else:
            task_status.started()
            await plugin.run(context)
    except Exception as exc:
        log.exception("plugin %r crashed; node %s stops", name, context.node_id)
        raise PluginCrashed(
            f"plugin {name!r} crashed: {type(exc).__name__}: {exc}; the node stopped"
        ) from exc


@asynccontextmanager
async def running_plugins(
    plugins: tuple[Plugin, ...], scheduler: Scheduler, clock: Clock
) -> AsyncIterator[None]:
    """Start ``plugins`` on a ready node; cancel them when the block is left."""
    if not plugins:
        yield
        return
    context = PluginContext(scheduler, scheduler.node_id, clock)
    async with trio.open_nursery() as nursery:
        for plugin in plugins:
            await nursery.start(_run_plugin, plugin, context)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
