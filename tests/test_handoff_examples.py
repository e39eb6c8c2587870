"""Each hand-off task's worker-side example runs and receives what tickwork sent."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.handoff_support import require_service

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_webhook_receiver(tmp_path):
    out = _run("webhook_receiver.py", tmp_path)
    assert 'received 1-1: {"report": "daily", "day": "2030-01-01"}' in out
    assert "instance 1: SUCCEEDED" in out


def test_redis_consumer(tmp_path):
    require_service("Redis", os.environ.get("TICKWORK_REDIS_URL", "redis://127.0.0.1:6379"), 6379)
    out = _run("redis_consumer.py", tmp_path)
    assert "received daily 2030-01-01 (instance 1)" in out


def test_nats_consumer(tmp_path):
    require_service("NATS", os.environ.get("TICKWORK_NATS_URL", "nats://127.0.0.1:4222"), 4222)
    out = _run("nats_consumer.py", tmp_path)
    assert "instance 1: SUCCEEDED" in out
    assert "received daily 2030-01-01 (Nats-Msg-Id 1-1)" in out


def test_amqp_consumer(tmp_path):
    require_service(
        "RabbitMQ", os.environ.get("TICKWORK_AMQP_URL", "amqp://127.0.0.1:5672/%2F"), 5672
    )
    out = _run("amqp_consumer.py", tmp_path)
    assert "instance 1: SUCCEEDED" in out
    assert "received daily 2030-01-01 (message_id 1-1)" in out


def test_celery_worker(tmp_path):
    broker = os.environ.get("TICKWORK_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
    require_service("the Celery broker", broker, 5672)
    out = _run("celery_worker.py", tmp_path)
    assert "instance 1: SUCCEEDED" in out
    assert "received reports.daily 2030-01-01 (task id tickwork-1)" in out


def _documented_commands() -> list[str]:
    """The `tickwork ...` commands of docs/tasks.md's shell blocks (continuations joined)."""
    text = (EXAMPLES.parent / "docs" / "tasks.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("tickwork ")]


@pytest.mark.parametrize("command", _documented_commands())
def test_documented_commands_are_accepted(command, tmp_path):
    """Each `tickwork add` / `tickwork cron add` in docs/tasks.md stores what it says."""
    words = shlex.split(command)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "tickwork", *words, "--db", str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
