"""tickwork: a durable job scheduler for trio.

The public API is re-exported here; everything else is private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickwork.clock import Clock as Clock
from tickwork.clock import SystemClock as SystemClock
from tickwork.errors import DuplicateTask as DuplicateTask
from tickwork.errors import IllegalTransition as IllegalTransition
from tickwork.errors import InvalidArgument as InvalidArgument
from tickwork.errors import InvalidState as InvalidState
from tickwork.errors import MiddlewareFailed as MiddlewareFailed
from tickwork.errors import NotATickworkDatabase as NotATickworkDatabase
from tickwork.errors import NotFound as NotFound
from tickwork.errors import PluginCrashed as PluginCrashed
from tickwork.errors import SchedulerClosed as SchedulerClosed
from tickwork.errors import SchemaTooNew as SchemaTooNew
from tickwork.errors import StoreError as StoreError
from tickwork.errors import StoreLocked as StoreLocked
from tickwork.errors import StoreUnavailable as StoreUnavailable
from tickwork.errors import TaskTimeout as TaskTimeout
from tickwork.errors import TickworkError as TickworkError
from tickwork.errors import UnknownTask as UnknownTask
from tickwork.events import EventRun as EventRun
from tickwork.events import EventsLost as EventsLost
from tickwork.events import Subscription as Subscription
from tickwork.events import TransitionEvent as TransitionEvent
from tickwork.extend import CallNext as CallNext
from tickwork.extend import Dispatcher as Dispatcher
from tickwork.extend import Plugin as Plugin
from tickwork.extend import PluginContext as PluginContext
from tickwork.extend import RunContext as RunContext
from tickwork.extend import RunMiddleware as RunMiddleware
from tickwork.model import Attempt as Attempt
from tickwork.model import Instance as Instance
from tickwork.model import InstanceFilter as InstanceFilter
from tickwork.model import NewInstance as NewInstance
from tickwork.model import RunOutput as RunOutput
from tickwork.model import pack as pack
from tickwork.model import unpack as unpack
from tickwork.node.scheduler import Scheduler as Scheduler
from tickwork.node.scheduler import SchedulerStatistics as SchedulerStatistics
from tickwork.node.statistics import Counters as Counters
from tickwork.node.statistics import Gauges as Gauges
from tickwork.node.wiring import open_scheduler as open_scheduler
from tickwork.notify import Notify as Notify
from tickwork.schedules.schedule import Schedule as Schedule
from tickwork.schedules.triggers import Cron as Cron
from tickwork.schedules.triggers import Interval as Interval
from tickwork.state import State as State
from tickwork.stores.base import Store as Store
from tickwork.stores.cluster import NodeInfo as NodeInfo
from tickwork.stores.memory import MemoryStore as MemoryStore
from tickwork.stores.sqlite import SQLiteStore as SQLiteStore
from tickwork.task import Task as Task
from tickwork.task import current_instance as current_instance
from tickwork.tasks.bash import BashFailed as BashFailed
from tickwork.tasks.bash import BashTask as BashTask
from tickwork.tasks.bash import BashTimeout as BashTimeout

if TYPE_CHECKING:
    from tickwork.stores.postgres import PostgresStore as PostgresStore

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "BashFailed",
    "BashTask",
    "BashTimeout",
    "CallNext",
    "Clock",
    "Counters",
    "Cron",
    "Dispatcher",
    "DuplicateTask",
    "EventRun",
    "EventsLost",
    "Gauges",
    "IllegalTransition",
    "Instance",
    "InstanceFilter",
    "Interval",
    "InvalidArgument",
    "InvalidState",
    "MemoryStore",
    "MiddlewareFailed",
    "NewInstance",
    "NodeInfo",
    "NotATickworkDatabase",
    "NotFound",
    "Notify",
    "Plugin",
    "PluginContext",
    "PluginCrashed",
    "PostgresStore",
    "RunContext",
    "RunMiddleware",
    "RunOutput",
    "SQLiteStore",
    "Schedule",
    "Scheduler",
    "SchedulerClosed",
    "SchedulerStatistics",
    "SchemaTooNew",
    "State",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "Subscription",
    "SystemClock",
    "TaskTimeout",
    "TickworkError",
    "TransitionEvent",
    "UnknownTask",
    "current_instance",
    "open_scheduler",
    "pack",
    "unpack",
]


def __getattr__(name: str) -> object:
    # PostgresStore needs psycopg (the tickwork[postgres] extra): imported on first use.
    if name == "PostgresStore":
        from tickwork.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    raise AttributeError(f"module 'tickwork' has no attribute {name!r}")
