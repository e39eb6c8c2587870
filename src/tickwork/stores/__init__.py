"""Stores: durable homes for instances, and what you need to write a store of your own.

:class:`Store` is the protocol (each method's docstring is its contract, see
:mod:`tickwork.stores.base`); ``docs/stores.md`` shows how to implement it. Besides the
built-in stores, this module exports:

* the types the protocol's methods take and return (``NewRow``, ``Finish``, ``Instance``,
  ``AbortResult``, ``Attempt``, ``InstanceFilter``, ``Schedule``, ``ScheduleWrite``,
  ``OccurrenceCheck``, ``State``);
* the rules every store applies: the state table (``Event``, ``apply``, ``lookup``,
  ``HELD``, ``TERMINAL``) and which event a call means for a row (``finish_event``,
  ``finished_state``, ``history_state``, ``release_event``);
* the schedule methods written once over a few primitives: mix ``ScheduleMethods`` in,
  give it a ``ScheduleTx`` (``LiveRow``, ``OccurrenceInfo``, ``Slot``, ``InFlight``), and
  call ``after_claim`` in ``claim`` and ``after_abort`` in ``request_abort``;
* the optional nodes table (``NodeRegistry``, ``NodeInfo``);
* :class:`StoreWrapper`, to act around every call of another store.
"""

from __future__ import annotations

from tickwork.model import LIST_PARAMS_BYTES as LIST_PARAMS_BYTES
from tickwork.model import AbortResult as AbortResult
from tickwork.model import Attempt as Attempt
from tickwork.model import Finish as Finish
from tickwork.model import Instance as Instance
from tickwork.model import InstanceFilter as InstanceFilter
from tickwork.model import NewRow as NewRow
from tickwork.schedules.plan import InFlight as InFlight
from tickwork.schedules.plan import OccurrenceCheck as OccurrenceCheck
from tickwork.schedules.plan import OccurrenceInfo as OccurrenceInfo
from tickwork.schedules.plan import Slot as Slot
from tickwork.schedules.schedule import Schedule as Schedule
from tickwork.schedules.schedule import ScheduleWrite as ScheduleWrite
from tickwork.state import HELD as HELD
from tickwork.state import TERMINAL as TERMINAL
from tickwork.state import Event as Event
from tickwork.state import State as State
from tickwork.state import apply as apply
from tickwork.state import lookup as lookup
from tickwork.stores._rules import finish_event as finish_event
from tickwork.stores._rules import finished_state as finished_state
from tickwork.stores._rules import history_state as history_state
from tickwork.stores._rules import release_event as release_event
from tickwork.stores._schedule_methods import ScheduleMethods as ScheduleMethods
from tickwork.stores._schedule_ops import LiveRow as LiveRow
from tickwork.stores._schedule_ops import ScheduleTx as ScheduleTx
from tickwork.stores._schedule_ops import after_abort as after_abort
from tickwork.stores._schedule_ops import after_claim as after_claim
from tickwork.stores._wrapper import StoreWrapper as StoreWrapper
from tickwork.stores.base import INTERRUPTED as INTERRUPTED
from tickwork.stores.base import Store as Store
from tickwork.stores.cluster import NodeInfo as NodeInfo
from tickwork.stores.cluster import NodeRegistry as NodeRegistry
from tickwork.stores.memory import MemoryStore as MemoryStore
from tickwork.stores.sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "HELD",
    "INTERRUPTED",
    "LIST_PARAMS_BYTES",
    "TERMINAL",
    "AbortResult",
    "Attempt",
    "Event",
    "Finish",
    "InFlight",
    "Instance",
    "InstanceFilter",
    "LiveRow",
    "MemoryStore",
    "NewRow",
    "NodeInfo",
    "NodeRegistry",
    "OccurrenceCheck",
    "OccurrenceInfo",
    "SQLiteStore",
    "Schedule",
    "ScheduleMethods",
    "ScheduleTx",
    "ScheduleWrite",
    "Slot",
    "State",
    "Store",
    "StoreWrapper",
    "after_abort",
    "after_claim",
    "apply",
    "finish_event",
    "finished_state",
    "history_state",
    "lookup",
    "release_event",
]
