"""``tickwork cron ...``: driven as a user drives it, one subprocess per command.

Every call checks that no traceback reaches the user; errors are one ``error:`` line,
exit status 2 for a usage error and 1 for a runtime one. The crontab parser is tested
directly, without a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.cli import error_line
from tests.support.cli import tw_cmd as tw
from tickwork.cli._crontab import parse_crontab

if TYPE_CHECKING:
    from pathlib import Path


def ls(db: Path) -> list[dict[str, Any]]:
    return json.loads(tw("cron", "ls", "--json", db=db).stdout)  # type: ignore[no-any-return]


def test_add_ls_pause_resume_rm(tmp_path: Path) -> None:
    db = tmp_path / "cron.db"
    added = tw(
        "cron", "add", "30 2 * * *", "--tz", "Europe/Berlin", "--", "echo", "hi there", db=db
    )
    assert added.stdout.startswith("created sched-")
    again = tw(
        "cron", "add", "30 2 * * *", "--tz", "Europe/Berlin", "--", "echo", "hi there", db=db
    )
    assert again.stdout.startswith("unchanged sched-")
    tw(
        "cron", "add", "*/5 * * * *", "--id", "poll", "--misfire", "skip", "--overlap", "queue",
        "--grace", "30s", "--", "poll.sh", "--quiet", db=db,
    )  # fmt: skip
    [nightly, poll] = sorted(ls(db), key=lambda d: d["id"] == "poll")
    assert poll["id"] == "poll"
    assert (poll["misfire"], poll["overlap"], poll["grace_seconds"]) == ("skip", "queue", 30.0)
    assert poll["params"] == {"cmd": "poll.sh --quiet"}
    assert nightly["params"] == {"cmd": "echo 'hi there'"}
    assert nightly["trigger"] == {"kind": "cron", "expr": "30 2 * * *", "timezone": "Europe/Berlin"}
    # the next fire time, in the schedule's zone and in UTC: the same instant
    local, utc = nightly["next_fire_local"], nightly["next_fire_at"]
    assert local[11:16] in {"02:30", "03:00"}  # 03:00 on the spring-forward day
    from datetime import datetime

    assert datetime.fromisoformat(local) == datetime.fromisoformat(utc)
    text = tw("cron", "ls", db=db).stdout
    assert "NEXT (ZONE)" in text
    assert "NEXT (UTC)" in text
    assert "Europe/Berlin" in text
    # its next occurrence is an instance
    instances = json.loads(tw("ls", "--all", "--json", db=db).stdout)
    assert {i["task"] for i in instances} == {"bash"}
    assert len(instances) == 2
    assert tw("cron", "pause", "poll", db=db).stdout.strip() == "paused poll"
    assert [d["state"] for d in ls(db) if d["id"] == "poll"] == ["paused"]
    assert tw("cron", "resume", "poll", db=db).stdout.strip() == "resumed poll"
    assert tw("cron", "rm", "poll", db=db).stdout.strip() == "removed poll"
    assert [d["id"] for d in ls(db)] == [nightly["id"]]
    assert "no schedule with id 'poll'" in error_line(tw("cron", "rm", "poll", db=db, code=1))
    conflict = tw("cron", "add", "0 3 * * *", "--id", nightly["id"], "--", "x", db=db, code=1)
    assert "--replace" in error_line(conflict)
    replaced = tw("cron", "add", "0 3 * * *", "--id", nightly["id"], "--replace", "--", "x", db=db)
    assert replaced.stdout.startswith("replaced ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("61 * * * *", "--", "x"), "minute field '61' out of range 0-59"),
        (("* * * * *", "--tz", "Mars/Base", "--", "x"), "unknown time zone 'Mars/Base'"),
        (("@reboot", "--", "x"), "unknown shortcut '@reboot'"),
        (("* * * * *",), "the bash task needs a command"),
        (("* * * * *", "--misfire", "later", "--", "x"), "'later' is not one of"),
        (("* * * * *", "--overlap", "maybe", "--", "x"), "'maybe' is not one of"),
        (("* * * * *", "--catchup-limit", "0", "--", "x"), "--catchup-limit"),
        (("* * * * *", "--grace", "soon", "--", "x"), "invalid duration 'soon'"),
        (("* * * * *", "--id", "a b", "--", "x"), "schedule_id must be"),
        (
            ("* * * * *", "--start", "2030-01-02T00:00Z", "--end", "2030-01-01T00:00Z", "--", "x"),
            "end_at",
        ),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = tw("cron", "add", *args, db=tmp_path / "bad.db", code=2)
    assert message in error_line(proc)
    assert not (tmp_path / "bad.db").exists()


def test_next_prints_local_and_utc_times() -> None:
    proc = tw(
        "cron", "next", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "2026-03-27T12:00Z",
        "-n", "3",
    )  # fmt: skip
    assert proc.stdout.splitlines() == [
        "2026-03-28 02:30:00 CET (+01:00)  2026-03-28T01:30:00Z",
        "2026-03-29 03:00:00 CEST (+02:00)  2026-03-29T01:00:00Z",
        "2026-03-30 02:30:00 CEST (+02:00)  2026-03-30T00:30:00Z",
    ]
    doc = json.loads(
        tw("cron", "next", "30 1 * * *", "--tz", "America/New_York", "--after",
           "2026-10-31T12:00Z", "-n", "2", "--json").stdout
    )  # fmt: skip
    assert [d["local"] for d in doc] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert "minute field" in error_line(tw("cron", "next", "99 * * * *", code=2))


CRONTAB = """\
# m h dom mon dow command
SHELL=/bin/bash
MAILTO=ops@example.com
CRON_TZ=Europe/Berlin
 PATH = /usr/bin:/bin

*/15 * * * *   /usr/local/bin/poll --quiet
30 2 * * * /usr/local/bin/backup > /var/log/backup.log 2>&1
@daily  find /tmp -mtime +7 -delete
0 0 1 * * date +\\%Y-\\%m
"""


def test_crontab_parser() -> None:
    entries, warnings, errors = parse_crontab(CRONTAB, "tab")
    assert errors == []
    assert [(e.line, e.expr, e.command) for e in entries] == [
        (7, "*/15 * * * *", "/usr/local/bin/poll --quiet"),
        (8, "30 2 * * *", "/usr/local/bin/backup > /var/log/backup.log 2>&1"),
        (9, "@daily", "find /tmp -mtime +7 -delete"),
        (10, "0 0 1 * *", "date +%Y-%m"),
    ]
    # environment lines are kept for the lines after them; only MAILTO= is reported
    assert [w.split(":")[1] for w in warnings] == ["3"]
    assert "MAILTO= ignored" in warnings[0]
    assert {e.zone for e in entries} == {"Europe/Berlin"}
    assert {tuple(e.env.items()) for e in entries} == {
        (("SHELL", "/bin/bash"), ("PATH", "/usr/bin:/bin"))
    }
    ids = [e.schedule_id for e in entries]
    assert len(set(ids)) == 4
    assert ids == [e.schedule_id for e in parse_crontab(CRONTAB, "other")[0]]  # stable
    # spacing does not change the id; the command does
    [spaced] = parse_crontab("*/15  *  * * *   /usr/local/bin/poll --quiet")[0]
    assert spaced.schedule_id == ids[0]
    [other] = parse_crontab("*/15 * * * * /usr/local/bin/poll")[0]
    assert other.schedule_id != ids[0]


def test_crontab_parser_refuses_what_it_cannot_import() -> None:
    text = "@reboot /usr/bin/start\n* * * * *\n61 * * * * x\n@weekly\n0 9 * * * echo 50%\n"
    entries, warnings, errors = parse_crontab(text, "tab")
    assert len(errors) == 4
    assert errors[0].startswith("tab:1: @reboot is not supported")
    assert errors[1].startswith("tab:2: expected 5 time fields and a command")
    assert "minute field '61'" in errors[2]
    assert errors[3].startswith("tab:4: no command")
    assert [e.command for e in entries] == ["echo 50%"]
    assert warnings == [
        (
            "tab:5: '%' is passed to bash as it is (cron would end the command there and "
            "send the rest as its input)"
        )
    ]


def test_import_twice_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tab.db"
    tab = tmp_path / "crontab"
    tab.write_text(CRONTAB)
    first = tw("cron", "import", str(tab), "--tz", "Europe/Berlin", db=db)
    assert first.stdout.splitlines()[-1] == f"4 schedules from {tab}: 4 created"
    assert first.stderr.count("warning: ") == 1
    assert "MAILTO" in first.stderr
    before = ls(db)
    assert {d["trigger"]["timezone"] for d in before} == {"Europe/Berlin"}
    second = tw("cron", "import", str(tab), "--tz", "Europe/Berlin", db=db)
    assert second.stdout.splitlines()[-1] == f"4 schedules from {tab}: 4 unchanged"
    after = ls(db)
    assert [d["id"] for d in after] == [d["id"] for d in before]
    assert len(json.loads(tw("ls", "--all", "--json", db=db).stdout)) == 4


def test_import_refuses_reboot_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "reboot.db"
    tab = tmp_path / "crontab"
    tab.write_text("0 * * * * hourly.sh\n@reboot /usr/bin/start-daemon\n")
    proc = tw("cron", "import", str(tab), db=db, code=1)
    line = error_line(proc)
    assert "nothing was" in line
    assert "@reboot is not supported" in line
    assert not db.exists() or ls(db) == []


@pytest.mark.slow
def test_a_running_node_fires_a_schedule_added_from_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    out = tmp_path / "out.txt"
    argv = [sys.executable, "-m", "tickwork", "run", "--db", str(db)]
    node = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 10
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        cmd = f"echo tick >> {out}"
        tw("cron", "add", "* * * * * *", "--id", "every-second", "--params",
           json.dumps({"cmd": cmd}), db=db)  # fmt: skip
        while (not out.exists() or len(out.read_text().splitlines()) < 2) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert len(out.read_text().splitlines()) >= 2
        tw("cron", "rm", "every-second", db=db)
        time.sleep(1)
        count = len(out.read_text().splitlines())
        time.sleep(1.2)
        assert len(out.read_text().splitlines()) == count  # nothing fires after rm
    finally:
        node.terminate()
        _, err = node.communicate(timeout=15)
    assert "Traceback" not in err, err
    runs = json.loads(tw("ls", "--all", "--json", "--limit", "10000", db=db).stdout)
    assert {i["state"] for i in runs if i["fire_at"] is not None} == {"SUCCEEDED"}
    # what was not run when the schedule was removed is detached from it: ABORTED at once
    # if pending, or by whichever node holds it when it comes due
    detached = [i for i in runs if i["fire_at"] is None]
    assert {i["error"] for i in detached} == {"schedule removed before this occurrence ran"}
    assert [line for line in err.splitlines() if "ERROR" in line] == []


@pytest.mark.parametrize(
    "args",
    [
        ("cron", "--log-level", "DEBUG", "next", "@daily", "-n", "1"),
        ("cron", "next", "@daily", "-n", "1", "--log-level", "debug", "--log-format", "json"),
        ("--log-level", "ERROR", "cron", "next", "@daily", "-n", "1"),
    ],
)
def test_cron_commands_take_the_log_options(args: tuple[str, ...]) -> None:
    assert len(tw(*args).stdout.splitlines()) == 1


@pytest.mark.parametrize("sub", ["add", "ls", "pause", "resume", "rm", "run-now", "next", "import"])
def test_every_cron_command_lists_the_log_options(sub: str) -> None:
    assert "--log-level" in tw("cron", sub, "--help").stdout


@pytest.mark.parametrize(
    "expr",
    [
        "¹ * * * *",  # a superscript one: str.isdigit() says yes, int() says no
        "1-¹ * * * *",
        "0 0 L-¹ * *",
        "\u0661 * * * *",  # an Arabic-Indic one
        "ß * * * *",  # upper-cased to 'SS', which the user never wrote
        "1\u2003* * * *",  # an em space between fields
    ],
)
def test_non_ascii_in_an_expression_is_refused(expr: str) -> None:
    line = error_line(tw("cron", "next", expr, code=2))
    assert "non-ASCII character" in line
