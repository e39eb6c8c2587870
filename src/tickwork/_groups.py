"""Exception groups at the edge of the library: a lone exception comes out as itself.

trio's nurseries wrap whatever crosses them in an ``ExceptionGroup``, even one exception
raised by the code in an ``async with open_scheduler(...)`` block. A user who wrote
``raise ValueError`` there expects ``except ValueError`` to catch it, as trio-websocket's
``open_websocket`` does since its 0.12 release: when the group holds nothing but what the
block raised, that exception is re-raised as itself, with its own context and traceback.
When more than one thing went wrong (the block raised and an actor crashed), the group
is kept whole: nothing is hidden. An actor's crash alone still comes out grouped.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn, ParamSpec, TypeVar

__all__ = ["leaves", "lone_exceptions_unwrapped", "only", "reraise"]

P = ParamSpec("P")
T = TypeVar("T")


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """Whether ``group`` holds nothing but ``exc``: the same exception objects, however
    grouped (a cancel scope on the way out splits groups into copies, so when ``exc`` is
    itself a group it can arrive as a copy holding the same leaves)."""
    mine = leaves(exc)
    held = leaves(group)
    return len(held) == len(mine) and {id(e) for e in held} == {id(e) for e in mine}


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` from inside an ``except`` block without chaining it to the exception
    handled there (the group that holds it: that would make a cycle)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def lone_exceptions_unwrapped(
    open_cm: Callable[P, AbstractAsyncContextManager[T]],
) -> Callable[P, AbstractAsyncContextManager[T]]:
    """Wrap an async context manager that runs a nursery around its block so that what
    the block raises comes out as itself, unless something else went wrong too."""

    @functools.wraps(open_cm)
    @asynccontextmanager
    async def unwrapped(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        raised: BaseException | None = None
        try:
            async with open_cm(*args, **kwargs) as value:
                try:
                    yield value
                except BaseException as exc:
                    raised = exc
                    raise
        except BaseExceptionGroup as group:
            if raised is not None and only(group, raised):
                reraise(raised)
            raise

    return unwrapped
