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
from typing import Any, final

import attrs
import trio

from tickwork._time import from_us
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
from tickwork.actors.overlap import SUPERSEDED
from tickwork.actors.transitions import Transitions
from tickwork.clock import Clock
from tickwork.model import Finish, Instance, RunOutput, output_of
from tickwork.state import State
from tickwork.stores.base import INTERRUPTED, Store
from tickwork.task import Task

log = logging.getLogger("tickwork.recorder")

_MAX_ERROR = 2_000
#: A batch smaller than this lingers for more outcomes (see the module docstring).
_LINGER_BELOW = 256
#: A batch of starts alone lingers this long (seconds) whatever ``linger`` is: runs that
#: start one after another (a burst of slow ones) share a commit; their RUNNING may show
#: this much later, and an outcome that comes meanwhile joins the batch.
_START_LINGER = 0.002
_MAX_RESULT = 500


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: BaseException) -> str:
    return _bounded(f"{type(error).__name__}: {error}", _MAX_ERROR)


def result_summary(result: object) -> str | None:
    return None if result is None else _bounded(repr(result), _MAX_RESULT)


def _output_json(error: BaseException) -> str | None:
    output = output_of(error)
    return None if output is None else output.to_json()


def _succeeded(o: Outcome) -> Finish:
    """A success: positional, no dict of common fields (the hot path). A result that is a
    command's output is kept whole and structured; any other, as a bounded summary."""
    inst = o.instance
    result = o.result
    if type(result) is RunOutput:
        return Finish(
            inst.id, inst.claim_token or 0, State.SUCCEEDED, inst.attempts + 1, None, None,
            o.started_us, o.finished_us, None, None, result.to_json(),
        )  # fmt: skip
    return Finish(
        inst.id, inst.claim_token or 0, State.SUCCEEDED, inst.attempts + 1, None, None,
        o.started_us, o.finished_us, None, result_summary(result),
    )  # fmt: skip


def backoff_us(task: Task, attempt: int, rng: random.Random) -> int:
    """Exponential backoff with a cap and full jitter, for the retry after ``attempt``."""
    base = task.backoff_base.total_seconds()
    cap = task.backoff_cap.total_seconds()
    # 2**63 s is past any cap; a larger power would not convert to float (attempt > 1024).
    ceiling = min(cap, base * (2 ** min(attempt - 1, 63)))
    return int(rng.uniform(0, ceiling) * 1e6)


def _log_outcome(outcome: Outcome, fin: Finish, *, warn: bool, debug: bool) -> None:
    """One line per recorded outcome: a failed run (final, or to be retried) at WARNING,
    every other outcome at DEBUG."""
    inst = outcome.instance
    failed = fin.state is State.FAILED or (
        fin.state is State.PENDING and outcome.kind is Kind.ERROR
    )
    if failed and warn:
        if fin.state is State.PENDING:
            log.warning(
                "instance %d (task %r) failed, attempt %d, retried at %s: %s",
                inst.id, inst.task, fin.attempts, _iso(fin.run_at_us), fin.error,
            )  # fmt: skip
        else:
            log.warning(
                "instance %d (task %r) failed, attempt %d: %s",
                inst.id, inst.task, fin.attempts, fin.error,
            )  # fmt: skip
    elif debug and not failed:
        took = ""
        if outcome.started_us is not None and outcome.finished_us is not None:
            took = f" after {(outcome.finished_us - outcome.started_us) / 1e6:.3f} s"
        log.debug("instance %d (task %r): %s%s", inst.id, inst.task, fin.state.name, took)


def _iso(at_us: int | None) -> str:
    return "?" if at_us is None else from_us(at_us).isoformat()


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
                _log_outcome(outcome, fin, warn=warn, debug=debug)
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

    def _finish(self, o: Outcome) -> Finish:  # noqa: PLR0911 - one return per outcome kind
        inst = o.instance
        token = inst.claim_token or 0
        if o.kind is Kind.OK:  # the hot path
            return _succeeded(o)
        ran = o.started_us is not None
        attempts = inst.attempts + 1 if ran else inst.attempts
        common: dict[str, Any] = {
            "id": inst.id,
            "claim_token": token,
            "attempts": attempts,
            "started_us": o.started_us,
            "finished_us": o.finished_us,
        }
        kind = o.kind
        task = self._tasks.get(inst.task)
        if kind is Kind.ABORTED:
            reason = o.result if isinstance(o.result, str) else "aborted"
            return Finish(state=State.ABORTED, error=reason, **common)
        if kind is Kind.SKIPPED:  # a schedule occurrence: overlap policy or paused
            return Finish(state=State.MISSED, error=str(o.result), **common)
        if kind is Kind.SUPERSEDED:
            return Finish(state=State.ABORTED, error=SUPERSEDED, **common)
        if kind is Kind.UNKNOWN_TASK:
            return Finish(
                state=State.FAILED,
                error=f"unknown task {inst.task!r}: no task of that name is registered on "
                f"node {self._owner}",
                error_type="UnknownTask",
                **common,
            )
        # LOST never started (its claim may have lapsed): given back like an instance
        # a shutdown interrupted before it started; refused if taken over meanwhile.
        if kind in {Kind.INTERRUPTED, Kind.LOST}:
            if ran and task is not None and task.delivery == "at_most_once":
                return Finish(
                    state=State.FAILED, error=INTERRUPTED, error_type="Interrupted", **common
                )
            # at-least-once (or never started): not an attempt; it runs again
            common["attempts"] = inst.attempts
            return Finish(
                state=State.PENDING,
                run_at_us=inst.run_at_us,
                error="interrupted by shutdown" if ran else inst.error,
                error_type="Interrupted",
                **common,
            )
        assert o.error is not None  # noqa: S101 - Kind.ERROR always carries its error
        error = error_text(o.error)
        error_type = type(o.error).__name__
        common["output"] = _output_json(o.error)
        if task is not None:
            max_attempts = inst.max_attempts or task.max_attempts or 1
            if attempts < max_attempts and isinstance(o.error, task.retry_on):
                self._retried += 1
                run_at = (o.finished_us or self._clock.now_us()) + backoff_us(
                    task, attempts, self._rng
                )
                return Finish(
                    state=State.PENDING,
                    run_at_us=run_at,
                    error=error,
                    error_type=error_type,
                    **common,
                )
        return Finish(state=State.FAILED, error=error, error_type=error_type, **common)

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
