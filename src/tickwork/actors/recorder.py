"""The Recorder: turns run outcomes into durable state, in batches (group commit).

It owns outcome -> terminal state / retry. Several outcome messages waiting in its
channel are merged into one ``Store.finish`` call, so a commit is paid per batch. When
what waits is a small batch (a low, steady rate: one outcome every few milliseconds),
it lingers up to ``linger`` seconds for more before committing, so even then a commit
carries dozens of outcomes; a full batch is written at once, so at high rates the
linger costs nothing. A batch holding a run of an at-most-once task never lingers: until
its outcome is durable, a crash or a lost lease would leave it FAILED "interrupted"
although it ran.

The same commit writes RUNNING for the at-least-once runs the Executor reported in
progress (``Kind.STARTED`` notes: a finish to RUNNING, fenced by the claim like every
other), except those whose outcome is in the batch: their outcome is written instead. A
batch of such notes alone lingers up to ``_START_LINGER`` (runs that start one after
another share a commit). Only after the write was accepted (the claim still held:
fencing) does it publish events, call the task's hooks and tell the Puller the
instances' places in the window are free (``RoomFreed``), and when a retry was written,
when it is due (``PendingAt``). It learns of aborts requested for what the node holds
from the Aborts actor (``AbortRequested``) before their outcomes come, reports the
ABORTED the store then writes, and tells the API's abort waiters (``AbortRecorded``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import final

import attrs
import trio

from tickwork.actors._outcomes import finish_of, log_outcome, succeeded
from tickwork.actors.messages import (
    AbortRecorded,
    AbortRequested,
    AbortsMsg,
    Kind,
    Outcome,
    Outcomes,
    PendingAt,
    PullerMsg,
    RecorderMsg,
    RoomFreed,
)
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.model import Finish, Instance
from tickwork.state import State
from tickwork.stores.base import Store
from tickwork.task import Task

log = logging.getLogger("tickwork.recorder")

#: A batch smaller than this lingers for more outcomes (see the module docstring).
_LINGER_BELOW = 256
#: A batch of starts alone lingers this long (seconds) whatever ``linger`` is: runs that
#: start one after another (a burst of slow ones) share a commit; their RUNNING may show
#: this much later, and an outcome that comes meanwhile joins the batch.
_START_LINGER = 0.002


@final
@attrs.frozen
class RecorderStatistics:
    recorded: Mapping[str, int]
    retried: int
    refused: int
    batches: int
    hooks_failed: int


@final
class Recorder:
    def __init__(
        self,
        *,
        clock: Clock,
        store: Store,
        owner: str,
        tasks: Mapping[str, Task],
        receive: trio.MemoryReceiveChannel[RecorderMsg],
        aborts: trio.MemoryReceiveChannel[AbortsMsg] | None = None,
        to_puller: trio.MemorySendChannel[PullerMsg],
        max_batch: int,
        hook_concurrency: int,
        linger: float = 0.0,
        to_abort_waiters: trio.MemorySendChannel[AbortRecorded] | None = None,
        events: Transitions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self._owner = owner
        self._tasks = tasks
        # tasks with a hook of their own: the others skip the hook path per instance
        self._hooked = {
            name
            for name, task in tasks.items()
            if any(
                getattr(type(task), h) is not getattr(Task, h)
                for h in ("on_success", "on_fail", "on_abort")
            )
        }
        # runs of these are recorded at once (see the module docstring)
        self._at_most_once = {n for n, t in tasks.items() if t.delivery == "at_most_once"}
        self._receive = receive
        self._aborts = aborts
        self._to_puller: trio.MemorySendChannel[PullerMsg] | None = to_puller
        self._max_batch = max_batch
        self._linger = linger
        #: below this many outcomes a batch waits (up to ``linger``) for more
        self._linger_below = min(max_batch, _LINGER_BELOW)
        self._hook_limiter = trio.CapacityLimiter(hook_concurrency)
        #: held instances whose abort was requested (AbortRequested), until recorded
        self._abort_requested: set[int] = set()
        #: instances the API aborted while PENDING, whose on_abort hook is to run
        self._abort_hooks: list[Instance] = []
        self._to_waiters = to_abort_waiters
        self._events = events
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._recorded: dict[str, int] = {}
        self._retried = 0
        self._refused = 0
        self._batches = 0
        self._hooks_failed = 0

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            recorded=dict(self._recorded),
            retried=self._retried,
            refused=self._refused,
            batches=self._batches,
            hooks_failed=self._hooks_failed,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as hooks:
            task_status.started()
            if self._aborts is not None:
                hooks.start_soon(self._read_aborts, self._aborts, hooks)
            async with self._receive:
                async for first in self._receive:
                    outcomes: list[Outcome] = []
                    self._take(first, outcomes)
                    if outcomes:
                        self._take_waiting(outcomes)
                        if self._may_linger(outcomes):
                            await self._gather(outcomes)
                        await self._record(outcomes, hooks)
                    if self._abort_hooks:
                        await self._run_abort_hooks(hooks)
        for channel in (self._to_puller, self._to_waiters):
            if channel is not None:
                await channel.aclose()

    def _take(self, msg: RecorderMsg, outcomes: list[Outcome]) -> list[Outcome]:
        """Add the outcomes of ``msg`` to ``outcomes``, or note the aborts it requests;
        returns the outcomes it carried."""
        if isinstance(msg, Outcomes):
            outcomes.extend(msg.outcomes)
            return msg.outcomes
        if isinstance(msg, AbortRequested):
            self._abort_requested.update(msg.instance_ids)
        else:
            self._abort_hooks.append(msg.instance)
        return []

    async def _read_aborts(
        self, aborts: trio.MemoryReceiveChannel[AbortsMsg], hooks: trio.Nursery
    ) -> None:
        """The Aborts actor's messages, on an inbox of their own: an abort requested is
        known at once, not after the outcome batches queued before it (ends when the
        Aborts actor stops)."""
        async with aborts:
            async for msg in aborts:
                self._take(msg, [])
                if self._abort_hooks:
                    await self._run_abort_hooks(hooks)

    async def _run_abort_hooks(self, hooks: trio.Nursery) -> None:
        """Run ``on_abort`` of the instances the API aborted while PENDING: in the hook
        nursery, under ``hook_concurrency`` like every hook."""
        todo, self._abort_hooks = self._abort_hooks, []
        for inst in todo:
            task = self._tasks.get(inst.task)
            if task is None or type(task).on_abort is Task.on_abort:
                continue
            token = object()
            await self._hook_limiter.acquire_on_behalf_of(token)
            hooks.start_soon(self._run_hook, task, "on_abort", inst, None, token)

    def _take_waiting(self, outcomes: list[Outcome]) -> None:
        """Add what already waits in the channel, up to a full batch."""
        while len(outcomes) < self._max_batch:
            try:
                self._take(self._receive.receive_nowait(), outcomes)
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _may_linger(self, outcomes: list[Outcome]) -> bool:
        if len(outcomes) >= self._linger_below or self._urgent(outcomes):
            return False
        return self._linger > 0 or all(o.kind is Kind.STARTED for o in outcomes)

    def _urgent(self, outcomes: list[Outcome]) -> bool:
        """Whether ``outcomes`` hold a run of an at-most-once task."""
        return bool(self._at_most_once) and any(
            o.started_us is not None and o.instance.task in self._at_most_once for o in outcomes
        )

    async def _gather(self, outcomes: list[Outcome]) -> None:
        """Wait up to ``linger`` (a batch of starts alone: ``_START_LINGER``) for the batch
        to reach ``_linger_below`` outcomes, or for a run of an at-most-once task to join
        it."""
        with trio.move_on_after(self._linger or _START_LINGER):
            while len(outcomes) < self._linger_below:
                try:
                    msg = await self._receive.receive()
                except trio.EndOfChannel:  # shutting down: write what there is
                    return
                if self._urgent(self._take(msg, outcomes)):
                    return

    def _starts(self, outcomes: list[Outcome]) -> tuple[list[Outcome], list[Finish]]:
        """Take the ``Kind.STARTED`` notes out of ``outcomes``: returns the outcomes, and
        a finish to RUNNING for each run whose outcome is not among them."""
        ended = [o for o in outcomes if o.kind is not Kind.STARTED]
        ended_ids = {o.instance.id for o in ended}
        starts = [
            Finish(
                o.instance.id,
                o.instance.claim_token or 0,
                State.RUNNING,
                o.instance.attempts,
                started_us=o.started_us,
            )
            for o in outcomes
            if o.kind is Kind.STARTED and o.instance.id not in ended_ids
        ]
        return ended, starts

    async def _write(
        self, outcomes: list[Outcome]
    ) -> tuple[list[Outcome], list[Finish], list[bool]]:
        """One group commit: the starts, then the outcomes' finishes. Returns the
        outcomes (without the starts), their finishes and whether each was accepted."""
        if any(o.kind is Kind.STARTED for o in outcomes):
            outcomes, starts = self._starts(outcomes)
        else:
            starts = []
        finishes = [self._finish(o) for o in outcomes]
        if not starts:
            accepted = await self._store.finish(self._owner, finishes, self._clock.now_us())
            return outcomes, finishes, accepted
        accepted = await self._store.finish(self._owner, starts + finishes, self._clock.now_us())
        for start, ok in zip(starts, accepted, strict=False):
            if not ok:
                log.warning(
                    "instance %d: RUNNING not recorded, the claim was lost (another node or "
                    "a restart took it over); its run goes on here",
                    start.id,
                )
        return outcomes, finishes, accepted[len(starts) :]

    async def _record(self, outcomes: list[Outcome], hooks: trio.Nursery) -> None:
        outcomes, finishes, accepted = await self._write(outcomes)
        self._batches += 1
        now = self._clock.now_us()
        # Decided once per batch: with the level off, no message is built per outcome.
        warn = log.isEnabledFor(logging.WARNING)
        debug = log.isEnabledFor(logging.DEBUG)
        aborts = self._abort_requested
        retry_at: int | None = None
        # the batch's events, as parallel lists (one chunk; the EventHub builds events
        # only for a subscriber that reads them)
        insts: list[Instance] = []
        froms: list[State] = []
        tos: list[State] = []
        errors: list[str | None] = []
        for outcome, written, ok in zip(outcomes, finishes, accepted, strict=True):
            inst = outcome.instance
            fin = written
            aborted = bool(aborts) and inst.id in aborts
            if aborted:
                fin = self._abort_won(written)
            if not ok:
                self._refused += 1
                log.warning(
                    "instance %d: outcome %s not recorded, the claim was lost (another "
                    "node or a restart took it over)",
                    inst.id,
                    fin.state.name,
                )
                continue
            name = fin.state.name
            self._recorded[name] = self._recorded.get(name, 0) + 1
            if debug or (warn and fin.state is not State.SUCCEEDED):
                log_outcome(outcome, fin, warn=warn, debug=debug)
            if fin.state is State.PENDING and fin.run_at_us is not None:
                retry_at = fin.run_at_us if retry_at is None else min(retry_at, fin.run_at_us)
            if aborted and self._to_waiters is not None:
                await self._to_waiters.send(AbortRecorded(inst.id, fin.state))
            insts.append(inst)
            froms.append(State.CLAIMED if outcome.started_us is None else State.RUNNING)
            tos.append(fin.state)
            errors.append(fin.error)
            if inst.task in self._hooked:
                await self._call_hook(outcome, fin, hooks)
        if self._events is not None and self._events.active:
            self._events.recorded(insts, froms, tos, errors, now)
        if retry_at is not None:
            await self._tell_puller(PendingAt(retry_at))
        await self._room_freed(len(outcomes))

    async def _room_freed(self, n: int) -> None:
        """``n`` places in the window are free (a start frees none: its run is held)."""
        if n:
            await self._tell_puller(RoomFreed(n))

    def _abort_won(self, written: Finish) -> Finish:
        """An abort was requested: it wins over a retry or a give-back, which the store
        wrote ABORTED (stores/_rules.finished_state); report what it wrote."""
        self._abort_requested.discard(written.id)
        if written.state is State.PENDING:
            return attrs.evolve(written, state=State.ABORTED)
        return written

    async def _tell_puller(self, msg: PullerMsg) -> None:
        if self._to_puller is None:
            return
        try:
            await self._to_puller.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._to_puller = None  # the Puller stopped (shutdown): nobody counts

    def _finish(self, o: Outcome) -> Finish:
        if o.kind is Kind.OK:  # the hot path
            return succeeded(o)
        fin = finish_of(
            o, self._tasks.get(o.instance.task), owner=self._owner, clock=self._clock,
            rng=self._rng,
        )  # fmt: skip
        if fin.state is State.PENDING and o.kind is Kind.ERROR:
            self._retried += 1
        return fin

    async def _call_hook(self, outcome: Outcome, fin: Finish, hooks: trio.Nursery) -> None:
        task = self._tasks.get(outcome.instance.task)
        if task is None:
            return
        state = fin.state
        if state is State.SUCCEEDED and type(task).on_success is not Task.on_success:
            hook = "on_success"
        elif state is State.FAILED and type(task).on_fail is not Task.on_fail:
            hook = "on_fail"
        elif state is State.ABORTED and type(task).on_abort is not Task.on_abort:
            hook = "on_abort"
        else:
            return
        inst = attrs.evolve(
            outcome.instance,
            state=state,
            attempts=fin.attempts,
            error=fin.error,
            owner=self._owner,
        )
        # Bounded: a slow hook slows recording (backpressure), never grows a backlog.
        token = object()
        await self._hook_limiter.acquire_on_behalf_of(token)
        hooks.start_soon(self._run_hook, task, hook, inst, outcome, token)

    async def _run_hook(
        self, task: Task, hook: str, inst: Instance, outcome: Outcome | None, token: object
    ) -> None:
        try:
            if outcome is None:  # a PENDING instance aborted by the API
                await task.on_abort(inst)
            elif hook == "on_success":
                await task.on_success(inst, outcome.result)
            elif hook == "on_fail":
                assert outcome.error is not None or inst.error is not None  # noqa: S101
                await task.on_fail(inst, outcome.error or RuntimeError(inst.error or ""))
            else:
                await task.on_abort(inst)
        except Exception:
            self._hooks_failed += 1
            log.exception("task %r: %s hook raised for instance %d", task.name, hook, inst.id)
        finally:
            self._hook_limiter.release_on_behalf_of(token)
