"""Reading commands (ls, show, stats, cron ls) open the database read-only and never write.

A database on read-only media is read as it is, where it used to be reported as "not a
SQLite database"; ``run`` and the writing commands say the file is read-only. A missing,
empty or foreign file is refused alike by every reading command, and left as it was (``ls``
used to turn an empty file into a tickwork database).

Read-only media are made for real: a read-only bind mount in a private mount namespace
(``unshare -rm``, no root needed on the host). File modes would not do: the tests may run
as root, whom they do not stop.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path


def tw(*args: str, code: int = 0, ro_mount: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``tickwork ARGS``; with ``ro_mount``, inside a namespace where that directory
    is mounted read-only over itself."""
    argv = [sys.executable, "-m", "tickwork", *args]
    if ro_mount is not None:
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        argv = ["unshare", "-rm", "sh", "-c", script, "sh", str(ro_mount), *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _ro_mounts_unavailable() -> str | None:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return "no unshare(1): read-only bind mounts need a Linux user namespace"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount --bind / /mnt 2>/dev/null || mount -t tmpfs x /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"mounts in a user namespace are not permitted here: {probe.stderr.strip()}"
    return None


def test_a_database_on_a_read_only_mount_is_read_as_it_is(tmp_path: Path) -> None:
    why = _ro_mounts_unavailable()
    if why is not None:
        pytest.skip(why)
    media = tmp_path / "media"
    media.mkdir()
    db = media / "t.db"
    iid = tw("add", "--db", str(db), "--in", "1h", "--", "echo", "hi").stdout.strip()
    tw("cron", "add", "--db", str(db), "0 3 * * *", "--", "backup")
    before = db.read_bytes()

    listed = json.loads(tw("ls", "--all", "--db", str(db), "--json", ro_mount=media).stdout)
    assert sorted(str(i["id"]) for i in listed) == [iid, str(int(iid) + 1)]  # + the cron's
    shown = json.loads(tw("show", iid, "--db", str(db), "--json", ro_mount=media).stdout)
    assert shown["params"]["cmd"] == "echo hi"
    stats = json.loads(tw("stats", "--db", str(db), "--json", ro_mount=media).stdout)
    assert stats["counts"]["PENDING"] == 2
    crons = json.loads(tw("cron", "ls", "--db", str(db), "--json", ro_mount=media).stdout)
    assert len(crons) == 1

    # a node writes to its database: it says so, in one line, exit 1 (a runtime error)
    line = error_line(tw("run", "--db", str(db), code=1, ro_mount=media))
    assert "read-only" in line, line
    line = error_line(tw("add", "--db", str(db), "--in", "1h", "--", "x", code=1, ro_mount=media))
    assert "read-only" in line, line
    assert db.read_bytes() == before


@pytest.mark.parametrize("command", [["ls"], ["show", "1"], ["stats"], ["cron", "ls"]])
def test_reading_commands_refuse_missing_empty_and_foreign_files_alike(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "missing.db"
    line = error_line(tw(*command, "--db", str(missing), code=1))
    assert f"no tickwork database at {missing}" in line, line
    assert not missing.exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    line = error_line(tw(*command, "--db", str(empty), code=1))
    assert "empty" in line, line
    assert "not a tickwork database" in line, line
    assert empty.stat().st_size == 0  # not turned into a database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # no -wal, no -shm

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE mine (x)")
    size = foreign.stat().st_size
    line = error_line(tw(*command, "--db", str(foreign), code=1))
    assert "another application" in line, line
    assert foreign.stat().st_size == size
    empty.unlink()
    foreign.unlink()
