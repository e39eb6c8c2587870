"""Running under systemd: the notification protocol and the unit in deploy/.

The protocol is tested against a real AF_UNIX datagram socket bound by the test as
``NOTIFY_SOCKET`` (a path, and an abstract name), in process on the virtual clock and
with a real ``tickwork run`` that starts, feeds the watchdog and stops.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.cli import Node
from tickwork.cli._sd_notify import ServiceNotifier

DEPLOY = Path(__file__).parent.parent / "deploy"
TICKWORK = Path(sys.executable).parent / "tickwork"


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket and the ``NOTIFY_SOCKET`` value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify")
        assert len(path) < 100  # sun_path's limit
        sock.bind(path)
        name = path
    else:
        name = f"@tickwork-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    with sock:
        yield name, sock


def received(sock: socket.socket, timeout: float) -> tuple[float, str]:
    """The next message, with when it arrived (monotonic)."""
    sock.settimeout(timeout)
    data = sock.recv(4096)
    return time.monotonic(), data.decode()


def drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages


# -- the environment --------------------------------------------------------------------


def test_environment_is_read_and_removed() -> None:
    env = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1", "X": "1"}
    notifier = ServiceNotifier.from_environment(env)
    assert notifier.address == "/run/n"
    assert notifier.watchdog_interval is None  # WATCHDOG_PID names another process
    assert env == {"X": "1"}  # the node's children do not inherit them

    env = {"NOTIFY_SOCKET": "@sys", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = ServiceNotifier.from_environment(env)
    assert notifier.address == "\0sys"
    assert notifier.watchdog_interval == 15.0

    assert ServiceNotifier.from_environment({"WATCHDOG_USEC": "1000"}).enabled is False
    assert ServiceNotifier.from_environment({"NOTIFY_SOCKET": "vsock:2:3"}).enabled is False
    bad = ServiceNotifier.from_environment({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"})
    assert bad.watchdog_interval is None


async def test_nothing_is_sent_without_a_socket() -> None:
    notifier = ServiceNotifier.from_environment({})
    notifier.notify("READY=1")
    with trio.fail_after(1):
        await notifier.feed_watchdog()  # returns at once: no watchdog asked


async def test_watchdog_is_fed_at_half_the_interval(
    notify_socket: tuple[str, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    name, sock = notify_socket
    notifier = ServiceNotifier.from_environment({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
    notifier.notify("READY=1", "STATUS=running")
    with trio.move_on_after(7.5):
        await notifier.feed_watchdog()
    messages = drain(sock)
    assert messages == ["READY=1\nSTATUS=running"] + ["WATCHDOG=1"] * 8  # at 0, 1, ... 7 s


async def test_a_full_queue_drops_messages_and_never_spins(
    notify_socket: tuple[str, socket.socket],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service manager that does not read: the feed goes on (no busy wait, no block)."""
    name, sock = notify_socket
    notifier = ServiceNotifier.from_environment({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
    # Virtual time also runs at 1000x real time: a busy loop (one that never sleeps, so
    # never lets the clock jump) still meets the deadline, within 0.2 s of real time.
    autojump_clock.rate = 1000
    with trio.fail_after(200):
        with trio.move_on_after(0.75):
            await notifier.feed_watchdog()
        assert drain(sock) == ["WATCHDOG=1"]
        with trio.move_on_after(100):
            await notifier.feed_watchdog()
    queued = drain(sock)
    assert 1 < len(queued) < 100  # the kernel's queue limit (net.unix.max_dgram_qlen)
    warnings = [r for r in caplog.records if "cannot notify the service manager" in r.message]
    assert len(warnings) == 1


async def test_a_failed_send_does_not_stop_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ServiceNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.notify("READY=1")
    notifier.notify("WATCHDOG=1")
    warnings = [r for r in caplog.records if "cannot notify the service manager" in r.message]
    assert len(warnings) == 1  # said once, not at every feed


# -- a real node ------------------------------------------------------------------------

HANG = """
import time
import tickwork

class Hang(tickwork.Task):
    name = "hang"
    async def run(self, params: bytes) -> object:
        time.sleep(2.0)  # blocks the node's event loop, as a buggy task would
        return None
"""


def node_env(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env |= {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"}  # fed every 0.1 s
    return env


def test_node_notifies_ready_watchdog_and_stopping(
    notify_socket: tuple[str, socket.socket], tmp_path: Path
) -> None:
    name, sock = notify_socket
    db = tmp_path / "t.db"
    with Node(db, "--shutdown-grace", "3s", cwd=tmp_path, env=node_env(name)) as node:
        # the watchdog is fed from the start; READY=1 comes once the node runs
        while (message := received(sock, 20)[1]) == "WATCHDOG=1":
            pass
        assert re.fullmatch(r"READY=1\nSTATUS=node \S+ running", message), message
        # READY=1 follows the start of every actor: the node said so before sending it.
        node.wait_for("started on", timeout=1)
        feeds = [received(sock, 2) for _ in range(5)]
        assert {m for _, m in feeds} == {"WATCHDOG=1"}
        node.proc.send_signal(signal.SIGTERM)
        while (message := received(sock, 10)[1]) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1\nSTATUS=stopping: running instances get 3s to finish"
        assert node.proc.wait(timeout=10) == 0


def test_a_hung_event_loop_stops_feeding_the_watchdog(tmp_path: Path) -> None:
    (tmp_path / "hangtask.py").write_text(HANG)
    sock_path = tmp_path / "n"
    db = tmp_path / "t.db"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        env = node_env(str(sock_path)) | {"PYTHONPATH": str(tmp_path)}
        with Node(db, "--tasks", "hangtask:Hang", cwd=tmp_path, env=env) as node:
            while not received(sock, 10)[1].startswith("READY=1"):
                pass
            subprocess.run(
                [str(TICKWORK), "add", "--db", str(db), "--task", "hang", "--in", "0s"],
                check=True,
                capture_output=True,
                timeout=20,
            )
            arrivals = [received(sock, 10)[0] for _ in range(40)]
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            assert max(gaps) > 1.5, gaps  # nothing while the loop was blocked for 2 s
            assert sorted(gaps)[len(gaps) // 2] < 0.5, gaps  # every 0.1 s otherwise
            assert node.stop(signal.SIGTERM) == 0


# -- the unit ---------------------------------------------------------------------------


def service_settings() -> dict[str, list[str]]:
    """The unit's [Service] settings, every value of a key repeated (as Environment=)."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in (DEPLOY / "tickwork.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "ms": 0.001}
    match = re.fullmatch(r"(\d+)(s|min|ms)", value)
    assert match, value
    return int(match[1]) * units[match[2]]


def test_unit_settings() -> None:
    service = {key: values[-1] for key, values in service_settings().items()}
    assert service["Type"] == "notify"
    assert service["User"] == "tickwork"
    assert seconds(service["WatchdogSec"]) >= 10
    # above the default --shutdown-grace (30 s), with room to record and give back
    assert seconds(service["TimeoutStopSec"]) >= 30 + 30
    assert service["KillMode"] == "mixed"
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes"):
        key, value = setting.split("=")
        assert service[key] == value
    env = dict(v.split("=", 1) for v in service_settings()["Environment"])
    assert str(Path(env["TICKWORK_DB"]).parent) in service["ReadWritePaths"].split()


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, with ExecStart pointing at this environment's tickwork."""
    text = (DEPLOY / "tickwork.service").read_text()
    assert "/opt/tickwork/bin/tickwork" in text
    path = tmp_path / "tickwork.service"
    path.write_text(text.replace("/opt/tickwork/bin/tickwork", str(TICKWORK)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 after a warning about the file: any line naming it is a failure
    assert proc.returncode == 0, proc.stderr
    assert str(path) not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
