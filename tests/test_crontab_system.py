"""System crontabs (a user field), environment lines, and bash runs as another user.

The run-as-user path is tested for real: as root (as here and in CI) a command runs as
``nobody``; the refusal of a node that is not root is tested in a child process that
drops to ``nobody`` before it runs the task.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.strategies import cron_like
from tickwork import BashTask, pack, unpack
from tickwork.cli._crontab import MAILTO_WARNING, is_system_path, parse_crontab
from tickwork.errors import InvalidArgument

if TYPE_CHECKING:
    from pathlib import Path

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching users needs root (CI runs as root)")

SYSTEM = """\
# /etc/cron.d/example
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MAILTO=root
10 3 * * * root test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r
CRON_TZ=Europe/Berlin
GREETING = "hello there"
30 2 * * 0 nobody echo "$GREETING" > /dev/null
@daily   nobody   id -un
"""


def tw(*args: str, code: int = 0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tickwork", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        input=stdin,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def run(params: bytes) -> Any:
    return trio.run(BashTask().run, params)


# -- reading ----------------------------------------------------------------------------------


def test_a_system_crontab_keeps_user_zone_and_environment() -> None:
    entries, warnings, errors = parse_crontab(SYSTEM, "tab", system=True)
    assert errors == []
    assert warnings == [f"tab:4: MAILTO= ignored: {MAILTO_WARNING}"]
    assert [(e.line, e.expr, e.user) for e in entries] == [
        (5, "10 3 * * *", "root"),
        (8, "30 2 * * 0", "nobody"),
        (9, "@daily", "nobody"),
    ]
    first, second, third = entries
    assert first.command == "test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r"
    assert third.command == "id -un"
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # each line gets what was set before it, quotes taken off, nothing expanded
    assert first.env == {"SHELL": "/bin/sh", "PATH": path}
    assert second.env == {"SHELL": "/bin/sh", "PATH": path, "GREETING": "hello there"}
    assert (first.zone, second.zone, third.zone) == (None, "Europe/Berlin", "Europe/Berlin")
    assert unpack(second.params) == {"cmd": second.command, "env": second.env, "user": "nobody"}
    # the user is part of the schedule's id: one command for two users is two schedules
    [as_root] = parse_crontab("0 * * * * root true", system=True)[0]
    [as_nobody] = parse_crontab("0 * * * * nobody true", system=True)[0]
    assert as_root.schedule_id != as_nobody.schedule_id


def test_tz_sets_the_zone_and_the_command_environment() -> None:
    entries, _, errors = parse_crontab("0 9 * * * a\nTZ=Asia/Tokyo\n0 9 * * * b\n")
    assert errors == []
    assert [(e.zone, e.env) for e in entries] == [(None, {}), ("Asia/Tokyo", {"TZ": "Asia/Tokyo"})]
    bad = parse_crontab("CRON_TZ=Mars/Base\n0 9 * * * b\n", "tab")[2]
    assert len(bad) == 1
    assert bad[0].startswith("tab:1: CRON_TZ=Mars/Base: unknown time zone")


def test_a_shell_other_than_bash_or_sh_is_reported() -> None:
    entries, warnings, _ = parse_crontab("SHELL=/usr/bin/zsh\n0 9 * * * b\n", "tab")
    assert warnings == [
        (
            "tab:1: SHELL=/usr/bin/zsh: commands run with /bin/bash (SHELL is only set in "
            "their environment)"
        )
    ]
    assert entries[0].env == {"SHELL": "/usr/bin/zsh"}


@pytest.mark.parametrize(
    ("line", "system", "piece"),
    [
        ("0 30 2 * * * 2026 cmd", False, "7 time-like fields"),
        ("*/10 * * * * * echo hi", False, "6 time-like fields"),
        ("*/10 * * * * * root echo hi", True, "6 time-like fields"),
        ("@daily 5 echo", False, "more than 1 time-like fields"),
        ("10 3 * * * root test -e /run", None, "this is a system crontab"),
        ("@daily root /bin/true", None, "this is a system crontab"),
        ("* * * * * echo hi", True, "'echo' is not a user name but a command"),
        ("* * * * * /usr/bin/backup --all", True, "is not a user name but a command"),
        ("* * * * * root", True, "no command after '* * * * *' root"),
        ("* * * *", False, "expected 5 time fields and a command"),
        ("* * * *", True, "expected 5 time fields, a user and a command"),
        ("@reboot root /bin/x", True, "@reboot is not supported"),
    ],
)
def test_lines_read_the_wrong_way_are_refused(line: str, system: bool | None, piece: str) -> None:
    entries, _, errors = parse_crontab(line, "tab", system=system)
    assert entries == []
    assert len(errors) == 1
    assert piece in errors[0], errors[0]


def test_detection_can_be_overruled_and_unknown_users_are_reported() -> None:
    # --no-system: the user says "root" is a command
    [entry] = parse_crontab("10 3 * * * root test -e /run", system=False)[0]
    assert entry.command == "root test -e /run"
    assert entry.user is None
    # a program that is also an account name reads as the command it is (sync: /bin/sync)
    if _account("sync"):
        assert parse_crontab("0 * * * * sync && echo done")[2] == []
    # a user that does not exist here may exist on the node: imported, with a warning
    entries, warnings, errors = parse_crontab("0 * * * * deploy-bot ./ship", "tab", system=True)
    assert errors == []
    assert entries[0].user == "deploy-bot"
    assert warnings == [
        (
            "tab:1: user 'deploy-bot' does not exist on this machine; its runs fail on any "
            "node where it does not exist either"
        )
    ]


def _account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_the_same_line_with_another_environment_is_refused() -> None:
    text = "0 * * * * backup\nPATH=/opt/bin\n0 * * * * backup\n"
    errors = parse_crontab(text, "tab")[2]
    assert errors == [
        (
            "tab:3: repeats line 1 with another time zone or environment; tickwork would "
            "make them one schedule"
        )
    ]
    assert parse_crontab("0 * * * * backup\n0 * * * * backup\n")[2] == []  # same definition


def test_system_paths() -> None:
    assert is_system_path("/etc/crontab")
    assert is_system_path("/etc/cron.d/e2scrub_all")
    assert not is_system_path("/etc/cron.daily/logrotate")  # a script, not a crontab
    assert not is_system_path("my.cron")
    assert not is_system_path("-")


# -- importing --------------------------------------------------------------------------------


def test_import_a_system_crontab(tmp_path: Path) -> None:
    db, tab = tmp_path / "sys.db", tmp_path / "e2scrub_all"
    tab.write_text(SYSTEM)
    refused = tw("cron", "import", str(tab), "--db", str(db), code=1)
    assert "import it with --system" in refused.stderr
    assert not db.exists()
    done = tw("cron", "import", str(tab), "--system", "--db", str(db))
    assert done.stdout.splitlines()[-1] == f"3 schedules from {tab}: 3 created"
    assert ": line 5: 10 3 * * * root test -e" in done.stdout
    schedules = json.loads(tw("cron", "ls", "--json", "--db", str(db)).stdout)
    by_expr = {d["trigger"]["expr"]: d for d in schedules}
    assert by_expr["10 3 * * *"]["params"]["user"] == "root"
    assert by_expr["10 3 * * *"]["trigger"]["timezone"] == "UTC"  # --tz, before CRON_TZ
    assert by_expr["30 2 * * 0"]["trigger"]["timezone"] == "Europe/Berlin"
    assert by_expr["30 2 * * 0"]["params"]["env"]["GREETING"] == "hello there"
    assert "(as nobody) id -un" in tw("cron", "ls", "--db", str(db)).stdout
    again = tw("cron", "import", str(tab), "--system", "--db", str(db))
    assert again.stdout.splitlines()[-1] == f"3 schedules from {tab}: 3 unchanged"
    # a user crontab imported as a system one is refused
    user_tab = tmp_path / "mine"
    user_tab.write_text("*/5 * * * * echo hi\n")
    wrong = tw("cron", "import", str(user_tab), "--system", "--db", str(db), code=1)
    assert "import it without --system" in wrong.stderr


def test_import_refuses_a_system_path_without_system(tmp_path: Path) -> None:
    found = sorted(glob.glob("/etc/cron.d/*")) + glob.glob("/etc/crontab")  # noqa: PTH207
    if not found:
        pytest.skip("no system crontab on this machine to read (is_system_path is tested)")
    proc = tw("cron", "import", found[0], "--db", str(tmp_path / "x.db"), code=2)
    assert f"{found[0]} is a system crontab" in proc.stderr
    assert "import it with --system" in proc.stderr


# -- running as the user ----------------------------------------------------------------------


@needs_root
def test_a_root_node_runs_the_command_as_the_user(tmp_path: Path) -> None:
    db, tab = tmp_path / "run.db", tmp_path / "cron.d-nobody"
    tab.write_text(
        'GREETING=hi from cron\n@daily nobody id -un; echo "$GREETING $HOME $USER"; pwd\n'
    )
    tw("cron", "import", str(tab), "--system", "--db", str(db))
    [schedule] = json.loads(tw("cron", "ls", "--json", "--db", str(db)).stdout)
    out = run(pack(schedule["params"]))  # the bytes a node's bash task receives
    home = pwd.getpwnam("nobody").pw_dir
    assert out.stdout.splitlines() == ["nobody", f"hi from cron {home} nobody", _cwd_of(home)]


def _cwd_of(home: str) -> str:
    return home if os.path.isdir(home) else "/"  # noqa: PTH112


@needs_root
def test_a_root_node_takes_the_users_groups_and_a_given_cwd(tmp_path: Path) -> None:
    out = run(BashTask.params("id -u; id -g; pwd", user="nobody", cwd=str(tmp_path)))
    account = pwd.getpwnam("nobody")
    assert out.stdout.splitlines() == [str(account.pw_uid), str(account.pw_gid), str(tmp_path)]


def test_an_unknown_user_fails_the_run() -> None:
    with pytest.raises(InvalidArgument, match="'no-such-user-h3' does not exist on this node"):
        run(BashTask.params("true", user="no-such-user-h3"))


_AS_NOBODY = textwrap.dedent(
    """
    import os, pwd, sys, trio
    from tickwork import BashTask
    from tickwork.errors import InvalidArgument
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:  # drop privileges for good before the task runs
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    os.chdir("/")
    assert os.geteuid() != 0
    me = pwd.getpwuid(os.geteuid()).pw_name
    own = trio.run(BashTask().run, BashTask.params("id -un", user=me))
    print(own.stdout.strip())
    try:
        trio.run(BashTask().run, BashTask.params("id -un", user="root"))
    except InvalidArgument as exc:
        print(exc)
    """
)


def test_a_node_that_is_not_root_refuses_another_user() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    me, refusal = proc.stdout.splitlines()
    if ROOT:
        assert me == "nobody"
    assert refusal == (
        f"bash 'user' 'root': this node runs as {me!r}, not root, so it cannot run commands "
        "as another user; run the node as root, or as 'root'"
    )


@pytest.mark.parametrize("user", ["", "a b", "-x", "a/b", "a:b", 7, "x\0"])
def test_a_user_that_no_account_can_have_is_refused(user: object) -> None:
    with pytest.raises(InvalidArgument, match="bash 'user' must be a user name"):
        BashTask.params("true", user=user)  # type: ignore[arg-type]


# -- fuzz: any text gives entries, warnings and one-line errors, never an exception -----------

FUZZ = settings(
    max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
_line = st.one_of(
    st.text(max_size=60),
    st.tuples(
        cron_like, st.sampled_from(["", "root ", "nobody ", "* ", "0 "]), st.text(max_size=20)
    ).map("".join),
    st.tuples(st.sampled_from(["CRON_TZ", "TZ", "PATH", "SHELL", "MAILTO", '"Q"', "''"]),
              st.sampled_from(["=", " = "]), st.text(max_size=20)).map("".join),
)  # fmt: skip


@FUZZ
@given(st.lists(_line, max_size=6).map("\n".join), st.sampled_from([None, True, False]))
def test_any_crontab_text_is_read_or_refused_line_by_line(text: str, system: bool | None) -> None:
    entries, warnings, errors = parse_crontab(text, "tab", system=system)
    for message in (*warnings, *errors):
        assert "\n" not in message
        assert message.startswith("tab:")
    for e in entries:
        assert unpack(e.params)["cmd"] == e.command
        assert (e.user is not None) == bool(system)
