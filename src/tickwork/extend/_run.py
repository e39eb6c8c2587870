"""Run middleware and dispatchers: what happens between "this instance is due and may
start" and "here is how its run ended".

The Executor keeps everything that makes a run safe (admission, concurrency limits, the
claim's lease check, the durable start of at-most-once runs, the run's cancel scope for
aborts, timeouts and shutdown) and then awaits one call per run. By default that call is
``task.run(params)``. With extensions it is the middleware chain, outermost first, around
the dispatcher's ``dispatch``: whatever that returns or raises is the run's outcome, which
the Recorder writes as it writes any other (fenced by the claim).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeAlias, final

from tickwork.errors import InvalidArgument, MiddlewareFailed, TickworkError

if TYPE_CHECKING:
    from tickwork.model import Instance
    from tickwork.task import Task


@final
class RunContext:
    """One run, as a middleware or a dispatcher sees it (read-only).

    A plain slotted class rather than a frozen attrs class: one is made per run, and
    this is several times cheaper to build (see docs/extending.md, "Cost").
    """

    __slots__ = ("_instance", "_node_id", "_started_us", "_task")

    def __init__(self, instance: Instance, task: Task, node_id: str, started_us: int) -> None:
        self._instance = instance
        self._task = task
        self._node_id = node_id
        self._started_us = started_us

    @property
    def instance(self) -> Instance:
        """The instance being run (``id``, ``task``, ``params``, ``attempts`` so far, ...)."""
        return self._instance

    @property
    def task(self) -> Task:
        """The registered task of that name."""
        return self._task

    @property
    def node_id(self) -> str:
        """The node running it."""
        return self._node_id

    @property
    def started_us(self) -> int:
        """When the run started (wall clock, microseconds since the epoch)."""
        return self._started_us

    def __repr__(self) -> str:
        return (
            f"RunContext(instance={self._instance.id}, task={self._task.name!r}, "
            f"node_id={self._node_id!r}, started_us={self._started_us})"
        )


#: ``call_next()`` runs the rest of the chain (the next middleware, or the dispatch).
CallNext: TypeAlias = Callable[[], Awaitable[Any]]

#: An async callable ``(run, call_next) -> result`` wrapped around every run.
RunMiddleware: TypeAlias = Callable[[RunContext, CallNext], Awaitable[Any]]

#: What the Executor awaits for one run (built here; None means ``task.run(params)``).
Runner: TypeAlias = Callable[["Instance", "Task", int], Awaitable[Any]]


class Dispatcher:
    """Where runs go. The default runs the task in the node (``task.run(params)``).

    Subclass it to send runs elsewhere, for example to a remote worker pool: ``dispatch``
    hands the run over and returns the result when the outcome comes back (or raises the
    failure). The node keeps the run's worker slot, its claim (renewed by the node's
    leases) and its cancel scope while it waits, so ``max_concurrency`` bounds the runs in
    flight, an abort or a timeout cancels the wait (tell the remote side in an
    ``except trio.Cancelled`` block), and the outcome is recorded like any other.
    """

    async def dispatch(self, run: RunContext) -> Any:
        """Run ``run`` and return its result; an exception is the run's failure."""
        return await run.task.run(run.instance.params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """What the dispatcher holds while the node runs (a connection, a task reading
        replies). Entered before the node starts and exited after its last run ended and
        was recorded. The default holds nothing."""
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _name(middleware: object) -> str:
    """A function's name, or an object's class name: what the user called it."""
    name = getattr(middleware, "__name__", None) or type(middleware).__name__
    return str(name)


def _is_async_callable(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def check_middleware(middleware: object) -> tuple[RunMiddleware, ...]:
    """Refuse anything but a sequence of async callables, before the node starts."""
    if (
        callable(middleware)
        or not isinstance(middleware, Iterable)
        or isinstance(middleware, str | bytes)
    ):
        raise InvalidArgument(
            f"middleware must be a list of async callables, e.g. middleware=[timing], "
            f"got {middleware!r}"
        )
    chain = tuple(middleware)
    for mw in chain:
        if not _is_async_callable(mw):
            raise InvalidArgument(
                f"each middleware must be an async callable (run, call_next) -> result, got {mw!r}"
            )
    return chain


def check_dispatcher(dispatcher: object) -> Dispatcher | None:
    if dispatcher is None or isinstance(dispatcher, Dispatcher):
        return dispatcher
    raise InvalidArgument(
        f"dispatcher must be a tickwork.Dispatcher (subclass it), got {dispatcher!r}"
    )


def build_runner(
    middleware: Sequence[RunMiddleware], dispatcher: Dispatcher | None, node_id: str
) -> Runner | None:
    """The call the Executor awaits per run; None when nothing is extended (the Executor
    then calls ``task.run`` itself, at no cost). The chain is composed once, here."""
    if not middleware and dispatcher is None:
        return None
    call: Callable[[RunContext], Awaitable[Any]] = (dispatcher or Dispatcher()).dispatch
    for layer in reversed(middleware):
        call = _wrapped(layer, call)

    async def runner(instance: Instance, task: Task, started_us: int) -> Any:
        return await call(RunContext(instance, task, node_id, started_us))

    return runner


def _wrapped(
    middleware: RunMiddleware, inner: Callable[[RunContext], Awaitable[Any]]
) -> Callable[[RunContext], Awaitable[Any]]:
    """``inner`` (the rest of the chain) behind ``middleware``."""

    async def layer(run: RunContext) -> Any:
        called = False
        inner_error: BaseException | None = None

        async def call_next() -> Any:
            nonlocal called, inner_error
            if called:
                raise TickworkError("call_next() may be awaited once per run")
            called = True
            try:
                return await inner(run)
            except Exception as exc:
                inner_error = exc
                raise

        try:
            return await middleware(run, call_next)
        except Exception as exc:
            # What came out of call_next (the task's error, or an inner middleware's
            # MiddlewareFailed) passes through as itself, and so does an error the
            # middleware deliberately made of it (`raise X from exc`); anything else is
            # its own failure.
            if inner_error is not None and (exc is inner_error or exc.__cause__ is inner_error):
                raise
            raise MiddlewareFailed(
                f"run middleware {_name(middleware)} failed: {type(exc).__name__}: {exc}"
            ) from exc

    return layer
