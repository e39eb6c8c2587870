"""The library's own exceptions. Every refusal raises a subclass of TickworkError."""

from __future__ import annotations


class TickworkError(Exception):
    """Base of every exception tickwork raises on purpose."""


class InvalidArgument(TickworkError, ValueError):
    """An argument at the API, CLI or HTTP boundary was refused before anything was stored."""


class UnknownTask(InvalidArgument):
    """A task name that no registered task carries."""


class DuplicateTask(InvalidArgument):
    """Two registered tasks share one name."""


class IllegalTransition(TickworkError):
    """A state change that the state table does not allow."""


class NotFound(TickworkError, LookupError):
    """No instance or schedule with that id."""


class StoreError(TickworkError):
    """The store cannot be used: not a tickwork database, newer schema, broken connection."""


class StoreUnavailable(StoreError):
    """A store call failed in a way that may pass: busy or locked database, disk full,
    I/O error, connection lost. The node's actors retry these with backoff."""


class NotATickworkDatabase(StoreError):
    """The file or database exists but was not created by tickwork."""


class SchemaTooNew(StoreError):
    """The database was written by a newer tickwork than this one."""


class StoreLocked(StoreError):
    """Another running node already holds this database."""


class SchedulerClosed(TickworkError):
    """The scheduler was used after its block was left."""


class TaskTimeout(TickworkError):
    """A run exceeded its timeout and was cancelled."""


class InvalidState(InvalidArgument):
    """The instance is not in a state that allows the operation (for example a retry of
    an instance that did not fail). The HTTP API answers it with 409."""


class MiddlewareFailed(TickworkError):
    """A run middleware raised an exception of its own (not the task's, which passes
    through as itself): the run is recorded as failed with this error, which names the
    middleware; the middleware's exception is its ``__cause__``."""


class PluginCrashed(TickworkError):
    """A plugin's ``run`` raised: the node stops (as when the ``async with`` body raises)
    and ``open_scheduler`` raises this, in an ExceptionGroup as for an actor's crash
    (``except* PluginCrashed``). It names the plugin; its ``__cause__`` is the plugin's
    exception."""
