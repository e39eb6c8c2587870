"""Each hand-off task's worker-side example runs and receives what tickwork sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
