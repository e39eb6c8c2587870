"""What the CLI checks new work against: the tasks and params limit the nodes recorded.

Every node records the names of its tasks and its params limit in the store's nodes table
(``open_scheduler`` does, through :class:`~tickwork.stores.cluster.NodeRegistry`). Before
``add``, ``cron add`` or ``cron import`` writes anything, the CLI reads that table:

* A task that no **live** node runs is refused (exit 2), naming the tasks the live nodes
  do run, unless ``--force``: an instance of it would only fail "unknown task" on every
  run.
* When **no node is live** (stopped for maintenance, not started yet), the most recent
  node that recorded its tasks stands for the next one: a task it did not run is refused
  the same way. Work for the tasks it ran is accepted: it runs when a node starts.
* When **no node ever recorded** its tasks (a new database, or nodes of an older
  tickwork), nothing can be checked: the work is accepted, with a warning unless its
  task is ``bash`` (which ``tickwork run`` always runs).

The params limit is the smallest of those nodes' limits (every one of them may be asked
to run the instance), or the default (1 MiB) when none recorded one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from tickwork.model import DEFAULT_MAX_PARAMS_BYTES, check_params_size
from tickwork.stores.cluster import NodeInfo, NodeRegistry
from tickwork.tasks.bash import BashTask

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from tickwork.stores.base import Store

__all__ = ["admit", "check_params"]

log = logging.getLogger("tickwork.cli")


def _judges(nodes: Iterable[NodeInfo]) -> tuple[list[NodeInfo], bool]:
    """The nodes whose tasks decide (the live ones that recorded them, else the last one
    that did), and whether they are live."""
    recorded = [n for n in nodes if n.tasks is not None]
    live = [n for n in recorded if n.alive]
    if live:
        return live, True
    return recorded[:1], False


async def admit(
    store: Store, tasks: Collection[str], *, force: bool, hint: str = "'--task'"
) -> int:
    """Refuse ``tasks`` no node runs (see the module doc) and return the params limit.

    Raises:
        click.BadParameter: a task no node runs, without ``force`` (``--task``).
    """
    if not isinstance(store, NodeRegistry):
        return DEFAULT_MAX_PARAMS_BYTES
    nodes = await store.nodes()
    judges, live = _judges(nodes)
    limits = [n.max_params_bytes for n in judges if n.max_params_bytes is not None]
    limit = min(limits) if limits else DEFAULT_MAX_PARAMS_BYTES
    if hasattr(store, "max_params_bytes"):
        store.max_params_bytes = limit  # the store refuses the same as the CLI
    if not judges:
        if set(tasks) <= {BashTask.name}:  # `tickwork run` always runs it: no doubt to tell
            return limit
        log.warning(
            "no node has run on this database yet: cannot check that one runs task %s",
            ", ".join(repr(t) for t in sorted(tasks)),
        )
        return limit
    known = {t for n in judges for t in n.tasks or ()}
    unknown = sorted(set(tasks) - known)
    if not unknown:
        return limit
    names = ", ".join(repr(t) for t in unknown)
    runs = ", ".join(sorted(known)) or "none"
    if live:
        why = f"no live node runs task {names} (the live nodes run: {runs})"
    else:
        last = judges[0].node_id
        why = (
            f"no node is running, and the last one ({last}) did not run task {names} "
            f"(it ran: {runs})"
        )
    if force:
        log.warning("%s; added anyway (--force)", why)
        return limit
    raise click.BadParameter(
        f"{why}; check the name, or add it anyway with --force (it runs when a node with "
        "that task starts)",
        param_hint=hint,
    )


def check_params(size: int, limit: int, hint: str = "'--params'") -> None:
    """Refuse params of ``size`` bytes over ``limit`` as a usage error (exit 2).

    Raises:
        click.BadParameter: naming the limit.
    """
    try:
        check_params_size(size, limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
