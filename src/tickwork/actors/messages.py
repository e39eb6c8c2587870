"""Messages between the actors: frozen attrs classes; batches travel as one message."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from tickwork.model import Instance


@attrs.frozen(slots=True)
class Abort:
    """Carry out an abort of a held instance (Timekeeper first, then the Executor)."""

    instance_id: int


@attrs.frozen(slots=True)
class Evict:
    """Give back up to ``count`` of the latest-due held instances due after ``after_us``,
    to make room in the window for an earlier one."""

    after_us: int
    count: int


@attrs.frozen(slots=True)
class Wake:
    """Pull again as soon as possible: something changed elsewhere (Leases -> Puller)."""


@attrs.frozen(slots=True)
class PendingAt:
    """Another process stored an instance due at ``run_at_us`` (Leases -> Puller)."""

    run_at_us: int


@attrs.frozen(slots=True)
class Rearm:
    """Work out again when to pull: another node's lease lapses at a new time
    (Leases -> Puller)."""


#: What the Leases actor tells the Puller.
PullerMsg = Wake | PendingAt | Rearm


@attrs.frozen(slots=True)
class Due:
    """A batch of instances whose time has come (Timekeeper -> Executor)."""

    instances: list[Instance]


@attrs.frozen(slots=True)
class Cancelled:
    """Instances the Timekeeper dropped before they ran (aborted while claimed)."""

    instances: list[Instance]


class Kind(enum.Enum):
    """How one run ended."""

    #: ``run`` returned.
    OK = "ok"
    #: ``run`` raised.
    ERROR = "error"
    #: aborted by a user: before it ran or while it ran (or, for a schedule occurrence,
    #: by its schedule's removal: then ``result`` is the reason).
    ABORTED = "aborted"
    #: interrupted by the node's shutdown: goes back to PENDING (or FAILED, at-most-once).
    INTERRUPTED = "interrupted"
    #: its task is not registered on this node.
    UNKNOWN_TASK = "unknown_task"
    #: not started: the node could not renew the lease of its claim in time (cluster), so
    #: another node may take it over; given back to PENDING if still held.
    LOST = "lost"
    #: a schedule occurrence its overlap policy or paused schedule skipped: MISSED, with
    #: the reason in ``result``.
    SKIPPED = "skipped"
    #: a schedule occurrence cancelled by the next one (overlap="cancel_previous"): ABORTED.
    SUPERSEDED = "superseded"
    #: not an end: an at-least-once run in progress (``started_us`` set). The Recorder writes
    #: RUNNING for it with its next batch, unless the run's outcome is in that batch.
    STARTED = "started"


@attrs.frozen(slots=True)
class Outcome:
    """How one instance's run ended (Executor -> Recorder)."""

    instance: Instance
    kind: Kind
    result: Any = None
    error: BaseException | None = None
    started_us: int | None = None
    finished_us: int | None = None
