"""``tickwork run`` and its stop signals, with a real process, a real SQLite file and a
real bash run in flight.

* A graceful stop longer than the lease keeps renewing the lease of the run it lets
  finish (the Leases actor stops last), and records its outcome.
* One shutdown request delivered twice (SIGTERM to the process group, twice, as
  ``timeout`` or a service manager may) is one request: the run completes.
* A deliberate second request (the other signal, or the same one after the window)
  still stops at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from tests.support import cli
from tests.support.cli import show, tw
from tickwork.cli._signals import DUPLICATE_WINDOW_S, ShutdownRequests, Verdict
from tickwork.state import State

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


class Node(cli.Node):
    """``tickwork run`` in a session (process group) of its own, stderr collected."""

    def __init__(self, db: Path, *args: str, cwd: Path) -> None:
        super().__init__(db, *args, cwd=cwd, new_session=True)

    def signal_group(self, sig: signal.Signals) -> None:
        """``sig`` to the node's whole process group (its bash runs are in sessions of
        their own, as the bash task starts them)."""
        os.killpg(self.proc.pid, sig)


def _lease_until(db: Path, iid: int) -> tuple[int, int | None]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        state, lease = conn.execute(
            "SELECT state, lease_until FROM instances WHERE id = ?", (iid,)
        ).fetchone()
    return int(state), lease


def _attempts(doc: dict[str, object]) -> list[str]:
    history = doc["history"]
    assert isinstance(history, list)
    return [str(a["state"]) for a in history]


def test_sigterm_with_a_run_in_flight_keeps_its_lease_and_records_it(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    args = ("--lease", "1s", "--shutdown-grace", "30s", "--log-level", "DEBUG")
    with Node(db, *args, cwd=tmp_path) as node:
        node.wait_for(f"started on {db}")
        iid = int(tw(db, "add", "--in", "0", "--", "sleep", "4").stdout)
        node.wait_running("sleep 4")
        node.signal_group(signal.SIGTERM)
        node.wait_for("shutting down")
        time.sleep(2.5)  # two and a half leases into the drain
        state, lease_until = _lease_until(db, iid)
        now_us = time.time_ns() // 1000
        assert state == State.RUNNING, node.log  # an at-least-once run in flight
        assert lease_until is not None
        assert lease_until > now_us, (lease_until - now_us, node.log)
        assert node.proc.wait(timeout=20) == 0, node.log
    doc = show(db, iid)
    assert doc["state"] == "SUCCEEDED", (doc, node.log)
    assert _attempts(doc) == ["SUCCEEDED"]
    assert "not recorded" not in node.log
    # the run and the stop are in the log (DEBUG: every run; INFO: the node's life)
    assert f"instance {iid} (task 'bash'): started" in node.log
    assert f"instance {iid} (task 'bash'): SUCCEEDED after" in node.log
    assert "stopped (outcomes recorded: SUCCEEDED 1; 0 claims given back)" in node.log


def test_one_sigterm_delivered_twice_to_the_group_is_one_request(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with Node(db, "--shutdown-grace", "30s", "--log-format", "json", cwd=tmp_path) as node:
        node.wait_for("started on")
        iid = int(tw(db, "add", "--in", "0", "--", "sleep", "2").stdout)
        node.wait_running("sleep 2")
        node.signal_group(signal.SIGTERM)
        node.wait_for("shutting down")  # the first one was read: the next is not merged
        node.signal_group(signal.SIGTERM)
        assert node.proc.wait(timeout=20) == 0, node.log
    messages = [json.loads(line)["message"] for line in node.lines]
    assert any("the same shutdown request" in m for m in messages), messages
    assert not any("stopping at once" in m for m in messages), messages
    assert any("stopped (outcomes recorded: SUCCEEDED 1;" in m for m in messages), messages
    doc = show(db, iid)
    assert doc["state"] == "SUCCEEDED", (doc, node.log)
    assert _attempts(doc) == ["SUCCEEDED"]


def test_the_other_signal_is_a_deliberate_second_request(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with Node(db, "--shutdown-grace", "60s", cwd=tmp_path) as node:
        node.wait_for("started on")
        iid = int(tw(db, "add", "--in", "0", "--", "sleep", "60").stdout)
        node.wait_running("sleep 60")
        node.proc.send_signal(signal.SIGTERM)
        node.wait_for("shutting down")
        stopping = time.monotonic()
        node.proc.send_signal(signal.SIGINT)  # within the window, but not the same one
        assert node.proc.wait(timeout=10) == 130, node.log
        assert time.monotonic() - stopping < 5
    assert "stopping at once" in node.log
    assert show(db, iid)["state"] == "PENDING"  # given back, nothing lost


# -- the rule itself ------------------------------------------------------------------------


def test_the_rule_tells_duplicates_from_deliberate_requests() -> None:
    term, intr = signal.SIGTERM, signal.SIGINT
    requests = ShutdownRequests()
    assert requests.receive(term, 100.0) is Verdict.STOP
    assert requests.receive(term, 100.0) is Verdict.DUPLICATE
    assert requests.receive(term, 100.0 + DUPLICATE_WINDOW_S - 0.01) is Verdict.DUPLICATE
    assert requests.receive(term, 100.0 + DUPLICATE_WINDOW_S) is Verdict.HURRY
    # the other signal is deliberate, however soon
    requests = ShutdownRequests()
    assert requests.receive(intr, 5.0) is Verdict.STOP
    assert requests.receive(term, 5.0) is Verdict.HURRY
    # a second Ctrl-C after the window stops at once
    requests = ShutdownRequests()
    assert requests.receive(intr, 0.0) is Verdict.STOP
    assert requests.receive(intr, 0.5) is Verdict.DUPLICATE
    assert requests.receive(intr, 1.5) is Verdict.HURRY
