"""The SQLite node lock is on the database file itself, not on a name of it.

Two nodes on one file run every job twice, and two WAL files for one database (a hard
link, a bind mount: SQLite names the WAL after the path it was given) corrupt it. So a
second node is refused however it names the file: a symlink, a hard link, a relative
path, a bind mount. The lock dies with its process (kill -9), and clients (the CLI) still
share the file with the running node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tickwork
from tests.support.lock_holder import LOCK_HOLDER
from tickwork.errors import StoreLocked
from tickwork.model import NewRow
from tickwork.stores import SQLiteStore

NOW = 1_900_000_000_000_000
_ENV = dict(os.environ, PYTHONPATH=str(Path(tickwork.__file__).parents[1]))


async def opened(path: str | Path, node_id: str | None = "node-1") -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open(node_id=node_id)
    return store


async def refused(path: str | Path) -> None:
    with pytest.raises(StoreLocked, match="already used by a running tickwork node"):
        await opened(path, "node-2")


async def test_a_symlink_is_the_same_database(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    node = await opened(real)
    try:
        link.symlink_to(real)
        await refused(link)
    finally:
        await node.aclose()
    # and the other way round
    node = await opened(link)
    try:
        await refused(real)
    finally:
        await node.aclose()


async def test_a_hard_link_is_the_same_database(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    node = await opened(real)
    try:
        (tmp_path / "other").mkdir()
        hard = tmp_path / "other" / "hard.db"
        os.link(real, hard)
        await refused(hard)
    finally:
        await node.aclose()


async def test_a_relative_and_an_absolute_path_are_the_same_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "dir-link").symlink_to(tmp_path / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "sub")
    node = await opened("tickwork.db")
    try:
        await refused(tmp_path / "sub" / "tickwork.db")
        await refused(tmp_path / "dir-link" / "tickwork.db")
        await refused("../dir-link/./tickwork.db")
    finally:
        await node.aclose()


def _can_bind_mount() -> str | None:
    """Why a bind mount cannot be made here (None if it can): it needs ``unshare`` and
    unprivileged user namespaces (a private mount namespace, no root on the host)."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return "no unshare(1): bind mounts need a Linux user namespace"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare -rm is not permitted here: {probe.stderr.strip()}"
    return None


_OPEN_AS_NODE = """
import sys, trio
from tickwork.errors import StoreLocked
from tickwork.stores import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    try:
        await store.open(node_id="via-bind-mount")
    except StoreLocked as exc:
        print("locked:", exc)
        return
    await store.aclose()
    print("opened")

trio.run(main)
"""


async def test_a_bind_mount_is_the_same_database(tmp_path: Path) -> None:
    why = _can_bind_mount()
    if why is not None:
        pytest.skip(why)
    real = tmp_path / "real.db"
    (tmp_path / "mnt").mkdir()
    target = tmp_path / "mnt" / "mounted.db"
    target.touch()  # a file bind mount needs a file to mount over
    node = await opened(real)
    try:
        # In a private mount namespace, mount the database file over another name and
        # open that name as a node. The mount is gone when the command exits.
        script = 'mount --bind "$1" "$2" && exec "$3" -c "$4" "$2"'
        done = subprocess.run(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                script,
                "sh",
                real,
                target,
                sys.executable,
                _OPEN_AS_NODE,
            ],
            capture_output=True,
            text=True,
            env=_ENV,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("locked:"), done.stdout + done.stderr
    finally:
        await node.aclose()


async def test_clients_through_any_name_work_while_a_node_runs(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    node = await opened(real)
    try:
        client = await opened(link, node_id=None)
        try:
            [iid] = await client.insert([NewRow(task="t", run_at_us=NOW, params=b"")], NOW)
        finally:
            await client.aclose()
        assert await node.get(iid) is not None
    finally:
        await node.aclose()
    again = await opened(link, "node-3")  # the lock went with aclose
    await again.aclose()


async def test_kill_9_releases_the_lock_on_every_name(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(link)], stdout=subprocess.PIPE, text=True, env=_ENV
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked, match=rf"pid {proc.pid}, node doomed"):
            await opened(real)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    store = await opened(real)
    await store.aclose()


def _descriptors_of(path: Path) -> int:
    """How many open descriptors of this process name ``path`` (Linux)."""
    fds = Path("/proc/self/fd")
    n = 0
    for fd in fds.iterdir():
        try:
            n += fd.readlink() == path.resolve()
        except OSError:
            continue
    return n


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
async def test_closing_the_lock_never_drops_another_connections_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it, SQLite's
    included: the lock's descriptor stays open (parked) while a connection of this
    process is open on the file, and is closed with the last one."""
    db = tmp_path / "tickwork.db"
    client = await opened(db, node_id=None)
    with_client = _descriptors_of(db)
    node = await opened(db)
    await node.aclose()
    assert _descriptors_of(db) == with_client + 1  # the node's lock descriptor, parked
    again = await opened(db, "node-2")  # a parked descriptor is locked again
    assert _descriptors_of(db) == with_client + 2  # + the node's connection
    await again.aclose()
    await client.aclose()
    assert _descriptors_of(db) == 0
