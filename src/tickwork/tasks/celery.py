"""CeleryTask: send a named Celery task to a Celery broker (tickwork as a durable,
cluster-safe Celery beat).

params: ``{"task": "myapp.tasks.report", "args": [...], "kwargs": {...}}``, optional
``"queue"`` and ``"routing_key"``. The Celery task id is ``tickwork-<instance id>``, the
same for every attempt, so a worker that checks its result backend before running (or
keeps the ids it ran) does not run a hand-off twice. Arguments travel as JSON (Celery's
default serializer). The broker is the node's (``TICKWORK_CELERY_BROKER``: an
``amqp://`` or ``redis://`` URL), never the params'.

A broker that cannot be reached is :class:`HandoffRetryable`; any other refusal is
:class:`HandoffRejected`. On RabbitMQ the message is published with confirms. The
result is ``{"celery_task_id", "task", "queue"}``.

Celery's client is synchronous and not thread-safe: it runs on a thread of the task's
own (:class:`._thread.WorkerThread`), one send at a time.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.task import Task, current_instance
from tickwork.tasks._handoff import (
    HandoffRejected,
    HandoffRetryable,
    check_name,
    missing_extra,
    params_map,
)
from tickwork.tasks._settings import HandoffSettings
from tickwork.tasks._thread import WorkerThread
from tickwork.tasks.redis import server_of

__all__ = ["CelerySend", "CeleryTask"]

_KEYS = ("task", "args", "kwargs", "queue", "routing_key")
#: a Celery task name: dotted Python names (``myapp.tasks.report``), at most 255
_TASK = re.compile(r"[A-Za-z_][A-Za-z0-9_]*([.:][A-Za-z_][A-Za-z0-9_]*)*")
_TASK_RULE = "a dotted name like 'myapp.tasks.report'"
_QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_QUEUE_RULE = "1-255 letters, digits and - _ . :"
_ROUTING = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_ROUTING_RULE = "1-255 characters without control characters"
#: seconds to wait for the broker when connecting
CONNECT_TIMEOUT = 5.0


def _celery() -> Any:
    try:
        import celery  # noqa: PLC0415 - the celery extra, imported on first use
    except ImportError:
        raise missing_extra("celery", "celery") from None
    return celery


@attrs.frozen
class CelerySend:
    """One validated send."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    queue: str | None = None
    routing_key: str | None = None

    @classmethod
    def from_params(cls, params: bytes) -> CelerySend:
        """Check the celery params. Raises InvalidArgument saying what is wrong."""
        raw = params_map("celery", params, _KEYS)
        if "task" not in raw:
            raise InvalidArgument("celery params need 'task', e.g. 'myapp.tasks.report'")
        name = raw["task"]
        if isinstance(name, str) and len(name) > 255:
            raise InvalidArgument("celery 'task' is longer than 255 characters")
        check_name("celery", "task", name, _TASK, _TASK_RULE)
        args, kwargs = raw.get("args", []), raw.get("kwargs", {})
        if not isinstance(args, list):
            raise InvalidArgument(f"celery 'args' must be a list, got {args!r}")
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InvalidArgument(f"celery 'kwargs' must be a map of names, got {kwargs!r}")
        try:
            json.dumps([args, kwargs])
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"celery 'args'/'kwargs' cannot travel as JSON ({exc})") from None
        queue, key = raw.get("queue"), raw.get("routing_key")
        if queue is not None:
            check_name("celery", "queue", queue, _QUEUE, _QUEUE_RULE)
        if key is not None:
            check_name("celery", "routing_key", key, _ROUTING, _ROUTING_RULE)
        return cls(task=name, args=tuple(args), kwargs=kwargs, queue=queue, routing_key=key)


class _Sender:
    """The Celery app (its broker connection pool); used only on the task's thread."""

    def __init__(self, broker: str) -> None:
        self._broker = broker
        self._app: Any = None
        # A connection and producer of our own: Celery's default producers come from
        # kombu's process-wide pool, which closing would break for every other app.
        self._connection: Any = None
        self._producer: Any = None

    def send(self, spec: CelerySend, task_id: str) -> dict[str, Any]:
        kombu_errors = _kombu_errors()
        if self._app is None:
            self._app = _app(self._broker)
        if self._producer is None:
            self._connection = self._app.connection_for_write()
            self._producer = self._app.amqp.Producer(self._connection)
        try:
            self._app.send_task(
                spec.task,
                args=list(spec.args),
                kwargs=dict(spec.kwargs),
                task_id=task_id,
                queue=spec.queue,
                routing_key=spec.routing_key,
                retry=False,  # tickwork's retry policy applies, not kombu's
                producer=self._producer,
            )
        except (kombu_errors.OperationalError, OSError, TimeoutError) as exc:
            self._drop_connection()  # a new one next time
            raise HandoffRetryable(
                f"celery broker {server_of(self._broker)}: {type(exc).__name__} {exc}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any other refusal is final, and says why
            raise HandoffRejected(f"celery: sending {spec.task!r} failed: {exc!r}") from None
        return {"celery_task_id": task_id, "task": spec.task, "queue": spec.queue}

    def close(self) -> None:
        self._drop_connection()
        if self._app is not None:
            self._app.close()
            self._app = None

    def _drop_connection(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it is going away either way
                connection.close()


def _kombu_errors() -> Any:
    import kombu.exceptions  # noqa: PLC0415 - installed with celery

    return kombu.exceptions


def _app(broker: str) -> Any:
    app = _celery().Celery("tickwork", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        broker_connection_timeout=CONNECT_TIMEOUT,
        # No connection retries of kombu's own (tickwork's retry policy applies); on
        # RabbitMQ, publish with confirms: a send returns once the broker has it.
        broker_transport_options={"max_retries": 0}
        | ({"confirm_publish": True} if broker.startswith("amqp") else {}),
    )
    return app


class CeleryTask(Task):
    """Send a Celery task per run (see the module docstring).

    Args:
        broker: the Celery broker URL; default: the settings' (``TICKWORK_CELERY_BROKER``,
            else ``amqp://guest:guest@127.0.0.1:5672//``).
        settings: where the default broker comes from (default: the environment).
    """

    name: ClassVar[str] = "celery"
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (HandoffRetryable, TaskTimeout)

    def __init__(
        self, broker: str | None = None, *, settings: HandoffSettings | None = None
    ) -> None:
        self._broker = broker or (settings or HandoffSettings.from_env()).celery_broker
        self._thread: WorkerThread | None = None
        self._sender: _Sender | None = None

    def validate_params(self, params: bytes) -> None:
        CelerySend.from_params(params)

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """The task's thread and its Celery app (connecting on first use)."""
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        # Celery is imported on the thread by the first send: it takes a while, and a
        # node that never sends one does not pay for it.
        sender = _Sender(self._broker)
        thread = WorkerThread(f"tickwork-celery-{self.name}")
        self._thread, self._sender = thread, sender
        try:
            yield
        finally:
            self._thread = self._sender = None
            with trio.CancelScope(shield=True):
                await thread.close(sender.close)

    async def run(self, params: bytes) -> dict[str, Any]:
        """Send the Celery task; see the module docstring."""
        thread, sender = self._thread, self._sender
        if thread is None or sender is None:
            raise TickworkError(
                "CeleryTask runs inside open_scheduler (or `async with task.lifespan()`)"
            )
        spec = CelerySend.from_params(params)
        task_id = f"tickwork-{current_instance().id}"
        return await thread.run(lambda: sender.send(spec, task_id))
