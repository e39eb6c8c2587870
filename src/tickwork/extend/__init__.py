"""Extension points of the node: run middleware, dispatchers and plugins.

See ``docs/extending.md``. The public names are re-exported from ``tickwork``.
"""

from __future__ import annotations

from tickwork.extend._plugins import Plugin as Plugin
from tickwork.extend._plugins import PluginContext as PluginContext
from tickwork.extend._run import CallNext as CallNext
from tickwork.extend._run import Dispatcher as Dispatcher
from tickwork.extend._run import RunContext as RunContext
from tickwork.extend._run import RunMiddleware as RunMiddleware

__all__ = ["CallNext", "Dispatcher", "Plugin", "PluginContext", "RunContext", "RunMiddleware"]
