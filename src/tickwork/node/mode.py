"""How a node runs on its store: alone (SQLite, memory) or as one of a cluster (PostgreSQL).

``open_scheduler`` asks :func:`node_mode`; a store that implements
:class:`~tickwork.stores.cluster.ClusterStore` makes the node a cluster node, which changes
two defaults (see ``docs/clustering.md``):

* the **lease** is short (10 s, renewed every 3.3 s), so a dead node's work is taken over
  within seconds; a single node's lease only matters to itself (60 s);
* the **claim horizon**, how far ahead the Puller claims, is short (2 s) instead of the
  whole look-ahead window: a node must not hoard an hour of work while the others idle.
  Memory stays bounded by ``max_in_memory`` either way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final, final

import attrs

from tickwork._time import td_us
from tickwork.errors import InvalidArgument
from tickwork.stores.base import Store
from tickwork.stores.cluster import ClusterStore

__all__ = [
    "CLUSTER_HORIZON",
    "CLUSTER_LEASE",
    "MIN_LEASE",
    "SINGLE_LEASE",
    "NodeMode",
    "check_lease",
    "node_mode",
]

CLUSTER_LEASE: Final = timedelta(seconds=10)
SINGLE_LEASE: Final = timedelta(seconds=60)
CLUSTER_HORIZON: Final = timedelta(seconds=2)
#: The shortest lease a node may ask for. A node renews its leases every third of one, so
#: a lease of a millisecond kept an idle node renewing thousands of times a second (~40 %
#: of a core); below a second, a store round trip or a pause of the event loop could let
#: a lease lapse while its node is alive, and its work run twice.
MIN_LEASE: Final = timedelta(seconds=1)
#: How long a cluster node's Recorder lets outcomes wait to share a commit when they
#: come slowly (``open_scheduler(record_linger=...)``): keeps commits per instance low.
CLUSTER_LINGER: Final = timedelta(milliseconds=50)


@final
@attrs.frozen
class NodeMode:
    #: the store as a cluster store, or None for a single node
    cluster: ClusterStore | None
    #: the lease the node plans with (the store may impose its own)
    lease_us: int
    #: how far ahead of now the Puller claims
    horizon_us: int


def _positive(name: str, value: object) -> int:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidArgument(f"{name} must be a positive datetime.timedelta, got {value!r}")
    return td_us(value)


def check_lease(lease: object) -> int:
    """A requested lease in microseconds: a timedelta of at least :data:`MIN_LEASE`.

    Raises:
        InvalidArgument: anything else; the message says the minimum.
    """
    lease_us = _positive("lease", lease)
    if lease_us < td_us(MIN_LEASE):
        raise InvalidArgument(
            f"lease must be at least {MIN_LEASE.total_seconds():g} s (a node renews it every "
            f"third of it), got {lease!r}"
        )
    return lease_us


def node_mode(
    store: Store,
    *,
    window_us: int,
    lease: timedelta | None,
    claim_horizon: timedelta | None,
) -> NodeMode:
    """The mode, lease and claim horizon of a node on ``store``.

    Raises:
        InvalidArgument: a lease shorter than :data:`MIN_LEASE`, a horizon that is not a
            positive timedelta, or a claim horizon longer than the window.
    """
    cluster = store if isinstance(store, ClusterStore) else None
    default_lease = SINGLE_LEASE if cluster is None else CLUSTER_LEASE
    lease_us = check_lease(default_lease if lease is None else lease)
    if cluster is not None:
        lease_us = cluster.granted_lease_us(lease_us)
    if claim_horizon is None:
        horizon_us = window_us if cluster is None else min(window_us, td_us(CLUSTER_HORIZON))
    else:
        horizon_us = _positive("claim_horizon", claim_horizon)
        if horizon_us > window_us:
            raise InvalidArgument(
                f"claim_horizon ({claim_horizon}) must not be longer than the window "
                f"({timedelta(microseconds=window_us)})"
            )
    return NodeMode(cluster=cluster, lease_us=lease_us, horizon_us=horizon_us)
