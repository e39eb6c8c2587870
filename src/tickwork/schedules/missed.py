"""Why an occurrence was recorded MISSED, as one of a few kinds (a metric's label, a count
on the dashboard): the reason text itself names times and instance ids.

Every MISSED row carries its reason as its ``error``: the misfire policy's (``misfire=...``,
written by the claim that found the occurrence late, or by the node when late occurrences
came due together), the overlap policy's (``overlap=...``, written by the node when the
previous run had not ended), or the pause (:data:`tickwork.schedules.plan.PAUSED`).
"""

from __future__ import annotations

from typing import Final

from tickwork.schedules.plan import PAUSED

__all__ = ["REASONS", "reason_of"]

#: The kinds, in the order they are shown: late beyond the schedule's grace (misfire
#: policy), the previous run still going (overlap policy), the schedule paused, and
#: anything else (a MISSED row written by a store client with a reason of its own).
REASONS: Final = ("misfire", "overlap", "paused", "other")


def reason_of(error: str | None) -> str:
    """The kind of a MISSED instance's reason (its ``error``), one of :data:`REASONS`."""
    if error is None:
        return "other"
    if error.startswith("misfire="):
        return "misfire"
    if error.startswith("overlap="):
        return "overlap"
    if error == PAUSED:
        return "paused"
    return "other"
