"""Admission of schedule occurrences that came due: may each run, and how?

Written once over :class:`~tickwork.stores._schedule_ops.ScheduleTx`, like the other
schedule operations. A schedule whose overlap policy is not ``allow`` has at most one
*admitted occurrence* cluster-wide (:class:`~tickwork.schedules.plan.Slot`):
:func:`check_occurrences` records the occurrence a node is about to start only when no
occurrence held by another node is admitted and no older occurrence already due is held by
another node (the oldest goes first), deciding under the schedule's row lock
(:meth:`ScheduleTx.slots`), so two nodes admitting occurrences of one schedule at the same
moment take turns and the second sees the first. Nothing is written when an occurrence
ends, and no state is written here.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import attrs

from tickwork.schedules.plan import OccurrenceCheck, OccurrenceInfo, check, in_flight
from tickwork.schedules.schedule import Overlap

if TYPE_CHECKING:
    from tickwork.stores._schedule_ops import ScheduleTx

__all__ = ["check_occurrences"]


def check_occurrences(
    tx: ScheduleTx, ids: Sequence[int], now_us: int, admit: Collection[int] = ()
) -> builtins.list[OccurrenceCheck]:
    """The verdict on each occurrence (by instance id) that came due, in order.

    ``admit``: ids of ``ids`` the caller starts now if they may run and no other node runs
    an occurrence of their schedule (at most one per schedule). For each whose verdict is
    to run under an overlap policy other than ``allow``, the schedule's admitted
    occurrence is read under its row lock: if another node's occurrence holds it, or an
    older occurrence already due (by ``now_us``) is held by another node, the check names
    that one (``in_flight``) and nothing is written; otherwise this occurrence is recorded
    as admitted. Needs a write transaction when ``admit`` is not empty.
    """
    admit = frozenset(admit)
    infos = tx.info(ids)
    sids = sorted({info.schedule_id for info in infos.values()})
    schedules = tx.load(sids, lock=False) if sids else {}
    out: list[OccurrenceCheck] = []
    want: dict[str, int] = {}  # schedule id -> position in out of the one to admit
    for iid in ids:
        info = infos.get(iid)
        s = None if info is None else schedules.get(info.schedule_id)
        verdict = check(iid, info, s, now_us)
        if (
            info is not None
            and iid in admit
            and verdict.run
            and verdict.overlap is not Overlap.ALLOW
            and info.schedule_id not in want
        ):
            want[info.schedule_id] = len(out)
        out.append(verdict)
    if want:
        _admit(tx, want, infos, out, now_us)
    return out


def _admit(
    tx: ScheduleTx,
    want: dict[str, int],
    infos: dict[int, OccurrenceInfo],
    out: builtins.list[OccurrenceCheck],
    now_us: int,
) -> None:
    """check_occurrences' admission: ``want`` maps schedule ids to positions in ``out``
    (updated in place with what keeps them from starting, if anything)."""
    slots = tx.slots(sorted(want))
    free: dict[str, int] = {}
    for sid, at in want.items():
        other = in_flight(slots.get(sid), infos[out[at].id])
        if other is not None:
            out[at] = attrs.evolve(out[at], in_flight=other)
        elif sid in slots:
            free[sid] = at
    # The oldest first: an older occurrence that came due on another node and waits (or
    # is being checked there) goes before this one.
    askers = [(infos[out[at].id], at) for at in free.values()]
    older = (
        tx.older([(a.schedule_id, a.fire_us or 0, a.owner) for a, _ in askers], now_us)
        if askers
        else {}
    )
    taken: list[tuple[str, int, int | None]] = []
    for asker, at in askers:
        first = older.get(asker.schedule_id)
        if first is not None:
            out[at] = attrs.evolve(out[at], in_flight=first)
            continue
        slot = slots[asker.schedule_id]
        if (slot.instance_id, slot.token) != (asker.id, asker.claim_token):
            taken.append((asker.schedule_id, asker.id, asker.claim_token))
    if taken:
        tx.take(taken)
