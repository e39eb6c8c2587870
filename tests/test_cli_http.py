"""The command line's HTTP side: ``tickwork token add|ls|rm`` and ``tickwork run --http``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.cli import Node, error_line, tw

if TYPE_CHECKING:
    from pathlib import Path


def token(db: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``tickwork token SUB --db DB ARGS``."""
    return tw(None, "token", args[0], "--db", str(db), *args[1:], code=code)


def until(predicate: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_token_add_ls_rm(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    text = token(db, "add", "--scope", "read", "--name", "grafana").stdout.strip()
    assert re.fullmatch(r"tw_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", text), text
    made = json.loads(token(db, "add", "--scope", "admin", "--json").stdout)
    assert made["scope"] == "admin"
    listed = json.loads(token(db, "ls", "--json").stdout)
    assert [(t["scope"], t["name"]) for t in listed] == [("read", "grafana"), ("admin", "")]
    assert text not in token(db, "ls").stdout  # the text is shown once, never again
    assert token(db, "rm", made["id"]).stdout.strip() == f"revoked {made['id']}"
    assert "no token with id" in error_line(token(db, "rm", made["id"], code=1))
    assert len(json.loads(token(db, "ls", "--json").stdout)) == 1
    token(db, "add", "--scope", "root", code=2)
    token(db, "add", code=2)


@pytest.mark.slow
def test_run_serves_the_api_and_a_token_closes_it(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with Node(db, "--http", "127.0.0.1:0", cwd=tmp_path) as node:
        node.wait_for("HTTP API on http://127.0.0.1:")
        (url,) = re.findall(r"HTTP API on (http://127\.0\.0\.1:\d+)", node.log)
        assert "open to loopback clients" in node.log
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        new = {"task": "bash", "at": "2100-01-01T00:00:00Z", "params": {"cmd": "true"}}
        made = httpx.post(f"{url}/api/instances", json=new)
        assert made.status_code == 201, made.text
        text = token(db, "add", "--scope", "read").stdout.strip()
        # a token stored from another process closes the open API within seconds
        assert until(lambda: httpx.get(f"{url}/api/instances").status_code == 401)
        ok = httpx.get(f"{url}/api/instances", headers={"Authorization": f"Bearer {text}"})
        assert ok.status_code == 200
        assert node.stop(signal.SIGINT) == 0


def test_run_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    out = tw(db, "run", "--http", "0.0.0.0:0", code=2, cwd=tmp_path)
    assert "refusing to serve the HTTP API on 0.0.0.0 without a token" in error_line(out)
    assert "started" not in out.stderr  # refused before the node started
    tw(db, "run", "--http", "nonsense:port", code=2, cwd=tmp_path)
    # a digit to str.isdigit() that int() refuses: a usage error, not a traceback
    out = tw(db, "run", "--http", "127.0.0.1:\u00b2", code=2, cwd=tmp_path)
    assert "is not HOST:PORT" in error_line(out)
