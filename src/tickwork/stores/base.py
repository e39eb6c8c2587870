"""The Store protocol: what the storage actor needs from a backend.

Every method is async. A blocking backend runs its calls one at a time on a thread of its
own, so a call is atomic from the caller's point of view: once started it completes (or
raises) even if the calling task is cancelled, and each call is one transaction.

Claims, leases and fencing are part of the protocol from the start, as clustering over
PostgreSQL needs them; a single-node store implements them faithfully too (the
conformance suite in ``tests/test_store_conformance.py`` holds every store to the same
contract):

* ``claim`` moves PENDING rows due before a horizon (and CLAIMED rows whose lease has
  expired: a dead node's work) to CLAIMED with ``owner``, a fresh ``claim_token`` for this
  call, and ``lease_until = now + lease``. Rows are taken in ``(run_at, id)`` order. A
  claimer never takes over its *own* rows, however expired their lease looks (after a
  wall-clock jump or a stall it still holds them in memory: taking them again would run
  them twice); a node's own leftovers from a previous run are ``recover``'s job.
* ``finish`` and ``start`` are *fenced*: a write applies to a row only while it is held by
  ``owner`` with that row's ``claim_token`` and is CLAIMED or RUNNING; otherwise it is
  refused (``False`` in the returned list) and nothing changes.
* ``renew`` extends the lease of everything ``owner`` holds, in one statement.

Times passed in (``now_us``) are the scheduler clock's UTC microseconds; a store with a
clock of its own (PostgreSQL's ``now()``) may use that for leases instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

from tickwork.model import AbortResult, Attempt, Finish, Instance, InstanceFilter, NewRow
from tickwork.schedules.plan import OccurrenceCheck
from tickwork.schedules.schedule import Schedule, ScheduleWrite
from tickwork.state import State

#: The error text of an at-most-once instance that was RUNNING when its node died.
INTERRUPTED = "interrupted: the node stopped while this at-most-once run was in progress"


@runtime_checkable
class Store(Protocol):
    """A durable home for instances and their history. See the module docstring."""

    async def open(self, *, node_id: str | None = None) -> None:
        """Connect, create or migrate the schema.

        With ``node_id`` the opener is a scheduler node: a single-node store takes its
        exclusive node lock (and raises ``StoreLocked`` if another live node has it).
        Without it the opener is a client (the CLI) and may read and write while a node
        runs.

        Raises:
            NotATickworkDatabase, SchemaTooNew, StoreLocked, StoreError.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection and any node lock. Idempotent."""
        ...

    async def insert(self, rows: Sequence[NewRow], now_us: int) -> list[int]:
        """Store new instances in one transaction and return their ids, in order.

        A built-in store refuses the whole batch (``InvalidArgument``, nothing stored)
        when a row's params are larger than its ``max_params_bytes``; ``add_schedule``
        refuses a schedule's the same way.

        A row whose ``dedup_key`` (or ``(schedule_id, fire_at_us)``) already exists is not
        inserted again: its place in the result holds the existing instance's id.
        """
        ...

    async def claim(
        self, owner: str, due_before_us: int, limit: int, now_us: int, lease_us: int
    ) -> list[Instance]:
        """Claim up to ``limit`` instances with ``run_at <= due_before_us``, in due order.

        Takes PENDING rows, and CLAIMED rows of *other* owners whose lease expired before
        ``now_us``. A row with an abort requested is made ABORTED instead of being claimed.
        Returns the claimed instances in state CLAIMED with owner, token and lease set.
        """
        ...

    async def next_pending_at(self) -> int | None:
        """The smallest ``run_at_us`` among PENDING rows, or None. A cheap index lookup."""
        ...

    async def start(self, owner: str, items: Sequence[tuple[int, int]], now_us: int) -> list[bool]:
        """Make RUNNING durable for ``(id, claim_token)`` pairs (at-most-once tasks). Fenced."""
        ...

    async def finish(self, owner: str, finishes: Sequence[Finish], now_us: int) -> list[bool]:
        """Write outcomes in one transaction (group commit). Fenced per row.

        A terminal ``state`` ends the instance (owner kept as the last node, lease
        cleared). PENDING puts it back for a retry or a release: ``run_at_us`` (when given)
        and ``attempts`` are written and owner, token and lease cleared. A finish with
        ``started_us`` set also appends one history row (see :meth:`history`).
        """
        ...

    async def release(self, owner: str, now_us: int, ids: Sequence[int] | None = None) -> int:
        """Give back what ``owner`` holds (``ids``, or everything when None).

        CLAIMED rows become PENDING; durable RUNNING rows (at-most-once) become FAILED
        with :data:`INTERRUPTED`; rows with an abort requested become ABORTED.
        Returns how many rows changed.
        """
        ...

    async def renew(self, owner: str, now_us: int, lease_us: int) -> int:
        """Extend the lease of every row ``owner`` holds; returns how many it holds."""
        ...

    async def recover(self, now_us: int) -> int:
        """At node start: recover the claims left by a node that died.

        A single-node store (whose node lock proves no other node is alive) releases every
        claim as :meth:`release` would. A cluster store releases only the claims of its own
        ``node_id`` (a previous run of this node: claim never takes over its own rows) and
        leaves other nodes' to lease expiry. Returns how many rows changed.
        """
        ...

    async def request_abort(self, instance_id: int, now_us: int) -> AbortResult:
        """Abort an instance.

        PENDING: made ABORTED at once. CLAIMED or RUNNING: the abort is recorded on the row
        (``requested=True``) for its owner to carry out. Terminal: nothing changes. Unknown
        id: ``found=False``. ``previous`` is the state before the call.
        """
        ...

    async def abort_requests(self, owner: str) -> list[int]:
        """Ids held by ``owner`` that have an abort requested."""
        ...

    async def get(self, instance_id: int) -> Instance | None:
        """One instance, or None."""
        ...

    async def list(
        self,
        *,
        state: State | None = None,
        task: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        where: InstanceFilter | None = None,
    ) -> list[Instance]:
        """Instances newest first (by id, descending), filtered; ``before_id`` pages.

        ``where`` adds conditions: a schedule, a due time range, an ended time range.
        Params larger than :data:`tickwork.model.LIST_PARAMS_BYTES` are left out without
        being loaded: ``params`` is ``b""`` and ``params_size`` their size.
        """
        ...

    async def count(self, *, state: State | None = None, task: str | None = None) -> int:
        """How many stored instances match."""
        ...

    async def count_by_state(self) -> dict[State, int]:
        """Stored instances per state (every state present, zero where none).

        For dashboards and metrics, asked every few seconds: it must not scan every row.
        A store may estimate large counts (PostgresStore: exact up to 10,000 rows per
        state, the planner's estimate beyond); small ones are exact.
        """
        ...

    async def history(self, instance_id: int) -> builtins.list[Attempt]:
        """Recorded attempts of one instance, oldest first."""
        ...

    async def change_token(self) -> int | None:
        """A number that changes when *another* connection or process committed.

        The Puller polls it to notice instances added or aborted from elsewhere (the
        CLI). Cheap: SQLite's ``PRAGMA data_version``. None for a store that nothing else
        can write to (``MemoryStore``): the Puller then does not poll at all.
        """
        ...

    async def prune(self, before_us: int, limit: int) -> int:
        """Retention: delete old rows in one short transaction; returns how many.

        Deletes up to ``limit`` terminal instances (SUCCEEDED, FAILED, ABORTED, MISSED)
        last updated (ended) before ``before_us``, oldest first, and up to ``limit`` run
        history rows of any instance that finished before ``before_us``. Never touches a
        PENDING, CLAIMED or RUNNING instance. Keeps ``count`` right. The caller repeats
        the call, pausing between, until it returns 0: each call holds the store's write
        lock only for a bounded batch.
        """
        ...

    # -- schedules (see tickwork.stores._schedule_ops: one implementation of the rules) --

    async def add_schedule(
        self, schedule: Schedule, now_us: int, *, replace: bool = False
    ) -> ScheduleWrite:
        """Store a schedule and its first occurrence, in one transaction.

        An equal definition under the same id changes nothing (``"unchanged"``).

        Raises:
            InvalidArgument: the id exists with another definition and not ``replace``.
        """
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""
        ...

    async def list_schedules(
        self, *, limit: int = 1000, after_id: str | None = None
    ) -> builtins.list[Schedule]:
        """Schedules in id order; ``after_id`` pages."""
        ...

    async def pause_schedule(self, schedule_id: str, now_us: int) -> Schedule | None:
        """Pause a schedule (no next occurrence is written); None if there is none."""
        ...

    async def resume_schedule(self, schedule_id: str, now_us: int) -> ScheduleWrite | None:
        """Unpause a schedule and write its next occurrence; None if there is none."""
        ...

    async def remove_schedule(self, schedule_id: str, now_us: int) -> bool:
        """Delete a schedule; its PENDING occurrences end ABORTED. False if there was none."""
        ...

    async def check_occurrences(
        self, ids: Sequence[int], now_us: int, *, admit: Collection[int] = ()
    ) -> builtins.list[OccurrenceCheck]:
        """For occurrences that came due (by instance id): may each run, and how?

        ``admit``: the ids (at most one per schedule) the caller starts now if they may
        run, no occurrence of their schedule held by *another* owner is admitted and no
        older one held by another owner is due. For each whose overlap policy is not
        ``allow``, the store either records it as the schedule's admitted occurrence,
        atomically with respect to every other caller, or names the other owner's
        occurrence in the check's ``in_flight`` (see
        :func:`tickwork.stores._schedule_admission.check_occurrences`).
        """
        ...
