"""A node's settings: what ``open_scheduler``'s keyword arguments come to, checked once.

:meth:`NodeSettings.from_options` turns the arguments (timedeltas, counts) into one
frozen record in the units the actors use (microseconds, seconds), refusing a bad one
with ``InvalidArgument`` before the store is opened. The record validates itself too
(attrs validators), so a node is never built from settings out of range.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Final, final

import attrs

from tickwork._time import td_us
from tickwork.errors import InvalidArgument
from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_max_params_bytes
from tickwork.node.mode import CLUSTER_LINGER, node_mode
from tickwork.stores.base import Store

__all__ = ["MIN_POLL_INTERVAL", "NodeSettings", "default_node_id"]

#: The shortest ``poll_interval``: a node polling its store more often than this burns CPU
#: (and the store's) for changes a few milliseconds sooner.
MIN_POLL_INTERVAL: Final = timedelta(milliseconds=10)


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _positive_td(name: str, value: object) -> int:
    if not isinstance(value, timedelta):
        raise InvalidArgument(f"{name} must be a datetime.timedelta, got {value!r}")
    if value <= timedelta(0):
        raise InvalidArgument(f"{name} must be positive, got {value}")
    return td_us(value)


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _poll_us(poll_interval: object) -> int:
    poll_us = _positive_td("poll_interval", poll_interval)
    if poll_us < td_us(MIN_POLL_INTERVAL):
        raise InvalidArgument(
            f"poll_interval must be at least {td_us(MIN_POLL_INTERVAL) // 1000} ms, got "
            f"{poll_interval!r}"
        )
    return poll_us


def _seconds(name: str, value: object, *, most: float | None = None) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else -1.0
    if seconds < 0 or (most is not None and seconds > most):
        bound = ">= 0" if most is None else f"from 0 to {most:g} s"
        raise InvalidArgument(f"{name} must be a timedelta {bound}, got {value!r}")
    return seconds


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    _positive_int(attribute.name, value)


def _not_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise InvalidArgument(f"{attribute.name} must not be negative, got {value!r}")


def _optional_at_least_one(
    _: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None:
        _positive_int(attribute.name, value)


@final
@attrs.frozen(kw_only=True)
class NodeSettings:
    """One node's settings in the actors' units (see ``open_scheduler`` for each)."""

    node_id: str
    #: look-ahead window, and how far ahead the Puller claims (the claim horizon)
    window_us: int = attrs.field(validator=_at_least_one)
    horizon_us: int = attrs.field(validator=_at_least_one)
    lease_us: int = attrs.field(validator=_at_least_one)
    poll_us: int = attrs.field(validator=_at_least_one)
    #: seconds running instances get to finish on shutdown
    grace: float = attrs.field(validator=_not_negative)
    max_in_memory: int = attrs.field(validator=_at_least_one)
    max_concurrency: int = attrs.field(validator=_at_least_one)
    #: instances per claim and the largest batch between actors (at most max_in_memory)
    batch_size: int = attrs.field(validator=_at_least_one)
    hook_concurrency: int = attrs.field(validator=_at_least_one)
    #: seconds store calls may keep failing before the node stops
    outage_limit: float = attrs.field(validator=_not_negative)
    #: seconds a call of the API retries a failing store before StoreUnavailable
    user_call_retry: float = attrs.field(default=0.0, validator=_not_negative)
    retention_us: int | None = attrs.field(default=None, validator=_optional_at_least_one)
    #: seconds outcomes may wait to share a commit
    linger: float = attrs.field(default=0.0, validator=_not_negative)
    max_params_bytes: int = attrs.field(default=DEFAULT_MAX_PARAMS_BYTES)
    #: whether the store is a cluster store (PostgreSQL): heartbeats, fair shares
    clustered: bool = False

    def __attrs_post_init__(self) -> None:
        check_max_params_bytes(self.max_params_bytes)
        if self.horizon_us > self.window_us:
            raise InvalidArgument("the claim horizon must not be longer than the window")
        if self.batch_size > self.max_in_memory:
            raise InvalidArgument("batch_size must not be larger than max_in_memory")

    @property
    def low_water(self) -> int:
        """When the node holds this many or fewer, the Puller pulls again."""
        return self.max_in_memory - min(self.batch_size, max(self.max_in_memory // 2, 1))

    @classmethod
    def from_options(
        cls,
        store: Store,
        *,
        window: timedelta,
        max_in_memory: int,
        max_concurrency: int,
        node_id: str | None,
        batch_size: int,
        lease: timedelta | None,
        poll_interval: timedelta,
        shutdown_grace: timedelta,
        hook_concurrency: int,
        store_outage_limit: timedelta,
        user_call_retry: timedelta,
        retention: timedelta | None,
        claim_horizon: timedelta | None,
        record_linger: timedelta | None,
        max_params_bytes: int,
    ) -> NodeSettings:
        """Check ``open_scheduler``'s arguments and convert them.

        Raises:
            InvalidArgument: a setting out of range (the message names it).
        """
        window_us = _positive_td("window", window)
        mode = node_mode(store, window_us=window_us, lease=lease, claim_horizon=claim_horizon)
        poll_us = _poll_us(poll_interval)
        grace = _seconds("shutdown_grace", shutdown_grace)
        for name, value in (
            ("max_in_memory", max_in_memory),
            ("max_concurrency", max_concurrency),
            ("batch_size", batch_size),
            ("hook_concurrency", hook_concurrency),
        ):
            _positive_int(name, value)
        outage_limit = _positive_td("store_outage_limit", store_outage_limit) / 1e6
        if not isinstance(user_call_retry, timedelta) or user_call_retry < timedelta(0):
            raise InvalidArgument(
                f"user_call_retry must be a timedelta >= 0, got {user_call_retry!r}"
            )
        retention_us = None if retention is None else _positive_td("retention", retention)
        if record_linger is None:
            record_linger = timedelta(0) if mode.cluster is None else CLUSTER_LINGER
        linger = _seconds("record_linger", record_linger, most=1)
        check_max_params_bytes(max_params_bytes)
        return cls(
            node_id=node_id or default_node_id(),
            window_us=window_us,
            horizon_us=mode.horizon_us,
            lease_us=mode.lease_us,
            poll_us=poll_us,
            grace=grace,
            max_in_memory=max_in_memory,
            max_concurrency=max_concurrency,
            batch_size=min(batch_size, max_in_memory),
            hook_concurrency=hook_concurrency,
            outage_limit=outage_limit,
            user_call_retry=user_call_retry.total_seconds(),
            retention_us=retention_us,
            linger=linger,
            max_params_bytes=max_params_bytes,
            clustered=mode.cluster is not None,
        )
