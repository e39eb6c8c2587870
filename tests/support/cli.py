"""Driving the ``tickwork`` command line as a user does: one subprocess per command.

``tw`` runs a command and checks its exit status and that no traceback reached the user;
``Node`` is ``tickwork run`` in the background with its stderr collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Self

import psutil

if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from pathlib import Path


def tw(
    db: Path | None,
    *args: str,
    code: int = 0,
    cwd: Path | None = None,
    before: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``tickwork [before] CMD --db DB ARGS`` and check its exit status."""
    argv = [sys.executable, "-m", "tickwork", *before, *args[:1]]
    if db is not None:
        argv += ["--db", str(db)]
    argv += args[1:]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=cwd, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error: ...`` line a failed command printed."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def tw_cmd(*args: str, db: Path | None = None, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``tickwork CMD [--db DB] ARGS`` and check its exit status; ``--db`` goes right
    after the command's name (``cron SUB`` for the cron commands), before any ``--``."""
    argv = [sys.executable, "-m", "tickwork", *args]
    if db is not None:  # right after the command's name, before any `--`
        at = 4 + (args[0] == "cron")
        argv[at:at] = ["--db", str(db)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def show(db: Path, iid: int) -> dict[str, object]:
    return json.loads(tw(db, "show", str(iid), "--json").stdout)  # type: ignore[no-any-return]


def concurrently(calls: list[Callable[[], None]]) -> None:
    """Run independent checks a few at a time; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda call: call(), calls))


class Node:
    """``tickwork run`` in the background, its stderr collected line by line.

    Use it as a context manager: leaving the block kills the node if it still runs.
    """

    def __init__(
        self,
        db: Path | None,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        argv = [sys.executable, "-m", "tickwork", "run"]
        argv += ["--db", str(db)] if db is not None else []
        self.proc = subprocess.Popen(
            [*argv, *args],
            cwd=cwd,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=new_session,  # a process group of its own, to signal whole
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 8.0) -> None:
        """Wait until the node logged ``text``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, self.log
            assert time.monotonic() < deadline, self.log
            time.sleep(0.05)

    def wait_running(self, cmd: str, timeout: float = 8.0) -> None:
        """Wait until the node runs the bash command ``cmd`` (a child process)."""
        deadline = time.monotonic() + timeout
        node = psutil.Process(self.proc.pid)
        while not any(cmd in " ".join(argv) for argv in _cmdlines(node)):
            assert time.monotonic() < deadline, self.log
            time.sleep(0.05)

    def stop(self, sig: signal.Signals, timeout: float = 10.0) -> int:
        """Send ``sig`` and return the exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    @property
    def log(self) -> str:
        return "".join(self.lines)


def _cmdlines(proc: psutil.Process) -> list[list[str]]:
    """The command lines of ``proc``'s descendants (skipping any that just ended)."""
    lines = []
    for child in proc.children(recursive=True):
        try:
            lines.append(child.cmdline())
        except psutil.Error:
            continue
    return lines


def wait_state(db: Path, iid: int, states: set[str], timeout: float = 8.0) -> dict[str, object]:
    """Poll ``show --json`` until the instance is in one of ``states`` (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = show(db, iid)
        if doc["state"] in states or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)
