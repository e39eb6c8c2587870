"""Whether an object really has the Store protocol's methods (a ``runtime_checkable``
``isinstance`` only looks for the names)."""

from __future__ import annotations

import inspect

from tickwork.stores.base import Store

#: The names of the Store protocol's methods, in the protocol's order.
STORE_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(Store).items() if inspect.iscoroutinefunction(value)
)


def _shape(fn: object) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def protocol_mismatches(obj: object) -> list[str]:
    """What ``obj`` lacks or gets wrong among the Store protocol's methods: a missing
    method, one that is not ``async``, or parameters (names, kinds, defaults) that differ."""
    wrong = []
    for name in STORE_METHODS:
        method = getattr(obj, name, None)
        if method is None:
            wrong.append(f"{name}: missing")
        elif not inspect.iscoroutinefunction(method):
            wrong.append(f"{name}: not an async method")
        elif _shape(method) != _shape(getattr(Store, name)):
            wrong.append(f"{name}: {_shape(method)} != {_shape(getattr(Store, name))}")
    return wrong
