"""The records that travel between the actors and the store: instances and messages.

Times are integer microseconds since the epoch (UTC) inside tickwork; the public
properties (``run_at``, ...) give aware datetimes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import attrs
import msgpack

from tickwork._runs import AbortResult, Attempt, Finish, RunOutput, output_of
from tickwork._time import MAX_DURATION, from_us, to_us
from tickwork.errors import InvalidArgument
from tickwork.state import State

#: The most attempts an instance may have (a 32-bit int: retries with the default 10 min
#: backoff cap would take 40,000 years).
MAX_ATTEMPTS = 2**31 - 1

__all__ = [
    "DEFAULT_MAX_PARAMS_BYTES",
    "LIST_PARAMS_BYTES",
    "MAX_ATTEMPTS",
    "AbortResult",
    "Attempt",
    "Finish",
    "Instance",
    "InstanceFilter",
    "NewInstance",
    "NewRow",
    "RunOutput",
    "State",
    "check_max_params_bytes",
    "check_params_size",
    "output_of",
    "pack",
    "unpack",
]

#: The largest params an instance or schedule may carry by default (1 MiB); a node sets
#: its own with ``open_scheduler(max_params_bytes=...)`` (``tickwork run --max-params``).
#: Params travel whole through every claim and run: a job's data belongs in the worker's
#: own storage, its params should say where to find it.
DEFAULT_MAX_PARAMS_BYTES: Final = 1 << 20
#: ``list()`` gives params up to this size; larger ones are left out of a listing
#: (``Instance.params_size`` tells their size): a page never loads big params whole.
LIST_PARAMS_BYTES: Final = 4096


def check_max_params_bytes(value: object) -> int:
    """A params limit as given to a store or a node: an integer >= 1.

    Raises:
        InvalidArgument: anything else.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"max_params_bytes must be an integer >= 1, got {value!r}")
    return value


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,} bytes"


def check_params_size(size: int, limit: int, what: str = "params") -> None:
    """Refuse params of ``size`` bytes over ``limit``.

    Raises:
        InvalidArgument: the message names the size and the limit.
    """
    if size > limit:
        raise InvalidArgument(
            f"{what} are {size:,} bytes, over the limit of {_size(limit)} "
            f"(max_params_bytes; tickwork run --max-params): keep the data elsewhere and "
            "pass where to find it"
        )


def pack(obj: Any) -> bytes:
    """Pack ``obj`` with msgpack (the format of ``params``).

    Raises:
        InvalidArgument: ``obj`` holds something msgpack cannot encode.
    """
    try:
        return msgpack.packb(obj, use_bin_type=True, datetime=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(
            f"params cannot be packed with msgpack ({exc}); pass bytes, or an object made of "
            "dicts, lists, str, bytes, int, float, bool, None and aware datetimes"
        ) from exc


def unpack(data: bytes) -> Any:
    """Unpack msgpack ``data`` packed by :func:`pack`."""
    return msgpack.unpackb(data, raw=False, timestamp=3)


def params_bytes(params: object) -> bytes:
    """``params`` as stored: bytes pass through, anything else is packed."""
    if isinstance(params, bytes):
        return params
    if isinstance(params, bytearray | memoryview):
        return bytes(params)
    return pack(params)


@attrs.frozen(slots=True)
class Instance:
    """One scheduled run of a task, as stored."""

    id: int
    task: str
    run_at_us: int
    params: bytes
    state: State
    attempts: int = 0
    error: str | None = None
    owner: str | None = None
    claim_token: int | None = None
    lease_until_us: int | None = None
    schedule_id: str | None = None
    fire_at_us: int | None = None
    dedup_key: str | None = None
    max_attempts: int | None = None
    timeout_us: int | None = None
    created_us: int = 0
    updated_us: int = 0
    #: None when ``params`` are whole (always, but in listings). ``list()`` leaves out
    #: params larger than :data:`LIST_PARAMS_BYTES`: ``params`` is then ``b""`` and this
    #: is their stored size; ``get()`` returns them whole.
    params_size: int | None = None
    #: When the run in progress started, while the stored state is RUNNING (None otherwise;
    #: always None in what ``claim`` returns).
    started_us: int | None = None

    @property
    def run_at(self) -> datetime:
        """When the instance is (next) due, as an aware UTC datetime."""
        return from_us(self.run_at_us)

    @property
    def started_at(self) -> datetime | None:
        """When the run in progress started (RUNNING), as an aware UTC datetime, or None."""
        return None if self.started_us is None else from_us(self.started_us)

    @property
    def fire_at(self) -> datetime | None:
        """For an occurrence of a schedule, the trigger's fire time it stands for."""
        return None if self.fire_at_us is None else from_us(self.fire_at_us)

    @property
    def created_at(self) -> datetime:
        return from_us(self.created_us)

    @property
    def updated_at(self) -> datetime:
        return from_us(self.updated_us)

    @property
    def timeout(self) -> timedelta | None:
        return None if self.timeout_us is None else timedelta(microseconds=self.timeout_us)

    @property
    def retry_of(self) -> int | None:
        """For an instance made by ``Scheduler.retry``, the id of the instance it retries."""
        key = self.dedup_key
        if key is None or not key.startswith(RETRY_KEY):
            return None
        suffix = key[len(RETRY_KEY) :]
        return int(suffix) if suffix.isascii() and suffix.isdigit() else None

    @property
    def run_now_of(self) -> str | None:
        """For an instance made by ``Scheduler.run_schedule_now``, the schedule's id."""
        key = self.dedup_key
        if key is None or not key.startswith(RUN_NOW_KEY):
            return None
        _, sep, schedule_id = key[len(RUN_NOW_KEY) :].partition(":")
        return schedule_id if sep and schedule_id else None


#: The dedup key prefix of a retry (``retry-of:<id>``): the link to the instance retried,
#: and what makes a retry happen once however many callers ask at the same moment.
RETRY_KEY = "retry-of:"

#: The dedup key prefix of a schedule's run-now instance (``run-now:<nonce>:<schedule id>``,
#: ``Instance.run_now_of``): it records the schedule without making the instance one of
#: its occurrences (those carry ``schedule_id``, and its policies apply to them).
RUN_NOW_KEY = "run-now:"


def is_upcoming(inst: Instance, now_us: int) -> bool:
    """Whether ``inst`` is still to come at ``now_us``: PENDING or CLAIMED, due from then."""
    return inst.state in {State.PENDING, State.CLAIMED} and inst.run_at_us >= now_us


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


@attrs.frozen(slots=True)
class InstanceFilter:
    """What ``Store.list`` filters on beyond state and task (None: no bound).

    Ranges are half-open, UTC microseconds: ``due_from_us <= run_at < due_until_us`` and,
    for ended (terminal) instances only, ``ended_from_us <= updated < ended_until_us``.
    """

    schedule_id: str | None = None
    due_from_us: int | None = None
    due_until_us: int | None = None
    ended_from_us: int | None = None
    ended_until_us: int | None = None
    #: Only the history as of this time: every instance but those still upcoming then
    #: (PENDING or CLAIMED and due at or after it).
    history_at_us: int | None = None

    @property
    def ended(self) -> bool:
        """Whether an ended-time bound restricts the list to terminal instances."""
        return self.ended_from_us is not None or self.ended_until_us is not None

    def matches(self, inst: Instance) -> bool:
        """Whether ``inst`` passes (the in-memory form of the SQL stores' conditions)."""
        if self.schedule_id is not None and inst.schedule_id != self.schedule_id:
            return False
        if not _within(inst.run_at_us, self.due_from_us, self.due_until_us):
            return False
        if self.history_at_us is not None and is_upcoming(inst, self.history_at_us):
            return False
        return not self.ended or (
            inst.state.terminal
            and _within(inst.updated_us, self.ended_from_us, self.ended_until_us)
        )

    def sql(self, columns: tuple[str, str], mark: str) -> tuple[list[str], list[int | str]]:
        """The conditions as SQL terms, and their values in order.

        ``columns``: the store's names of the due time and the last update columns.
        ``mark``: the placeholder, formatted with the value's position as ``n``
        (``"?"``, or ``"%(f{n})s"`` for named parameters ``f0``, ``f1``...).
        """
        run_at, updated = columns
        terms: list[str] = []
        values: list[int | str] = []
        for cond, value in (
            ("schedule_id = " + mark, self.schedule_id),
            (f"{run_at} >= " + mark, self.due_from_us),
            (f"{run_at} < " + mark, self.due_until_us),
            (f"{updated} >= " + mark, self.ended_from_us),
            (f"{updated} < " + mark, self.ended_until_us),
        ):
            if value is not None:
                terms.append(cond.format(n=len(values)))
                values.append(value)
        if self.ended:
            terms.append("state >= 3")
        if self.history_at_us is not None:
            terms.append(f"NOT (state IN (0, 1) AND {run_at} >= {mark.format(n=len(values))})")
            values.append(self.history_at_us)
        return terms, values


def _check_task(_: object, __: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"task must be a non-empty task name, got {value!r}")


@attrs.frozen(slots=True)
class NewInstance:
    """An instance to create: ``NewInstance("greet", at, b"...")``.

    ``params`` may be bytes (stored as they are) or any msgpack-able object (packed).
    ``dedup_key`` makes creation idempotent: a second instance with the same key is not
    created, and its id is the existing one's.
    """

    task: str = attrs.field(validator=_check_task)
    at: datetime
    params: object = b""
    dedup_key: str | None = attrs.field(default=None, kw_only=True)
    max_attempts: int | None = attrs.field(default=None, kw_only=True)
    timeout: timedelta | None = attrs.field(default=None, kw_only=True)


@attrs.frozen(slots=True)
class NewRow:
    """A validated :class:`NewInstance` in storage form (what ``Store.insert`` takes)."""

    task: str
    run_at_us: int
    params: bytes
    dedup_key: str | None = None
    max_attempts: int | None = None
    timeout_us: int | None = None
    schedule_id: str | None = None
    fire_at_us: int | None = None
    state: State = State.PENDING
    error: str | None = None


def validate_new(new: NewInstance, max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> NewRow:
    """Check one :class:`NewInstance` at the API boundary and convert it to a :class:`NewRow`.

    Raises:
        InvalidArgument: naive time, unpackable or too large params, bad dedup key,
            attempts or timeout.
    """
    run_at_us = to_us(new.at, what="at")
    params = params_bytes(new.params)
    check_params_size(len(params), max_params_bytes)
    if new.dedup_key is None and new.max_attempts is None and new.timeout is None:
        return NewRow(new.task, run_at_us, params)  # the common case: nothing else to check
    if new.dedup_key is not None and (not isinstance(new.dedup_key, str) or not new.dedup_key):
        raise InvalidArgument(f"dedup_key must be a non-empty string, got {new.dedup_key!r}")
    if new.dedup_key is not None and new.dedup_key.startswith((RETRY_KEY, RUN_NOW_KEY)):
        raise InvalidArgument(
            f"dedup_key must not start with {RETRY_KEY!r} or {RUN_NOW_KEY!r}: these "
            "prefixes link a retry (Scheduler.retry) to the instance it retries and a "
            "run-now instance (Scheduler.run_schedule_now) to its schedule"
        )
    if new.max_attempts is not None and (
        not isinstance(new.max_attempts, int) or not 1 <= new.max_attempts <= MAX_ATTEMPTS
    ):
        raise InvalidArgument(
            f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS}, got {new.max_attempts!r}"
        )
    timeout_us = None
    if new.timeout is not None:
        if not isinstance(new.timeout, timedelta) or not timedelta(0) < new.timeout <= MAX_DURATION:
            raise InvalidArgument(
                f"timeout must be a positive timedelta of at most {MAX_DURATION.days} days, "
                f"got {new.timeout!r}"
            )
        timeout_us = int(new.timeout.total_seconds() * 1_000_000)
    return NewRow(
        task=new.task,
        run_at_us=run_at_us,
        params=params,
        dedup_key=new.dedup_key,
        max_attempts=new.max_attempts,
        timeout_us=timeout_us,
    )
