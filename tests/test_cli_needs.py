"""The command line's everyday needs: --version, ls upcoming/history/--schedule, local
times and --utc, add --cwd/--env, --params @file, shell completion; and their refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING

import tickwork
from tests.support.cli import Node, concurrently, error_line, tw

if TYPE_CHECKING:
    from pathlib import Path


def run_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tickwork", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=20,
        check=True,
    )
    assert "Traceback" not in proc.stderr
    return proc.stdout


def ids(db: Path, *args: str) -> list[int]:
    return [i["id"] for i in json.loads(tw(db, "ls", *args, "--json").stdout)]


def test_version_is_the_package_version() -> None:
    assert tw(None, "--version").stdout == f"tickwork {tickwork.__version__}\n"


def test_ls_lists_history_by_default_and_upcoming_apart(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    # yearly: its occurrence stays upcoming however long the test takes (a per-minute one
    # became overdue, so history, when a minute turned during the test)
    tw(None, "cron", "add", "--db", str(db), "0 0 1 1 *", "--id", "every", "--", "echo", "hi")
    later = int(tw(db, "add", "--in", "1h", "--", "true").stdout)  # 2, upcoming
    overdue = int(tw(db, "add", "--at", "2020-01-01T00:00:00Z", "--", "true").stdout)  # 3
    cancelled = int(tw(db, "add", "--in", "2h", "--", "true").stdout)  # 4
    tw(db, "abort", str(cancelled))  # ABORTED with a future run_at: history, not upcoming
    assert ids(db) == [cancelled, overdue]
    assert ids(db, "--upcoming") == [later, 1]
    assert ids(db, "--all") == [cancelled, overdue, later, 1]
    assert ids(db, "--upcoming", "--schedule", "every") == [1]
    assert ids(db, "--all", "--schedule", "every") == [1]
    assert ids(db, "--schedule", "every") == []
    assert ids(db, "--upcoming", "--state", "aborted") == []
    assert ids(db, "--upcoming", "--limit", "1") == [later]
    assert ids(db, "--upcoming", "--before-id", str(later)) == [1]
    empty = tw(db, "ls", "--schedule", "nope").stdout.strip()
    assert empty == "no instances in the history (--upcoming lists what is still to come)"
    assert tw(db, "ls", "--upcoming", "--task", "nope").stdout.strip() == "no upcoming instances"


def test_times_are_local_unless_utc(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tw(db, "add", "--at", "2030-01-01T09:00:00+01:00", "--", "true")
    tokyo = {"TZ": "Asia/Tokyo"}
    local = run_cli("ls", "--db", str(db), "--all", env=tokyo)
    assert "2030-01-01 17:00:00 JST" in local
    assert "2030-01-01T08:00:00Z" in run_cli("ls", "--db", str(db), "--all", "--utc", env=tokyo)
    assert "2030-01-01T08:00:00Z" in run_cli("--utc", "ls", "--db", str(db), "--all", env=tokyo)
    assert "2030-01-01 17:00:00 JST" in run_cli("stats", "--db", str(db), env=tokyo)
    doc = json.loads(run_cli("ls", "--db", str(db), "--all", "--json", env=tokyo))
    assert doc[0]["run_at"] == "2030-01-01T08:00:00+00:00"  # JSON stays UTC


def test_add_bash_runs_in_the_callers_directory_with_cwd_and_env(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    here = tmp_path / "work"
    here.mkdir()
    first = run_cli("add", "--db", str(db), "--in", "1h", "--", "make", env={}, cwd=here)
    assert tw(db, "show", first.strip(), "--json").stdout.count(str(here)) == 1
    params = json.loads(tw(db, "show", first.strip(), "--json").stdout)["params"]
    assert params == {"cmd": "make", "cwd": str(here)}
    other = tmp_path / "other"
    other.mkdir()
    doc = json.loads(
        tw(
            db,
            "add",
            "--in",
            "1h",
            "--cwd",
            str(other),
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--env",
            "EMPTY=",
            "--params",
            '{"env": {"C": "3"}}',
            "--json",
            "--",
            "make",
        ).stdout
    )
    assert doc["params"] == {
        "cmd": "make",
        "cwd": str(other),
        "env": {"C": "3", "A": "1", "B": "x=y", "EMPTY": ""},
    }
    relative = json.loads(
        run_cli(
            "add",
            "--db",
            str(db),
            "--in",
            "1h",
            "--cwd",
            "sub",
            "--json",
            "--",
            "ls",
            env={},
            cwd=here,
        )
    )
    assert relative["params"]["cwd"] == str(here / "sub")
    own = json.loads(
        tw(db, "add", "--in", "1h", "--params", '{"cmd": "x", "cwd": "/srv"}', "--json").stdout
    )
    assert own["params"] == {"cmd": "x", "cwd": "/srv"}


async def test_cwd_and_env_reach_the_command(tmp_path: Path) -> None:
    params = json.loads(
        tw(
            tmp_path / "t.db",
            "add",
            "--in",
            "0",
            "--cwd",
            str(tmp_path),
            "--env",
            "WHO=me",
            "--json",
            "--",
            "bash",
            "-c",
            'echo "$WHO in $PWD"',
        ).stdout
    )["params"]
    packed = tickwork.BashTask.params(params["cmd"], cwd=params["cwd"], env=params["env"])
    result = await tickwork.BashTask().run(packed)
    assert result.stdout == f"me in {tmp_path}\n"


def test_params_from_a_file(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    (tmp_path / "p.json").write_text('{"name": "bob", "n": [1, 2]}')
    doc = json.loads(
        tw(
            db,
            "add",
            "--task",
            "greet",
            "--in",
            "1h",
            "--params",
            f"@{tmp_path / 'p.json'}",
            "--json",
        ).stdout
    )
    assert doc["params"] == {"name": "bob", "n": [1, 2]}
    relative = json.loads(
        tw(
            db,
            "add",
            "--task",
            "greet",
            "--in",
            "1h",
            "--params",
            "@p.json",
            "--json",
            cwd=tmp_path,
        ).stdout
    )
    assert relative["params"] == {"name": "bob", "n": [1, 2]}


ADD_REFUSALS = [
    (("--params", "@missing.json"), "'--params': cannot read missing.json: No such file"),
    (("--params", "@bad.json"), "'--params': bad.json is not valid JSON"),
    (("--params", "@"), "'--params': @ must be followed by a file name"),
    (("--env", "NOEQUALS", "--", "true"), "'--env': expected NAME=VALUE, got 'NOEQUALS'"),
    (("--env", "=x", "--", "true"), "'--env': expected NAME=VALUE, got '=x'"),
    (("--env", "A=1", "--env", "A=2", "--", "true"), "environment variable A is given twice"),
    (
        ("--env", "A=1", "--params", '{"cmd": "x", "env": {"A": "0"}}'),
        "environment variable A is given twice",
    ),
    (
        ("--cwd", "/srv", "--params", '{"cmd": "x", "cwd": "/srv"}'),
        "give the directory either with --cwd or as cwd in --params",
    ),
    (("--task", "greet", "--cwd", "/srv"), "--cwd and --env are for the bash task"),
    (("--task", "greet", "--env", "A=1"), "--cwd and --env are for the bash task"),
    (("--env", "A=\x01", "--params", '{"cmd": "x", "env": 3}'), "bash 'env' must be a map"),
]


def test_add_refusals(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{bad")

    def check(n: int, args: tuple[str, ...], message: str) -> None:
        db = tmp_path / f"{n}.db"
        proc = tw(db, "add", "--in", "1h", *args, code=2, cwd=tmp_path)
        assert message in error_line(proc), (args, proc.stderr)
        assert not db.exists()  # nothing was written

    concurrently([partial(check, n, *case) for n, case in enumerate(ADD_REFUSALS)])


def test_ls_refusals(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tw(db, "add", "--in", "1h", "--", "true")
    both = tw(db, "ls", "--upcoming", "--utc", "--limit", "0", code=2)
    assert "Invalid value for '--limit'" in both.stderr


def test_shell_completion_completes_commands() -> None:
    env = {"_TICKWORK_COMPLETE": "bash_source"}
    script = run_cli(env=env)
    assert "_tickwork_completion" in script
    words = {"COMP_WORDS": "tickwork lo", "COMP_CWORD": "1", "_TICKWORK_COMPLETE": "bash_complete"}
    assert run_cli(env=words).split() == ["plain,logs"]


def test_status_on_sqlite_with_and_without_a_node(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    missing = tw(tmp_path / "none.db", "status", code=1)
    assert "no tickwork database at" in error_line(missing)
    tw(db, "add", "--in", "1h", "--", "true")
    idle = tw(db, "status", code=3)
    assert "none running (start one: tickwork run)" in idle.stdout
    assert "1 pending" in idle.stdout
    doc = json.loads(tw(db, "status", "--json", code=3).stdout)
    assert (doc["running"], doc["nodes"], doc["held"], doc["total"]) == (False, [], 0, 1)
    with Node(db, "--http", "off", cwd=tmp_path) as node:
        node.wait_for("started on")
        busy = json.loads(tw(db, "status", "--json").stdout)
        assert busy["running"] is True
        [info] = busy["nodes"]
        assert info["pid"] == node.proc.pid
        assert info["state"] == "alive"
        assert busy["held"] == 1  # the node claimed the instance due within its window
        text = tw(db, "status", "--utc").stdout
        assert "node:      1 running" in text
        assert str(node.proc.pid) in text
    assert tw(db, "status", code=3).returncode == 3  # the node stopped


def test_status_on_postgresql_lists_the_live_nodes(tmp_path: Path) -> None:
    from tests.support.pg_support import drop_schema, fresh_schema, require_pg

    dsn, schema = require_pg(), fresh_schema()
    uri = f"{dsn}?schema={schema}"
    try:
        with Node(None, "--db", uri, "--http", "off", cwd=tmp_path) as node:
            node.wait_for("started on")
            doc = json.loads(run_cli("status", "--db", uri, "--json", env={}))
            [info] = doc["nodes"]
            assert (info["state"], info["pid"]) == ("alive", node.proc.pid)
            assert doc["running"] is True
            assert doc["db_size_bytes"] is None
    finally:
        drop_schema(dsn, schema)
