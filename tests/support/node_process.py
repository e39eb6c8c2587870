"""``tickwork run`` as a real process on a SQLite file, and what it left behind.

The node imports ``killtasks:TASKS`` from ``tmp_path`` (the test writes that module) and
its tasks append ``"<params> <pid>"`` lines to ``tmp_path / "runs"``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

CONCURRENCY = 8


def start_node(db: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "RUNS_FILE": str(tmp_path / "runs")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tickwork",
            "run",
            "--db",
            str(db),
            "--tasks",
            "killtasks:TASKS",
            "--max-concurrency",
            str(CONCURRENCY),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def runs(tmp_path: Path) -> Counter[int]:
    path = tmp_path / "runs"
    if not path.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in path.read_text().splitlines() if line)


def states(db: Path) -> Counter[int]:
    with sqlite3.connect(db) as conn:
        return Counter(dict(conn.execute("SELECT state, count(*) FROM instances GROUP BY state")))


def ended_params(db: Path, state: int) -> set[int]:
    """The params (as ints) of the instances in ``state``: which of the runs file's lines
    the store has recorded."""
    with sqlite3.connect(db) as conn:
        return {
            int(p)
            for (p,) in conn.execute("SELECT params FROM instances WHERE state = ?", (state,))
        }


def wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
