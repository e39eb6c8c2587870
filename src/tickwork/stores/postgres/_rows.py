"""The PostgreSQL store's instance rows: the columns its statements read, and the
:class:`Session` its calls run statements on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, LiteralString, Protocol

from tickwork.errors import InvalidArgument
from tickwork.model import Instance, NewRow
from tickwork.state import NEW_STATES, State
from tickwork.stores.postgres import _cluster as _pg_cluster

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import psycopg

__all__ = [
    "COLS",
    "ICOLS",
    "LIST_COLS",
    "READ_COLS",
    "Session",
    "check_new_rows",
    "int_array",
    "to_instance",
]

# The columns to_instance reads, in order; {p} is a table alias prefix, {lease} the lease
# (a held row's is its claim's: see _pg_cluster).
COLUMNS: Final = (
    "{p}id, {p}task, {p}run_at_us, {p}params, {p}state, {p}attempts, {p}error, {p}owner, "
    "{p}claim_token, {lease}, {p}schedule_id, "
    "{p}fire_at_us, {p}dedup_key, {p}max_attempts, {p}timeout_us, {p}created_us, {p}updated_us"
).replace("{lease}", _pg_cluster.LEASE_OF_ROW)
COLS: Final = COLUMNS.replace("{p}", "")
ICOLS: Final = COLUMNS.replace("{p}", "i.")
# A listing's columns: params larger than LIST_PARAMS_BYTES are left out (their size last).
# octet_length of a TOASTed value reads its size, not the value: big params never load.
LIST_COLS: Final = (
    COLS.replace(
        "params",
        "CASE WHEN octet_length(params) <= 4096 THEN params ELSE ''::bytea END",
        1,
    )
    + ", CASE WHEN octet_length(params) > 4096 THEN octet_length(params) END"
)
#: What a read (not a claim) returns: the listing's columns and the run's start.
READ_COLS: Final = LIST_COLS + ", started_us"


def check_new_rows(rows: Sequence[NewRow]) -> None:
    """Refuse rows no instance may start in, before any transaction begins.

    Raises:
        InvalidArgument: a row is CLAIMED or RUNNING.
    """
    for row in rows:
        if row.state not in NEW_STATES:
            raise InvalidArgument(
                f"a new instance starts PENDING or terminal, not {row.state.name}"
            )


class Session(Protocol):
    """One store call on a worker thread: statements inside the call's transaction."""

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]: ...

    def execute(
        self, query: LiteralString, params: dict[str, Any] | None = None
    ) -> psycopg.Cursor[tuple[Any, ...]]: ...


def int_array(values: Iterable[int | None]) -> str:
    """The PostgreSQL array literal of ``values`` (None as NULL), for a ``%(x)s::bigint[]``
    parameter: psycopg dumps a list element by element in Python, a third of the node's
    time in a burst; ``str.join`` builds the same array in a fraction of it."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def to_instance(row: tuple[Any, ...]) -> Instance:
    """An Instance from a row of ``COLUMNS`` (or ``LIST_COLS``: the params size last)."""
    return Instance(
        id=row[0],
        task=row[1],
        run_at_us=row[2],
        params=bytes(row[3]),
        state=State(row[4]),
        attempts=row[5],
        error=row[6],
        owner=row[7],
        claim_token=row[8],
        lease_until_us=row[9],
        schedule_id=row[10],
        fire_at_us=row[11],
        dedup_key=row[12],
        max_attempts=row[13],
        timeout_us=row[14],
        created_us=row[15],
        updated_us=row[16],
        params_size=row[17] if len(row) > 17 else None,  # listed: LIST_COLS
        started_us=row[18] if len(row) > 18 else None,  # read: READ_COLS
    )
