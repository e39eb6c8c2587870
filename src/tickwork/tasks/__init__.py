"""Built-in tasks that ship with tickwork: bash, and the hand-off tasks.

The hand-off tasks (webhook, ...) import their client library when a node starts them,
so importing this package needs none of them; each library is in an extra of its own
(``pip install 'tickwork[webhook]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Final

from tickwork.task import Task
from tickwork.tasks._handoff import HandoffError as HandoffError
from tickwork.tasks._handoff import HandoffRejected as HandoffRejected
from tickwork.tasks._handoff import HandoffRetryable as HandoffRetryable
from tickwork.tasks._settings import HandoffSettings as HandoffSettings
from tickwork.tasks.amqp import AmqpPublish
from tickwork.tasks.amqp import AmqpTask as AmqpTask
from tickwork.tasks.bash import BashFailed as BashFailed
from tickwork.tasks.bash import BashTask as BashTask
from tickwork.tasks.celery import CelerySend
from tickwork.tasks.celery import CeleryTask as CeleryTask
from tickwork.tasks.nats import NatsPublish
from tickwork.tasks.nats import NatsTask as NatsTask
from tickwork.tasks.redis import RedisSend
from tickwork.tasks.redis import RedisTask as RedisTask
from tickwork.tasks.webhook import WebhookCall
from tickwork.tasks.webhook import WebhookTask as WebhookTask
from tickwork.tasks.webhook import post_webhook as post_webhook

__all__ = [
    "AmqpTask",
    "BashFailed",
    "BashTask",
    "CeleryTask",
    "HandoffError",
    "HandoffRejected",
    "HandoffRetryable",
    "HandoffSettings",
    "NatsTask",
    "RedisTask",
    "WebhookTask",
    "builtin_tasks",
    "missing_builtin_tasks",
    "post_webhook",
    "validate_builtin_params",
]

#: the hand-off tasks' params checks by task name (pure: no settings, no I/O)
_VALIDATORS: Final[Mapping[str, Callable[[bytes], object]]] = {
    WebhookTask.name: WebhookCall.from_params,
    RedisTask.name: RedisSend.from_params,
    NatsTask.name: NatsPublish.from_params,
    AmqpTask.name: AmqpPublish.from_params,
    CeleryTask.name: CelerySend.from_params,
}


#: the library each hand-off task needs (None: none), checked without importing it
_NEEDS: Final[Mapping[str, str | None]] = {
    WebhookTask.name: "h11",
    RedisTask.name: None,
    NatsTask.name: None,
    AmqpTask.name: "pika",
    CeleryTask.name: "celery",
}


def builtin_tasks(settings: HandoffSettings | None = None) -> list[Task]:
    """bash and the hand-off tasks whose library is installed, configured from
    ``settings`` (default: the environment). A task whose extra is missing is left out
    (``missing_builtin_tasks`` names them), so a node without it still starts."""
    settings = settings or HandoffSettings.from_env()
    every: list[Task] = [
        WebhookTask(settings=settings),
        RedisTask(settings=settings),
        NatsTask(settings=settings),
        AmqpTask(settings=settings),
        CeleryTask(settings=settings),
    ]
    missing = set(missing_builtin_tasks())
    return [BashTask(), *(task for task in every if task.name not in missing)]


def missing_builtin_tasks() -> list[str]:
    """The hand-off tasks whose library is not installed (install ``tickwork[NAME]``)."""
    return [
        name
        for name, module in _NEEDS.items()
        if module is not None and importlib.util.find_spec(module) is None
    ]


def validate_builtin_params(task: str, params: bytes) -> None:
    """Check ``params`` of a built-in hand-off task named ``task`` (others pass).

    For clients that store instances without a node (``tickwork add``).

    Raises:
        InvalidArgument: the params are not valid for that task.
    """
    check = _VALIDATORS.get(task)
    if check is not None:
        check(params)
