"""What the hand-off tasks share: their failures, params checks and the idempotency key."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from tickwork.errors import InvalidArgument, TickworkError
from tickwork.model import Instance, unpack

__all__ = [
    "HandoffError",
    "HandoffRejected",
    "HandoffRetryable",
    "check_name",
    "check_timeout",
    "handoff_id",
    "missing_extra",
    "params_map",
]


class HandoffError(TickworkError):
    """A hand-off to a webhook or a broker did not succeed."""


class HandoffRetryable(HandoffError):
    """A failure worth trying again: a 5xx, a timeout, a refused connection, a broker that
    did not confirm. The task's retry policy (``max_attempts``) applies."""


class HandoffRejected(HandoffError):
    """A final failure: the receiver refused the hand-off (a 4xx, an unexpected status)."""


def handoff_id(inst: Instance) -> str:
    """``"<instance id>-<attempt>"``: the same for a run repeated after a crash (the
    attempt is counted only once its outcome is recorded), another for a retry."""
    return f"{inst.id}-{inst.attempts + 1}"


def params_map(task: str, params: bytes, known: Collection[str]) -> dict[str, Any]:
    """Unpack ``params`` into a map with only ``known`` keys.

    Raises:
        InvalidArgument: not msgpack, not a map, or an unknown key; the message says which.
    """
    try:
        raw = unpack(params)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several kinds
        raise InvalidArgument(f"{task} params are not msgpack ({exc!r})") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{task} params must be a map, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise InvalidArgument(
            f"{task} params have unknown keys {unknown}; the known keys are {sorted(known)}"
        )
    return raw


def check_timeout(task: str, value: object, default: float) -> float:
    """A positive, finite number of seconds (``default`` when None)."""
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidArgument(
            f"{task} 'timeout' must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def check_name(task: str, key: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    """A string matching ``pattern``; ``rule`` says in words what is allowed."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(f"{task} {key!r} must be {rule}, got {value!r}")
    return value


def check_str_map(task: str, key: str, value: object) -> dict[str, str]:
    """A map of str to str (empty when None)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(f"{task} {key!r} must be a map of strings to strings, got {value!r}")
    return dict(value)


def missing_extra(package: str, extra: str) -> ImportError:
    """The error for a dependency that is not installed, naming the extra to install."""
    return ImportError(
        f"{package} is not installed: install the extra with `pip install 'tickwork[{extra}]'`"
    )
