"""The public API is pinned: a name that disappears from tickwork fails here."""

from __future__ import annotations

import tickwork
import tickwork.stores

PUBLIC = {
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
}


#: What ``tickwork.stores`` offers someone writing a store of their own (docs/stores.md).
STORES_PUBLIC = {
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
}


def test_public_names_are_exported():
    # both ways: a name that disappears and a name added without being pinned here fail
    assert set(tickwork.__all__) == PUBLIC
    for name in tickwork.__all__:
        assert hasattr(tickwork, name), name


def test_stores_names_are_exported():
    assert sorted(tickwork.stores.__all__) == sorted(STORES_PUBLIC)
    for name in tickwork.stores.__all__:
        assert hasattr(tickwork.stores, name), name


def test_all_is_sorted_and_has_no_private_names():
    assert list(tickwork.__all__) == sorted(tickwork.__all__)
    for names in (tickwork.__all__, tickwork.stores.__all__):  # (ruff sorts the second)
        assert not [n for n in names if n.startswith("_")]


def test_state_members_match_the_design():
    assert [s.name for s in tickwork.State] == [
        "PENDING",
        "CLAIMED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "ABORTED",
        "MISSED",
    ]


def test_exceptions_derive_from_tickwork_error():
    for name in tickwork.__all__:
        obj = getattr(tickwork, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tickwork.TickworkError), name
