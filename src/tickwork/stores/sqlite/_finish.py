"""The SQLite store's ``finish``: a batch of outcomes, fenced by each row's claim, written
in a few statements whatever the batch's size.

The rows are read in one statement (:meth:`FinishOps._view`), each outcome is decided in
Python by the shared rules (:data:`tickwork.stores._rules.FINISHED`), and what passed is
written grouped by kind: the ended rows with nothing but times to keep (a plain success:
the hot path) take one statement per (state, attempts), the other ended rows one, the
retries one ``executemany``, the retried attempts' history one. Row data travels as one
JSON parameter, so a batch is one step of each statement: every step re-takes the GIL,
which the trio thread holds most of the time.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Final

from tickwork.model import Finish
from tickwork.state import HELD, State
from tickwork.stores._rules import FINISHED, finish_event, history_state
from tickwork.stores._sql import states
from tickwork.stores.sqlite._write import Writes, ids_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tickwork.stores.sqlite._write import Deltas

__all__ = ["FinishOps"]

#: The rows a finish ended or gave back that were RUNNING: their run is over (the hot path,
#: a quick run's outcome, finds the row CLAIMED and pays nothing for this).
_FINISH_NOT_RUNNING: Final = (
    "UPDATE instances SET started_us = NULL, repeatable = 0 "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
#: An at-least-once run started (a finish to RUNNING): the claim is kept.
_FINISH_RUNNING: Final = states(
    "UPDATE instances SET state = {RUN}, started_us = ?, repeatable = 1, updated = ? WHERE id = ?"
)
#: The ended rows of a finish, ?2 a JSON array of [id, state, attempts, error, started,
#: finished, error_type, result, output]: one statement, the last attempt kept in the row.
_FINISH_ENDED: Final = (
    "UPDATE instances SET state = j.state, attempts = j.attempts, error = j.error, "
    "claim_token = NULL, lease_until = NULL, abort_requested = 0, updated = ?1, "
    "last_started = j.started, "
    "last_finished = j.finished, last_error_type = j.error_type, "
    "last_result = j.result, last_output = j.output "
    "FROM (SELECT json_extract(value, '$[0]') AS id, "
    "json_extract(value, '$[1]') AS state, json_extract(value, '$[2]') AS attempts, "
    "json_extract(value, '$[3]') AS error, json_extract(value, '$[4]') AS started, "
    "json_extract(value, '$[5]') AS finished, json_extract(value, '$[6]') AS error_type, "
    "json_extract(value, '$[7]') AS result, json_extract(value, '$[8]') AS output "
    "FROM json_each(?2)) AS j "
    "WHERE instances.id = j.id"
)
#: Ended rows of one state (?2) and attempt count (?3) with no error, result or output to
#: keep, ?4 a JSON array of [id, started, finished]: the same write as _FINISH_ENDED with
#: three JSON reads per row instead of nine (SQLite parses the row's text at each read).
_FINISH_BARE: Final = (
    "UPDATE instances SET state = ?2, attempts = ?3, error = NULL, "
    "claim_token = NULL, lease_until = NULL, abort_requested = 0, updated = ?1, "
    "last_started = j.started, last_finished = j.finished, last_error_type = NULL, "
    "last_result = NULL, last_output = NULL "
    "FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS started, "
    "json_extract(value, '$[2]') AS finished FROM json_each(?4)) AS j "
    "WHERE instances.id = j.id"
)
_FINISH_PENDING: Final = states(
    "UPDATE instances SET state = {RETRY}, attempts = ?, error = ?, run_at = coalesce(?, run_at), "
    "owner = NULL, claim_token = NULL, lease_until = NULL, updated = ? WHERE id = ?"
)
_HISTORY_MANY: Final = (
    "INSERT INTO history (instance_id, attempt, node, started, finished, state, error_type, "
    "error, result, output) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
    "json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'), "
    "json_extract(value, '$[8]'), json_extract(value, '$[9]') FROM json_each(?)"
)


class _Placed:
    """The statements' parameters of one ``finish``, filled row by row by :meth:`place`."""

    __slots__ = ("bare", "ended", "history", "ran", "retried", "running")

    def __init__(self) -> None:
        #: (state, attempts) -> [id, started, finished] of ended rows with no texts
        self.bare: defaultdict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
        self.ended: list[tuple[Any, ...]] = []  # the other ended rows (_FINISH_ENDED)
        self.retried: list[tuple[Any, ...]] = []
        self.history: list[tuple[Any, ...]] = []
        self.running: list[tuple[Any, ...]] = []  # at-least-once runs started
        self.ran: list[int] = []  # rows RUNNING before their outcome: no start time left

    def place(self, f: Finish, target: State, owner: str, now: int) -> None:
        """Put one applied finish into the statements. An ended row keeps its last attempt
        in the row; a retry's attempt goes to the history table, as does the failed attempt
        of a retry an abort turned ABORTED."""
        ran = f.started_us is not None
        finished = None
        if ran:
            finished = now if f.finished_us is None else f.finished_us
        if f.state is not State.PENDING:
            if f.error is None and (
                not ran or (f.error_type is None and f.result is None and f.output is None)
            ):
                self.bare[(target, f.attempts)].append((f.id, f.started_us, finished))
                return
            self.ended.append(
                (f.id, int(target), f.attempts, f.error, f.started_us, finished,
                 f.error_type if ran else None, f.result if ran else None,
                 f.output if ran else None)
            )  # fmt: skip
            return
        if target is State.PENDING:
            self.retried.append((f.attempts, f.error, f.run_at_us, now, f.id))
        elif f.error is None:
            self.bare[(target, f.attempts)].append((f.id, None, None))
        else:
            self.ended.append((f.id, int(target), f.attempts, f.error, *(None,) * 5))
        if ran:
            self.history.append(
                (f.id, f.attempts, owner, f.started_us, finished,
                 int(history_state(f.state)), f.error_type, f.error, f.result,
                 f.output)
            )  # fmt: skip


class FinishOps(Writes):
    """``Store.finish`` on the store's connection (a base of its ``Ops``)."""

    def _view(self, ids: Iterable[int]) -> dict[int, list[Any]]:
        """``id -> [owner, claim_token, state, task, abort_requested]`` for the rows that
        exist."""
        # One step for the whole batch (rows come back as one JSON document): every step
        # of a statement re-takes the GIL, which the trio thread holds most of the time.
        (doc,) = self._c.execute(
            "SELECT json_group_array(json_array(id, owner, claim_token, state, task, "
            "abort_requested)) "
            "FROM instances WHERE id IN (SELECT value FROM json_each(?))",
            (ids_json(ids),),
        ).fetchone()
        return {r[0]: r[1:] for r in json.loads(doc)}

    def finish(self, owner: str, finishes: Sequence[Finish], now: int) -> list[bool]:
        for f in finishes:
            finish_event(f.state, abort_requested=False)  # a target no finish may write
        if not finishes:
            return []
        with self._write() as deltas:
            view = self._view(f.id for f in finishes)
            out = []
            placed = _Placed()
            moves: Counter[tuple[str, int, State]] = Counter()  # (task, from, to) -> rows
            for f in finishes:
                v = view.get(f.id)
                target = None
                if v is not None and v[0] == owner and v[1] == f.claim_token and v[2] in HELD:
                    target = FINISHED[(v[2], f.state, v[4])]
                out.append(target is not None)
                if target is None or v is None:
                    continue
                if f.state is State.RUNNING:  # RUN: an at-least-once run started
                    if v[2] != target:  # a CLAIMED row; a RUNNING one stays as it is
                        placed.running.append((f.started_us, now, f.id))
                        moves[(v[3], v[2], target)] += 1
                        v[2] = target
                    continue
                if v[2] == State.RUNNING:
                    placed.ran.append(f.id)
                moves[(v[3], v[2], target)] += 1
                v[2] = target  # a second finish of this row in the batch is refused
                placed.place(f, target, owner, now)
            _apply(moves, deltas)
            self._finished(now, placed)
        return out

    def _finished(self, now: int, placed: _Placed) -> None:
        """The statements of a finish's outcomes (see ``_Placed.place``)."""
        if placed.running:
            self._c.executemany(_FINISH_RUNNING, placed.running)
        for (state, attempts), rows in placed.bare.items():
            self._c.execute(_FINISH_BARE, (now, int(state), attempts, json.dumps(rows)))
        if placed.ended:
            self._c.execute(_FINISH_ENDED, (now, json.dumps(placed.ended)))
        if placed.retried:
            self._c.executemany(_FINISH_PENDING, placed.retried)
        if placed.history:
            self._c.execute(_HISTORY_MANY, (json.dumps(placed.history),))
        if placed.ran:
            self._c.execute(_FINISH_NOT_RUNNING, (ids_json(placed.ran),))


def _apply(moves: Counter[tuple[str, int, State]], deltas: Deltas) -> None:
    """Count the rows each (task, from, to) move took out of one state and into another."""
    for (task, old, new), n in moves.items():
        deltas[(task, old)] -= n
        deltas[(task, int(new))] += n
