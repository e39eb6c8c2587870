"""Whether an object really has a protocol's methods (a ``runtime_checkable``
``isinstance`` only looks for the names)."""

from __future__ import annotations

import inspect
from typing import Protocol

from tickwork.stores.base import Store


def protocol_methods(protocol: type) -> dict[str, object]:
    """The methods ``protocol`` declares, its base protocols' included, by name."""
    methods: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        methods.update(
            {n: v for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}
        )
    return methods


#: The names of the Store protocol's methods, in the protocol's order.
STORE_METHODS: tuple[str, ...] = tuple(protocol_methods(Store))


def _shape(fn: object) -> list[tuple[str, object, object]]:
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def protocol_mismatches(obj: object, protocol: type = Store) -> list[str]:
    """What ``obj`` lacks or gets wrong among ``protocol``'s methods: a missing method, one
    that is ``async`` where the protocol's is not (or the reverse), or parameters (names,
    kinds, defaults) that differ."""
    wrong = []
    for name, declared in protocol_methods(protocol).items():
        method = getattr(obj, name, None)
        if method is None:
            wrong.append(f"{name}: missing")
        elif inspect.iscoroutinefunction(method) != inspect.iscoroutinefunction(declared):
            wrong.append(
                f"{name}: not an async method"
                if inspect.iscoroutinefunction(declared)
                else f"{name}: an async method"
            )
        elif _shape(method) != _shape(declared):
            wrong.append(f"{name}: {_shape(method)} != {_shape(declared)}")
    return wrong
