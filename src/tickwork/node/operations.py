"""Operations on stored instances and schedules that both the Scheduler and the CLI (a
store client without a node) carry out: retry an ended instance, run a schedule now, a
schedule's next fire times. One implementation, so the two cannot disagree."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Final

from tickwork.errors import InvalidArgument, InvalidState, NotFound
from tickwork.model import RETRY_KEY, RUN_NOW_KEY, NewRow
from tickwork.state import State

if TYPE_CHECKING:
    from tickwork.model import Instance
    from tickwork.schedules.schedule import Schedule
    from tickwork.stores.base import Store

__all__ = ["MAX_FIRE_TIMES", "RETRYABLE", "next_fire_times", "retry", "run_now"]

#: The states an instance can be retried from.
RETRYABLE: Final = frozenset({State.FAILED, State.ABORTED, State.MISSED})
#: The most fire times ``next_fire_times`` computes in one call.
MAX_FIRE_TIMES: Final = 1000


def check_id(instance_id: object) -> int:
    """An instance id as given at the API boundary.

    Raises:
        InvalidArgument: not a positive integer.
    """
    if not isinstance(instance_id, int) or isinstance(instance_id, bool) or instance_id < 1:
        raise InvalidArgument(f"instance id must be a positive integer, got {instance_id!r}")
    return instance_id


async def retry(store: Store, instance_id: int, now_us: int) -> tuple[Instance, int]:
    """Store a new PENDING instance, due now, that runs ``instance_id`` again.

    The new instance has the old one's task, params, ``max_attempts`` and timeout, and the
    dedup key ``retry-of:<id>`` (``Instance.retry_of``), so retrying one instance twice,
    or from two places at once, stores one retry: the second call returns the first's id.
    It belongs to no schedule (its overlap policy does not apply to it).

    Returns:
        The instance retried, and the id of its retry.

    Raises:
        NotFound: no instance has this id.
        InvalidState: the instance is not FAILED, ABORTED or MISSED.
    """
    old = await store.get(check_id(instance_id))
    if old is None:
        raise NotFound(f"no instance with id {instance_id}")
    if old.state not in RETRYABLE:
        raise InvalidState(
            f"instance {instance_id} is {old.state.name}; only a FAILED, ABORTED or MISSED "
            "instance can be retried"
        )
    row = NewRow(
        task=old.task,
        run_at_us=now_us,
        params=old.params,
        dedup_key=f"{RETRY_KEY}{old.id}",
        max_attempts=old.max_attempts,
        timeout_us=old.timeout_us,
    )
    (new_id,) = await store.insert([row], now_us)
    return old, new_id


async def run_now(store: Store, schedule: Schedule, now_us: int) -> int:
    """Store a one-off instance of ``schedule``'s task and params, due now; its id.

    It is not an occurrence: the schedule's next fire times, misfire and overlap policies
    are unchanged (a paused schedule can be run this way too).
    """
    # The schedule is recorded in the dedup key (Instance.run_now_of), made unique by a
    # random nonce: running a schedule now twice makes two instances.
    key = f"{RUN_NOW_KEY}{secrets.token_hex(8)}:{schedule.id}"
    row = NewRow(task=schedule.task, run_at_us=now_us, params=schedule.params, dedup_key=key)
    (new_id,) = await store.insert([row], now_us)
    return new_id


def next_fire_times(schedule: Schedule, after_us: int, n: int) -> list[int]:
    """Up to ``n`` fire times of ``schedule`` strictly after ``after_us`` (fewer when its
    trigger or ``end_at`` runs out), within its ``start_at``/``end_at``.

    Raises:
        InvalidArgument: ``n`` is not in 1..:data:`MAX_FIRE_TIMES`.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_FIRE_TIMES:
        raise InvalidArgument(f"n must be an integer in 1..{MAX_FIRE_TIMES}, got {n!r}")
    out: list[int] = []
    at = after_us
    while len(out) < n:
        fire = schedule.next_fire_after(at)
        if fire is None:
            break
        out.append(fire)
        at = fire
    return out
