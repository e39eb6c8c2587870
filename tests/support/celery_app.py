"""The Celery app of the Celery worker process the celery task tests start.

Its one task reports what it received (its task id, args, kwargs) by POSTing them as JSON
to the URL in its ``report_to`` keyword argument, so the test sees that the task ran.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from celery import Celery

app = Celery("tickwork_test", broker=os.environ["TICKWORK_TEST_CELERY_BROKER"])
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="tickwork_test.record", bind=True)
def record(self: Any, *args: Any, report_to: str, **kwargs: Any) -> None:
    body = json.dumps({"id": self.request.id, "args": args, "kwargs": kwargs}).encode()
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(report_to, data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - the test's URL
        answer.read()
