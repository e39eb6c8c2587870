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


async def test_remote_pool_example(autojump_clock, capsys):
    await _main("remote_pool.py")(VirtualClock())
    lines = capsys.readouterr().out.splitlines()
    # runs of one instant reach the pool in any order; each line is there once
    assert sorted(lines) == [
        "instance 1: SUCCEEDED after 1 attempt(s)",
        "instance 2: SUCCEEDED after 2 attempt(s)",
        "instance 3: ABORTED after 1 attempt(s)",
        "instance 4: SUCCEEDED after 1 attempt(s)",
        "node: report ran in the node",
        "pool: job (1, 1) resize received",
        "pool: job (2, 1) resize received",
        "pool: job (2, 2) resize received",
        "pool: job (3, 1) cancelled",
        "pool: job (3, 1) resize received",
    ]
    assert lines[-4:] == [
        "instance 1: SUCCEEDED after 1 attempt(s)",
        "instance 2: SUCCEEDED after 2 attempt(s)",
        "instance 3: ABORTED after 1 attempt(s)",
        "instance 4: SUCCEEDED after 1 attempt(s)",
    ]
    assert lines.index("pool: job (3, 1) resize received") < lines.index(
        "pool: job (3, 1) cancelled"
    )


async def test_store_wrapper_example(autojump_clock, capsys):
    from tests.support.protocol_check import STORE_METHODS

    store = await _main("store_wrapper.py")(VirtualClock())
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["hello 0", "hello 1", "hello 2"]
    assert out[3].startswith("inserts: 1; outcomes written in ")
    assert store.calls["insert"] == 1
    assert 1 <= store.calls["finish"] <= 3
    assert store.calls["claim"] >= 1
    assert set(store.calls) <= set(STORE_METHODS)  # every call went through _call
