"""The Task base class (the unit users write) and the registry of a node's tasks."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tickwork.errors import DuplicateTask, InvalidArgument, TickworkError, UnknownTask

if TYPE_CHECKING:
    from tickwork.model import Instance
    from tickwork.notify import Notify

Delivery = Literal["at_least_once", "at_most_once"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")

#: The instance whose ``run`` is executing in this context (set by the Executor).
CURRENT_INSTANCE: ContextVar[Instance] = ContextVar("tickwork_current_instance")


def current_instance() -> Instance:
    """The instance being run, from inside a task's ``run`` (its id, attempts, schedule).

    Hand-off tasks use ``id`` and ``attempts`` as an idempotency key.

    Raises:
        TickworkError: called outside a run.
    """
    try:
        return CURRENT_INSTANCE.get()
    except LookupError:
        raise TickworkError(
            "tickwork.current_instance() is only available inside a task's run()"
        ) from None


class Task:
    """Named code that can run at a time. Subclass it and set ``name``.

    ``run`` receives the stored ``params`` bytes (``tickwork.unpack`` them if they were
    packed). Its return value is the result; raising is a failure. The hooks run on the
    node after the outcome is known; they default to no-ops, and a hook that raises is
    logged and never changes or loses the instance's recorded state.

    Class attributes tune how the task runs (an instance may override some at schedule
    time): ``max_attempts`` (retries are opt-in: None runs once), ``timeout``,
    ``max_concurrent`` (a per-task concurrency limit), ``delivery``, ``notify``
    (failure notifications, :class:`tickwork.Notify`).
    """

    name: ClassVar[str] = ""
    max_attempts: ClassVar[int | None] = None
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    backoff_base: ClassVar[timedelta] = timedelta(seconds=1)
    backoff_cap: ClassVar[timedelta] = timedelta(minutes=10)
    timeout: ClassVar[timedelta | None] = None
    max_concurrent: ClassVar[int | None] = None
    delivery: ClassVar[Delivery] = "at_least_once"
    #: post a message to a webhook when an instance fails, is missed or runs overdue
    #: (``tickwork.Notify``); None: no notices
    notify: ClassVar[Notify | None] = None

    async def run(self, params: bytes) -> Any:
        """Do the work (or hand it off). Override this."""
        raise NotImplementedError(f"task {self.name!r} does not implement run()")

    def validate_params(self, params: bytes) -> None:
        """Check ``params`` when an instance or schedule of this task is created.

        Called by ``schedule``, ``schedule_many``, ``add_schedule`` and ``tickwork add``
        / ``tickwork cron add`` (for the built-in tasks) before anything is stored, so a
        bad URL or queue name is refused then rather than when the run comes due. The
        default accepts anything. Raise :class:`~tickwork.InvalidArgument` saying what is
        wrong; it must not do I/O.
        """

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """What the task holds while a node runs it (connections, a client, a thread).

        ``open_scheduler`` enters it before the node starts running instances and exits
        it after the last run ended. The default holds nothing. Tasks that keep a
        connection open connect lazily inside it, so a broker that is down when the node
        starts fails runs (which may be retried), not the node.
        """
        return contextlib.nullcontext()

    async def on_success(self, instance: Instance, result: Any) -> None:
        """Called once when ``instance`` succeeded with ``result``."""

    async def on_fail(self, instance: Instance, error: BaseException) -> None:
        """Called once when ``instance`` failed for good (after its last attempt)."""

    async def on_abort(self, instance: Instance) -> None:
        """Called once when ``instance`` was aborted by this node."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _overrides(task: Task, hook: str) -> bool:
    return getattr(type(task), hook) is not getattr(Task, hook)


class TaskRegistry(Mapping[str, Task]):
    """The tasks a node can run, by name. Refuses duplicates and malformed names."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        #: per task name: which hooks are overridden (the no-op ones are skipped on the
        #: hot path, which keeps a no-op task's overhead to the run itself).
        self.hooks: dict[str, frozenset[str]] = {}
        #: per task name: its ``validate_params``, only where a task overrides it (the
        #: default accepts anything and costs nothing on the scheduling path).
        self.validators: dict[str, Callable[[bytes], None]] = {}
        for task in tasks:
            self.add(task)

    def add(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise InvalidArgument(
                f"tasks must be tickwork.Task instances, got {task!r}; "
                "pass an instance (Greet()), not the class"
            )
        name = task.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(
                f"task {type(task).__name__} has an invalid name {name!r}: set the class "
                "attribute `name` to letters, digits and _ . : - (at most 200 characters)"
            )
        if name in self._tasks:
            raise DuplicateTask(
                f"two tasks are named {name!r} ({self._tasks[name]!r} and {task!r}); "
                "task names must be unique on a node"
            )
        if task.delivery not in ("at_least_once", "at_most_once"):
            raise InvalidArgument(
                f"task {name!r}: delivery must be 'at_least_once' or 'at_most_once', "
                f"got {task.delivery!r}"
            )
        self._tasks[name] = task
        self.hooks[name] = frozenset(
            h for h in ("on_success", "on_fail", "on_abort") if _overrides(task, h)
        )
        if _overrides(task, "validate_params"):
            self.validators[name] = task.validate_params

    def require(self, name: str) -> Task:
        """The task called ``name``. Raises UnknownTask with the known names."""
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTask(
                f"unknown task {name!r}; this node knows: {known}. Register it with "
                "open_scheduler(tasks=[...])"
            ) from None

    def __getitem__(self, name: str) -> Task:
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)
