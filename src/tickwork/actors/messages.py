"""Every message between the actors: frozen attrs classes; a batch travels as one message.

Who sends what (see ``docs/architecture.md``)::

    API, Leases --AbortRequested--> Aborts --AbortRequested--> Recorder
                                           --Abort-----------> Timekeeper
    API --PendingAborted--> Aborts --PendingAborted--> Recorder (runs on_abort)
    Puller --Claimed, Evict--> Timekeeper --Due, Cancelled, Abort--> Executor
    Executor --Outcomes--> Recorder --AbortRecorded--> the API's abort waiters
    API, Leases, Timekeeper, Recorder --Wake, PendingAt, Rearm, RoomFreed--> Puller
    Leases --SchedulesChanged--> the notifier's host (tickwork.notify)

An actor holds only the ends of the channels it was given; nothing is shared between
two actors but these messages (and the store).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from tickwork.model import Instance
from tickwork.state import State

# -- to the Puller ----------------------------------------------------------------


@attrs.frozen(slots=True)
class Wake:
    """Pull again as soon as possible: something changed elsewhere (Leases -> Puller)."""


@attrs.frozen(slots=True)
class PendingAt:
    """An instance due at ``run_at_us`` was stored (by the API, a retry, or another
    process: the Leases actor heard of it). The Puller wakes if it is inside its window."""

    run_at_us: int


@attrs.frozen(slots=True)
class Rearm:
    """Work out again when to pull: another node's lease lapses at a new time
    (Leases -> Puller)."""


@attrs.frozen(slots=True)
class RoomFreed:
    """``count`` held instances left the node (recorded, given back, or claimed again):
    their places in the window are free (Recorder, Timekeeper -> Puller). The Puller pulls
    again when the count it holds falls to its low-water mark, or at once if ``wake``."""

    count: int
    wake: bool = False


#: What the Puller receives on its inbox.
PullerMsg = Wake | PendingAt | Rearm | RoomFreed

# -- to the Timekeeper --------------------------------------------------------------


@attrs.frozen(slots=True)
class Claimed:
    """A batch of instances just claimed, to hold until their time (Puller -> Timekeeper)."""

    instances: list[Instance]


@attrs.frozen(slots=True)
class Abort:
    """Carry out an abort of a held instance (Timekeeper first, then the Executor)."""

    instance_id: int


@attrs.frozen(slots=True)
class Evict:
    """Give back up to ``count`` of the latest-due held instances due after ``after_us``,
    to make room in the window for an earlier one (Puller -> Timekeeper)."""

    after_us: int
    count: int


#: What the Timekeeper receives.
TimekeeperMsg = Claimed | Abort | Evict

# -- to the Executor ----------------------------------------------------------------


@attrs.frozen(slots=True)
class Due:
    """A batch of instances whose time has come (Timekeeper -> Executor)."""

    instances: list[Instance]


@attrs.frozen(slots=True)
class Cancelled:
    """Instances the Timekeeper dropped before they ran (aborted while claimed)."""

    instances: list[Instance]


#: What the Executor receives.
ExecutorMsg = Due | Cancelled | Abort

# -- to the Recorder ----------------------------------------------------------------


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
    """How one instance's run ended (one item of :class:`Outcomes`)."""

    instance: Instance
    kind: Kind
    result: Any = None
    error: BaseException | None = None
    started_us: int | None = None
    finished_us: int | None = None


@attrs.frozen(slots=True)
class Outcomes:
    """A batch of run outcomes to record (Executor -> Recorder)."""

    outcomes: list[Outcome]


@attrs.frozen(slots=True)
class AbortRequested:
    """The store holds an abort request for these held instances (API, Leases -> the
    Aborts actor -> Recorder): whatever outcome of theirs comes, the store writes ABORTED
    where it would have written PENDING (a retry or a give-back), and the Recorder
    reports that. The Aborts actor also sends each one down the pipeline as an
    :class:`Abort`."""

    instance_ids: tuple[int, ...]


@attrs.frozen(slots=True)
class PendingAborted:
    """The API aborted ``instance`` while it was PENDING (no actor held it): its task's
    ``on_abort`` hook runs on the node, under ``hook_concurrency`` like every hook (API ->
    the Aborts actor -> Recorder)."""

    instance: Instance


#: What the Aborts actor receives.
AbortsMsg = AbortRequested | PendingAborted

#: What the Recorder receives.
RecorderMsg = Outcomes | AbortRequested | PendingAborted

# -- from the Recorder --------------------------------------------------------------


@attrs.frozen(slots=True)
class AbortRecorded:
    """The outcome of an instance whose abort was requested is durable, in ``state``
    (Recorder -> the API's abort waiters)."""

    instance_id: int
    state: State


# -- from the Leases actor to the notifier --------------------------------------------


@attrs.frozen(slots=True)
class SchedulesChanged:
    """Another process may have added, replaced or removed schedules (a PostgreSQL
    notice of it, or any change a single node's poll saw): the notifier reads their
    ``notify`` again, and a node that runs none looks for one (Leases -> the notifier's
    host, :mod:`tickwork.notify`)."""
