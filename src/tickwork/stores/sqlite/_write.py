"""The SQLite store's write transaction: one ``BEGIN IMMEDIATE`` per store call.

:class:`Writes` is the base of the store's ``Ops``: :meth:`Writes._write` opens the
transaction and applies the row-count changes the call made (the ``counts`` table, so a
count never scans rows) before it commits; :meth:`Writes._next` draws ids and tokens.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import TYPE_CHECKING, Final

from tickwork.stores.sqlite._reads import Reads

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["Deltas", "Writes", "ids_json"]

_COUNT: Final = (
    "INSERT INTO counts (task, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (task, state) DO UPDATE SET n = n + excluded.n"
)

#: (task, stored state) -> change in the number of rows.
Deltas = Counter[tuple[str, int]]


def ids_json(ids: Iterable[int]) -> str:
    """Ids as one JSON parameter (for ``json_each``): the SQL text never varies."""
    return json.dumps(list(ids))


class Writes(Reads):
    """Reads, and the write transaction every write of the store runs in."""

    @contextlib.contextmanager
    def _write(self) -> Iterator[Deltas]:
        """One write transaction; yields the row-count deltas to apply before commit."""
        self._c.execute("BEGIN IMMEDIATE")
        try:
            deltas: Deltas = Counter()
            yield deltas
            if deltas:
                self._c.executemany(_COUNT, [(t, int(s), n) for (t, s), n in deltas.items() if n])
            self._c.execute("COMMIT")
        except BaseException:
            if self._c.in_transaction:  # SQLite may have rolled back already (disk full...)
                self._c.execute("ROLLBACK")
            raise

    def _next(self, key: str, n: int) -> int:
        """Add ``n`` to the counter ``key`` in tickwork_meta; returns the new value."""
        (value,) = self._c.execute(
            "UPDATE tickwork_meta SET value = value + ? WHERE key = ? RETURNING value", (n, key)
        ).fetchone()
        return int(value)
