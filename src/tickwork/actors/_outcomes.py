"""What an outcome becomes: the Recorder's decision (a pure function of the outcome, the
task and the clock), the bounded texts it stores, the retry backoff and the log line."""

from __future__ import annotations

import logging
import random
from typing import Any

from tickwork._time import from_us
from tickwork.actors.messages import Kind, Outcome
from tickwork.actors.overlap import SUPERSEDED
from tickwork.clock import Clock
from tickwork.model import Finish, RunOutput, output_of
from tickwork.state import State
from tickwork.stores.base import INTERRUPTED
from tickwork.task import Task

log = logging.getLogger("tickwork.recorder")

_MAX_ERROR = 2_000
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


def succeeded(o: Outcome) -> Finish:
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


def log_outcome(outcome: Outcome, fin: Finish, *, warn: bool, debug: bool) -> None:
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


def finish_of(
    o: Outcome, task: Task | None, *, owner: str, clock: Clock, rng: random.Random
) -> Finish:
    """What the store is to write for ``o``: its terminal state, or PENDING again (a retry
    after a backoff, or a give-back of a run a stop interrupted)."""
    inst = o.instance
    if o.kind is Kind.OK:  # the hot path
        return succeeded(o)
    ran = o.started_us is not None
    common: dict[str, Any] = {
        "id": inst.id,
        "claim_token": inst.claim_token or 0,
        "attempts": inst.attempts + 1 if ran else inst.attempts,
        "started_us": o.started_us,
        "finished_us": o.finished_us,
    }
    if o.kind in {Kind.INTERRUPTED, Kind.LOST}:
        return _given_back(o, task, common)
    if o.kind is Kind.ERROR:
        return _failed(o, task, common, clock, rng)
    return Finish(**_ended(o, owner), **common)


def _ended(o: Outcome, owner: str) -> dict[str, Any]:
    """The end of an outcome that is no error and is not retried: its state and error."""
    kind = o.kind
    if kind is Kind.ABORTED:
        reason = o.result if isinstance(o.result, str) else "aborted"
        return {"state": State.ABORTED, "error": reason}
    if kind is Kind.SKIPPED:  # a schedule occurrence: overlap policy or paused
        return {"state": State.MISSED, "error": str(o.result)}
    if kind is Kind.SUPERSEDED:
        return {"state": State.ABORTED, "error": SUPERSEDED}
    if kind is Kind.UNKNOWN_TASK:
        return {
            "state": State.FAILED,
            "error": f"unknown task {o.instance.task!r}: no task of that name is registered "
            f"on node {owner}",
            "error_type": "UnknownTask",
        }
    raise AssertionError(f"an outcome of kind {kind} has no end to write")


def _given_back(o: Outcome, task: Task | None, common: dict[str, Any]) -> Finish:
    """INTERRUPTED or LOST. LOST never started (its claim may have lapsed): given back like
    an instance a shutdown interrupted before it started; refused if taken over meanwhile."""
    inst = o.instance
    ran = o.started_us is not None
    if ran and task is not None and task.delivery == "at_most_once":
        return Finish(state=State.FAILED, error=INTERRUPTED, error_type="Interrupted", **common)
    # at-least-once (or never started): not an attempt; it runs again
    common["attempts"] = inst.attempts
    return Finish(
        state=State.PENDING,
        run_at_us=inst.run_at_us,
        error="interrupted by shutdown" if ran else inst.error,
        error_type="Interrupted",
        **common,
    )


def _failed(
    o: Outcome, task: Task | None, common: dict[str, Any], clock: Clock, rng: random.Random
) -> Finish:
    """Kind.ERROR: FAILED, or PENDING again after a backoff if the task retries it."""
    assert o.error is not None  # noqa: S101 - Kind.ERROR always carries its error
    error = error_text(o.error)
    error_type = type(o.error).__name__
    common["output"] = _output_json(o.error)
    if task is not None:
        attempts = common["attempts"]
        max_attempts = o.instance.max_attempts or task.max_attempts or 1
        if attempts < max_attempts and isinstance(o.error, task.retry_on):
            run_at = (o.finished_us or clock.now_us()) + backoff_us(task, attempts, rng)
            return Finish(
                state=State.PENDING,
                run_at_us=run_at,
                error=error,
                error_type=error_type,
                **common,
            )
    return Finish(state=State.FAILED, error=error, error_type=error_type, **common)
