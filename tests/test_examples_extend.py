"""The extension examples in examples/ run (on a virtual clock) and do what they say."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from tickwork.testing import VirtualClock

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _main(name: str) -> Any:
    return runpy.run_path(str(EXAMPLES / name))["main"]


async def test_middleware_example(autojump_clock, capsys):
    metrics = await _main("middleware.py")(VirtualClock())
    out = capsys.readouterr().out
    assert "span start node-a/1.1 task=report\n  report for 2030-01-01 (trace node-a/1.1)\n" in out
    assert "span end   node-a/2.1" in out
    assert "instance 1: SUCCEEDED\n" in out
    assert "instance 2: FAILED ValueError: no data for 'bad'\n" in out
    assert "outcomes: [(('report', 'error'), 1), (('report', 'ok'), 1)]; busy 0.5 s" in out
    assert metrics.busy_us == 500_000


async def test_plugin_example(autojump_clock, capsys):
    await _main("plugin.py")(VirtualClock())
    assert capsys.readouterr().out == (
        "synced s3\n"
        "paging on-call: instance 2 failed\n"
        "instance 1 (sync): SUCCEEDED\n"
        "instance 2 (sync): FAILED\n"
        "instance 3 (page): SUCCEEDED\n"
    )
