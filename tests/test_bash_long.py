"""A bash command longer than the OS allows for one argument (128 KiB on Linux) runs.

Such a command used to be accepted and then fail every run with "Argument list too
long": it now goes to bash on a pipe instead of as an argument, and behaves as one
given with ``-c`` (its stdin is empty, ``$0`` is bash, no positional parameters).
"""

from __future__ import annotations

import pytest
import trio

from tickwork.model import RunOutput
from tickwork.tasks import BashFailed, BashTask
from tickwork.tasks.bash import MAX_ARGUMENT_CMD


def _long(body: str, size: int) -> str:
    """``body`` preceded by a comment that makes the command ``size`` bytes long."""
    pad = size - len(body) - 3
    return "# " + "x" * pad + "\n" + body


async def run(cmd: str) -> RunOutput:
    with trio.fail_after(10):
        return await BashTask().run(BashTask.params(cmd))


async def test_a_command_over_128_kib_runs() -> None:
    value = "y" * (200 * 1024)
    cmd = _long(f'v={value}\necho "${{#v}} $0 $#"\nread -r line || echo "stdin empty"', 300 * 1024)
    assert len(cmd.encode()) > 128 * 1024
    result = await run(cmd)
    assert result.exit_code == 0
    short = await run('echo "$0 $#"')
    assert result.stdout == f"{len(value)} {short.stdout}stdin empty\n"


async def test_a_long_command_fails_like_a_short_one() -> None:
    cmd = _long("echo out; echo err >&2; exit 3", 2 * MAX_ARGUMENT_CMD)
    with pytest.raises(BashFailed) as info:
        await run(cmd)
    assert info.value.exit_code == 3
    assert info.value.stdout == "out\n"
    assert info.value.stderr == "err\n"


async def test_the_boundary_between_argument_and_pipe() -> None:
    short = await run('echo "$0 $#"; cat')
    for size in (MAX_ARGUMENT_CMD, MAX_ARGUMENT_CMD + 1):
        assert await run(_long('echo "$0 $#"; cat', size)) == short
