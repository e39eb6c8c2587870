"""The hand-off tasks' connection settings: one record, read from the environment.

Every hand-off task takes its settings from here (or from its constructor's arguments,
for embedders), never from an instance's params. ``ENV`` names the variable of each
field, so a configuration loader (a TOML file, ``tickwork run`` options) can fill the
same record with its own precedence and pass it to :func:`tickwork.tasks.builtin_tasks`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = ["DEFAULTS", "ENV", "HandoffSettings"]

#: field -> environment variable
ENV: Final[Mapping[str, str]] = {
    "webhook_secret": "TICKWORK_WEBHOOK_SECRET",
    "redis_url": "TICKWORK_REDIS_URL",
    "nats_url": "TICKWORK_NATS_URL",
    "amqp_url": "TICKWORK_AMQP_URL",
    "celery_broker": "TICKWORK_CELERY_BROKER",
}

#: field -> value when neither the environment nor the caller sets it (local servers)
DEFAULTS: Final[Mapping[str, str | None]] = {
    "webhook_secret": None,  # unsigned calls
    "redis_url": "redis://127.0.0.1:6379/0",
    "nats_url": "nats://127.0.0.1:4222",
    "amqp_url": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "celery_broker": "amqp://guest:guest@127.0.0.1:5672//",
}


@attrs.frozen
class HandoffSettings:
    """Where the hand-off tasks connect, and the webhook signing secret.

    ``webhook_secret`` is a Standard Webhooks secret (``whsec_<base64>``) or None.
    """

    webhook_secret: str | None = DEFAULTS["webhook_secret"]
    redis_url: str = attrs.field(default=DEFAULTS["redis_url"], repr=False)
    nats_url: str = attrs.field(default=DEFAULTS["nats_url"], repr=False)
    amqp_url: str = attrs.field(default=DEFAULTS["amqp_url"], repr=False)
    celery_broker: str = attrs.field(default=DEFAULTS["celery_broker"], repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HandoffSettings:
        """The settings from ``environ`` (default ``os.environ``); unset or empty variables
        keep their defaults."""
        env = os.environ if environ is None else environ
        given = {field: env[var] for field, var in ENV.items() if env.get(var)}
        return cls(**given)

    def __repr__(self) -> str:
        # URLs may carry passwords and the secret is one: neither is ever printed.
        secret = "set" if self.webhook_secret else "unset"
        return f"HandoffSettings(webhook_secret={secret})"
