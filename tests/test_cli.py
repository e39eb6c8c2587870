"""The ``tickwork`` command line, driven as a user drives it: one subprocess per command.

Every call checks that no traceback reaches the user. The node tests run ``tickwork run``
in real time on a temporary database and talk to it from other CLI processes, as an
operator would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from tests.support.cli import Node, concurrently, error_line, show, tw, wait_state

# -- add / ls / show / abort / stats ----------------------------------------------------


def test_add_list_show_abort_stats(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    bash_id = int(tw(db, "add", "--in", "1h", "--", "echo", "hi there").stdout)
    greet = tw(
        db,
        "add",
        "--task",
        "greet",
        "--at",
        "2030-01-01T09:00:00+01:00",
        "--params",
        '{"name": "bob", "n": [1, 2]}',
        "--dedup-key",
        "greet-bob",
        "--max-attempts",
        "3",
        "--timeout",
        "1m30s",
        "--json",
    )
    doc = json.loads(greet.stdout)
    greet_id = doc["id"]
    assert (bash_id, greet_id) == (1, 2)
    assert doc["created"] is True
    assert doc["run_at"] == "2030-01-01T08:00:00+00:00"
    assert doc["params"] == {"name": "bob", "n": [1, 2]}
    assert (doc["max_attempts"], doc["timeout"], doc["dedup_key"]) == (3, 90.0, "greet-bob")

    # The same dedup key adds nothing and answers with the existing id.
    again = tw(db, "add", "--task", "greet", "--in", "5m", "--dedup-key", "greet-bob")
    assert again.stdout.strip() == str(greet_id)
    assert "already exists" in again.stderr

    table = tw(db, "ls", "--upcoming", "--utc").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "TASK", "STATE"]
    assert [line.split()[:3] for line in table[1:]] == [
        [str(greet_id), "greet", "PENDING"],
        [str(bash_id), "bash", "PENDING"],
    ]
    assert "2030-01-01T08:00:00Z" in table[1]

    listed = json.loads(tw(db, "ls", "--upcoming", "--json").stdout)
    assert [i["id"] for i in listed] == [greet_id, bash_id]
    bash = listed[1]
    assert bash["params"] == {"cmd": "echo 'hi there'", "cwd": str(Path.cwd())}
    run_at = datetime.fromisoformat(bash["run_at"])
    assert abs(run_at - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=1)
    only = json.loads(
        tw(db, "ls", "--all", "--state", "pending", "--task", "greet", "--json").stdout
    )
    assert [i["id"] for i in only] == [greet_id]
    assert json.loads(tw(db, "ls", "--state", "FAILED", "--json").stdout) == []
    assert tw(db, "ls", "--state", "failed").stdout.strip() == "no instances"

    text = tw(db, "show", str(greet_id)).stdout
    assert "task:" in text
    assert "greet" in text
    assert '{"name": "bob", "n": [1, 2]}' in text
    assert "history: none" in text
    shown = show(db, greet_id)
    assert shown["state"] == "PENDING"
    assert shown["history"] == []


def test_abort_and_stats(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    bash_id = int(tw(db, "add", "--in", "1h", "--", "true").stdout)
    tw(db, "add", "--task", "greet", "--at", "2030-01-01T09:00:00+01:00")

    assert tw(db, "abort", str(bash_id)).stdout.strip() == f"aborted {bash_id}"
    assert "already ABORTED" in tw(db, "abort", str(bash_id)).stdout
    aborted = json.loads(tw(db, "abort", str(bash_id), "--json").stdout)
    assert aborted["state"] == "ABORTED"
    assert aborted["requested"] is False
    assert show(db, bash_id)["state"] == "ABORTED"

    stats = json.loads(tw(db, "stats", "--json").stdout)
    assert stats["total"] == 2
    assert stats["counts"]["PENDING"] == 1
    assert stats["counts"]["ABORTED"] == 1
    assert stats["next_pending_at"] == "2030-01-01T08:00:00+00:00"
    assert stats["db_size_bytes"] > 0
    text = tw(db, "stats", "--utc").stdout
    assert "instances: 2" in text
    assert "2030-01-01T08:00:00Z" in text
    assert any(line.split() == ["ABORTED", "1"] for line in text.splitlines())


def test_add_bash_params_and_db_from_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    env = {**os.environ, "TICKWORK_DB": str(db)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickwork",
            "add",
            "--in",
            "0",
            "--params",
            '{"timeout": 5, "env": {"A": "b"}}',
            "--",
            "ls",
            "-la",
            "a b",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
        check=True,
    )
    iid = int(proc.stdout)
    params = show(db, iid)["params"]
    here = str(Path.cwd())
    assert params == {"cmd": "ls -la 'a b'", "timeout": 5.0, "env": {"A": "b"}, "cwd": here}
    whole = tw(db, "add", "--in", "2d", "--params", '{"cmd": "a && b"}', "--json")
    assert json.loads(whole.stdout)["params"] == {"cmd": "a && b", "cwd": here}


# -- errors -----------------------------------------------------------------------------
#
# Each case is its own process; they run a few at a time to keep the file fast.

USAGE_ERRORS = [
    (("ls", "--state", "finished"), "unknown state 'finished'; choose from PENDING, CLAIMED"),
    (("add", "--in", "5x", "--", "true"), "invalid duration '5x': use forms like 30s, 5m"),
    (("add", "--in", "-5s", "--", "true"), "invalid duration '-5s'"),
    (("add", "--timeout", "0", "--in", "1s", "--", "true"), "longer than zero"),
    (
        ("add", "--at", "2026-12-01T09:00:00", "--", "true"),
        "has no time zone: add a UTC offset, e.g. 2026-12-01T09:00:00+01:00, or Z",
    ),
    (("add", "--at", "tomorrow", "--", "true"), "invalid time 'tomorrow'"),
    (("add", "--task", "greet", "--in", "1s", "--params", "{bad"), "'--params': not valid JSON"),
    (("add", "--in", "1s", "--params", '{"cmd": 1}'), "bash 'cmd' must be a non-empty string"),
    (("add", "--in", "1s", "--params", '{"x": 1}', "--", "true"), "unknown bash params ['x']"),
    (("add", "--in", "1s"), "the bash task needs a command: put it after -- or in --params"),
    (("add", "--", "true"), "give exactly one of --at TIME or --in DURATION"),
    (("add", "--task", "greet", "--in", "1s", "--", "true"), "words after -- are a bash command"),
    (("add", "--task", "no spaces", "--in", "1s"), "invalid task name 'no spaces'"),
    (("show", "abc"), "instance ids are positive integers up to 9223372036854775807, got 'abc'"),
    (("run", "--window", "soon"), "invalid duration 'soon'"),
    (("run", "--tasks", "nosuchmodule:x"), "'--tasks': cannot import module 'nosuchmodule'"),
    (("run", "--tasks", "nocolon"), "'nocolon' is not of the form module:attr"),
    (("run", "--tasks", "os:nosuch"), "module 'os' has no attribute 'nosuch'"),
    (("run", "--tasks", "os:sep"), "not a tickwork.Task instance, a Task subclass, or a list"),
]


def test_usage_errors(tmp_path: Path) -> None:
    def check(n: int, args: tuple[str, ...], message: str) -> None:
        db = tmp_path / f"{n}.db"
        line = error_line(tw(db, *args, code=2))
        assert message in line, (args, line)
        assert line.endswith(f"(see 'tickwork {args[0]} --help')"), line
        assert not db.exists()  # refused before anything was stored

    concurrently(
        [partial(check, n, args, message) for n, (args, message) in enumerate(USAGE_ERRORS)]
    )


def test_runtime_errors(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tw(db, "add", "--in", "1h", "--", "true")
    missing = tmp_path / "missing.db"
    not_db = tmp_path / "notes.txt"
    not_db.write_text("shopping list: eggs, milk\n" * 100)
    other_app = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other_app)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")

    def check(db: Path, args: tuple[str, ...], expected: str) -> None:
        line = error_line(tw(db, *args, code=1))
        assert expected in line, (args, line)

    no_db = (
        f"error: no tickwork database at {missing} (start a node with `tickwork run` "
        "or add an instance with `tickwork add`)"
    )
    cases = [
        *[(missing, cmd, no_db) for cmd in [("ls",), ("show", "1"), ("abort", "1"), ("stats",)]],
        (db, ("show", "42"), f"error: no instance with id 42 in {db}"),
        (db, ("abort", "42"), f"error: no instance with id 42 in {db}"),
        (not_db, ("ls",), f"error: {not_db} is not a SQLite database"),
        (not_db, ("add", "--in", "1s", "--", "true"), "is not a SQLite database"),
        (other_app, ("stats",), "is a SQLite database of another application (tables: notes)"),
        (tmp_path / "no" / "dir.db", ("add", "--in", "0", "--", "true"), "does not exist"),
    ]
    concurrently([partial(check, *case) for case in cases])
    assert not missing.exists()
    assert not_db.read_text().startswith("shopping list")


# -- a running node ---------------------------------------------------------------------

GREET = """
    import gc

    import tickwork

    class Greet(tickwork.Task):
        name = "greet"

        async def run(self, params: bytes) -> object:
            return "hello " + tickwork.unpack(params)["name"]

    class Frozen(tickwork.Task):
        # how many objects the node's process keeps out of the cyclic GC's passes
        name = "frozen"

        async def run(self, params: bytes) -> object:
            return gc.get_freeze_count()

    TASKS = [Greet, Frozen]
"""


def test_node_runs_what_another_process_adds(tmp_path: Path) -> None:
    (tmp_path / "mytasks.py").write_text(textwrap.dedent(GREET))
    db = tmp_path / "node.db"
    with Node(db, "--window", "1h", "--tasks", "mytasks:TASKS", cwd=tmp_path) as node:
        node.wait_for(f"started on {db}")
        (names,) = re.findall(r"\(tasks: (.*)\)", node.log)
        # the user's tasks beside bash and the built-in hand-off tasks
        assert {"bash", "frozen", "greet", "webhook"} <= set(names.split(", "))

        iid = int(tw(db, "add", "--in", "1s", "--", "echo", "hi").stdout)
        greet = tw(db, "add", "--task", "greet", "--in", "0", "--params", '{"name": "bob"}')
        doc = wait_state(db, iid, {"SUCCEEDED", "FAILED"})
        assert doc["state"] == "SUCCEEDED", (doc, node.log)
        (attempt,) = doc["history"]  # type: ignore[misc]
        assert attempt["state"] == "SUCCEEDED"
        assert (attempt["stdout"], attempt["exit_code"], attempt["result"]) == ("hi\n", 0, None)
        doc = wait_state(db, int(greet.stdout), {"SUCCEEDED", "FAILED"})
        assert doc["state"] == "SUCCEEDED", (doc, node.log)
        assert "hello bob" in tw(db, "show", greet.stdout.strip()).stdout

        # The node froze what it had loaded before starting (modules, tasks): the GC's
        # full passes, which stop the node, do not scan it.
        frozen = int(tw(db, "add", "--task", "frozen", "--in", "0").stdout)
        doc = wait_state(db, frozen, {"SUCCEEDED", "FAILED"})
        (attempt,) = doc["history"]  # type: ignore[misc]
        assert int(attempt["result"]) > 10_000, doc

        # A second node on the same database is refused while the first one runs.
        second = tw(db, "run", code=1, cwd=tmp_path)
        assert "is already used by a running tickwork node" in error_line(second)

        # An instance the node holds is aborted by that node, which polls for requests.
        sleeper = int(tw(db, "add", "--in", "0", "--", "sleep", "30").stdout)
        node.wait_running("sleep 30")
        requested = tw(db, "abort", str(sleeper)).stdout
        assert requested.startswith("abort requested; node ")
        assert wait_state(db, sleeper, {"ABORTED"})["state"] == "ABORTED"

        assert node.stop(signal.SIGTERM) == 0, node.log
    assert "shutting down" in node.log
    assert "Traceback" not in node.log

    # The database is free again: a new node starts on it and stops on SIGINT.
    with Node(db, cwd=tmp_path) as again:
        again.wait_for("started on")
        assert again.stop(signal.SIGINT) == 0, again.log


def test_second_interrupt_stops_at_once(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with Node(db, "--log-format", "json", cwd=tmp_path) as node:
        node.wait_for("started on")
        iid = int(tw(db, "add", "--in", "0", "--", "sleep", "30").stdout)
        node.wait_running("sleep 30")
        node.proc.send_signal(signal.SIGINT)
        node.wait_for("shutting down")  # and waiting for the run: 30 s of grace
        time.sleep(1.2)  # past the window in which the same signal is the same request
        started = time.monotonic()
        assert node.stop(signal.SIGINT) == 130, node.log
        assert time.monotonic() - started < 5
    records = [json.loads(line) for line in node.lines]
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    assert any("stopping at once" in r["message"] for r in records)
    # Nothing durable was lost: the interrupted run is given back for the next node.
    assert show(db, iid)["state"] == "PENDING"
