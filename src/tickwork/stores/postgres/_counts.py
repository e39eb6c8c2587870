"""Stored instances per state on PostgreSQL without a full scan.

``count(*)`` over 10,000,000 rows reads every row (an index-only scan still visits the
heap pages the visibility map does not cover) and took about a second on the node's
connection, on every refresh of the UI's, the API's and ``/metrics``' counts. Instead:

* each state is counted exactly up to :data:`EXACT_UP_TO` rows (a ``LIMIT``-ed
  index-only scan of ``instances_state``: at most that many index entries per state);
* a state with more rows is given the planner's estimate for ``state = <state>``
  (``EXPLAIN``: the table's size as of now times the state's frequency in the column
  statistics that autovacuum's ``ANALYZE`` keeps), never less than the exact floor.

So small counts are exact (PENDING, CLAIMED, RUNNING and FAILED on most systems), large
ones are estimates as fresh as the last ``ANALYZE`` (autovacuum runs one after about 10 %
of the rows changed): a few percent off is usual. One statement for the exact part, one
``EXPLAIN`` per large state; no row is read beyond the floors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString

from tickwork.state import State

if TYPE_CHECKING:
    from collections.abc import Callable

    from tickwork.stores.postgres._rows import Session

__all__ = ["EXACT_UP_TO", "CountQueries"]

#: Each state is counted exactly up to this many rows; beyond, estimated.
EXACT_UP_TO: Final = 10_000


class CountQueries:
    """The statements, rendered for one schema."""

    def __init__(self, r: Callable[[str], LiteralString]) -> None:
        self.capped_sql = r(
            "SELECT s.v, (SELECT count(*) FROM (SELECT 1 FROM {s}.instances i "
            "WHERE i.state = s.v LIMIT %(cap)s) AS x) "
            "FROM unnest(%(states)s::smallint[]) AS s(v)"
        )
        explain = "EXPLAIN (FORMAT JSON) SELECT 1 FROM {s}.instances WHERE state = "
        self.estimate_sql: dict[State, LiteralString] = {
            st: r(explain + "{" + st.name + "}") for st in State
        }

    def count_by_state(self, session: Session) -> dict[State, int]:
        exact_up_to = EXACT_UP_TO
        counts = dict.fromkeys(State, 0)
        params = {"cap": exact_up_to + 1, "states": [int(s) for s in State]}
        for state, n in session.execute(self.capped_sql, params):
            counts[State(state)] = int(n)
        for st, n in counts.items():
            if n > exact_up_to:
                row = session.execute(self.estimate_sql[st]).fetchone()
                counts[st] = max(_plan_rows(row), n)
        return counts


def _plan_rows(row: Any) -> int:
    """The planner's row estimate from an ``EXPLAIN (FORMAT JSON)`` answer."""
    if row is None:
        return 0
    doc = row[0]
    if isinstance(doc, str):  # a driver that does not decode json
        import json  # noqa: PLC0415 - only then

        doc = json.loads(doc)
    return int(doc[0]["Plan"]["Plan Rows"])
