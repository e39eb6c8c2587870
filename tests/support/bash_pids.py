"""The process tree of a bash run: a command that leaves a grandchild behind, and checks
that every process of the tree is gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil
import trio

if TYPE_CHECKING:
    from pathlib import Path

# A command that leaves a background grandchild in its group and waits: the pids of
# both are written atomically (tmp + mv) so a poller never reads half a file.
SPAWN = (
    "sleep 1000 & echo $! > child.tmp && mv child.tmp child.pid; "
    "echo $$ > bash.tmp && mv bash.tmp bash.pid; echo started >&2; wait"
)


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie counts as gone: the pid 1 of a container
    may never reap orphans, and a zombie runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def assert_gone(pid: int) -> None:
    """``pid`` is gone within a moment: a killed process closes its pipes (which ends the
    run) a little before it has finished exiting."""
    with trio.fail_after(1):
        while not gone(pid):
            await trio.sleep(0.01)


async def wait_for_pids(directory: Path) -> tuple[int, int]:
    """(bash pid, grandchild pid) once the command has written both."""
    with trio.fail_after(3):
        while not (directory / "bash.pid").exists():
            await trio.sleep(0.01)
    return int((directory / "bash.pid").read_text()), int((directory / "child.pid").read_text())
