"""The records of runs: the outcome write a run ends with (``Finish``), the run history
(``Attempt``) with what a run printed (``RunOutput``), and what an abort request did
(``AbortResult``). :mod:`tickwork.model` re-exports them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import attrs

from tickwork._time import from_us
from tickwork.state import State

__all__ = ["AbortResult", "Attempt", "Finish", "RunOutput", "output_of"]


@attrs.frozen(slots=True)
class Finish:
    """One outcome write, fenced by the claim: ``Store.finish`` applies it only while the
    instance is still held by ``owner`` with ``claim_token``.

    ``state`` is a terminal state, or PENDING for a retry (``run_at_us`` moved, attempts
    counted) or a release, or RUNNING: the start of an at-least-once run (``started_us``
    set, nothing else written; see the Recorder), which keeps the claim.
    """

    id: int
    claim_token: int
    state: State
    attempts: int
    error: str | None = None
    run_at_us: int | None = None
    #: When the attempt started and finished (None: it never started, e.g. an abort while
    #: claimed). A finish with ``started_us`` also writes one row of run history (but a
    #: finish to RUNNING, which only records the start).
    started_us: int | None = None
    finished_us: int | None = None
    #: Error type name (e.g. ``"ValueError"``) and a bounded summary of the result.
    error_type: str | None = None
    result: str | None = None
    #: The run's output in its stored form (:meth:`RunOutput.to_json`), or None.
    output: str | None = None


@attrs.frozen(slots=True)
class RunOutput:
    """What a command printed and how it exited: the output of one run.

    A task's result, or the exception that failed the run, carries it to the run
    history: a task returns a ``RunOutput`` (or raises an exception with an ``output``
    attribute holding one, like :class:`tickwork.tasks.bash.BashFailed`), and
    :meth:`Scheduler.history` gives it back in :attr:`Attempt.output`. ``stdout`` and
    ``stderr`` are text (the task decides how much it keeps: the bash task keeps tails);
    ``exit_code`` is None when the run had none (a timeout killed it).
    """

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None

    def to_json(self) -> str:
        """The stored form: a JSON object with ``exit_code``, ``stdout`` and ``stderr``."""
        return json.dumps(
            {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> RunOutput:
        """Read the stored form back (what :meth:`to_json` wrote)."""
        doc = json.loads(text)
        code = doc.get("exit_code")
        return cls(
            stdout=str(doc.get("stdout", "")),
            stderr=str(doc.get("stderr", "")),
            exit_code=None if code is None else int(code),
        )


def output_of(value: object) -> RunOutput | None:
    """The :class:`RunOutput` a result or an exception carries, if any."""
    if isinstance(value, RunOutput):
        return value
    output = getattr(value, "output", None) if isinstance(value, BaseException) else None
    return output if isinstance(output, RunOutput) else None


def _stored_output(value: RunOutput | str | None) -> RunOutput | None:
    # Stores hand over the stored JSON text; a caller may pass a RunOutput.
    return RunOutput.from_json(value) if isinstance(value, str) else value


@attrs.frozen(slots=True)
class Attempt:
    """One recorded run of an instance (run history)."""

    instance_id: int
    attempt: int
    node: str | None
    started_us: int
    finished_us: int
    state: State
    error_type: str | None = None
    error: str | None = None
    result: str | None = None
    #: What the run printed and its exit code, for tasks that report it (bash).
    output: RunOutput | None = attrs.field(default=None, converter=_stored_output)

    @property
    def duration(self) -> timedelta:
        return timedelta(microseconds=self.finished_us - self.started_us)

    @property
    def started_at(self) -> datetime:
        return from_us(self.started_us)

    @property
    def finished_at(self) -> datetime:
        return from_us(self.finished_us)


@attrs.frozen(slots=True)
class AbortResult:
    """What ``Store.request_abort`` did.

    ``state`` is the instance's state after the call. ``requested`` is True when a node
    holds the instance (CLAIMED or RUNNING): the abort was recorded on the row for
    ``owner`` to carry out, and the state has not changed yet.
    """

    found: bool
    state: State | None = None
    owner: str | None = None
    requested: bool = False
    #: the state before the call (None when not found)
    previous: State | None = None
