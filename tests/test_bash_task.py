"""BashTask against real processes: output tails, failures, timeouts, cancellation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.bash_pids import SPAWN, assert_gone, gone, wait_for_pids
from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.model import RunOutput, pack
from tickwork.task import TaskRegistry
from tickwork.tasks import BashFailed, BashTask
from tickwork.tasks._bash_process import Tail
from tickwork.tasks.bash import BashTimeout


class QuickBash(BashTask):
    """Short grace so the SIGTERM-ignoring test stays fast."""

    kill_grace = 0.3


async def run(cmd: str, *, tail_bytes: int | None = None, **kwargs: Any) -> RunOutput:
    with trio.fail_after(4):
        return await BashTask(tail_bytes=tail_bytes).run(BashTask.params(cmd, **kwargs))


def test_registers_under_the_name_bash():
    assert TaskRegistry([BashTask()]).require("bash").name == "bash"


async def test_success_returns_exit_code_and_both_outputs():
    result = await run("echo hello; echo oops >&2")
    assert result == RunOutput(stdout="hello\n", stderr="oops\n", exit_code=0)


async def test_stdin_is_empty_so_a_reader_does_not_hang():
    assert (await run("cat")).stdout == ""


async def test_nonzero_exit_is_bash_failed_with_tails():
    with pytest.raises(BashFailed) as info:
        await run("echo out; echo err >&2; exit 3")
    exc = info.value
    assert isinstance(exc, TickworkError)
    assert (exc.exit_code, exc.stdout, exc.stderr, exc.signal) == (3, "out\n", "err\n", None)
    assert "exited with code 3" in str(exc)
    assert "'err\\n'" in str(exc)
    assert "'out\\n'" in str(exc)
    clone = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert (clone.exit_code, str(clone)) == (3, str(exc))


async def test_bash_failed_carries_the_output_for_the_history():
    with pytest.raises(BashFailed) as info:
        await run("echo out; echo err >&2; exit 3")
    assert info.value.output == RunOutput(stdout="out\n", stderr="err\n", exit_code=3)


async def test_default_tails_keep_at_least_64_kib_of_each_stream():
    assert BashTask().tail_bytes >= 65536
    result = await run(
        "head -c 70000 /dev/zero | tr '\\0' o; head -c 66000 /dev/zero | tr '\\0' e >&2"
    )
    assert result.stdout == "o" * 65536
    assert result.stderr == "e" * 65536


async def test_tail_size_is_configurable_per_task():
    result = await run("echo 0123456789; echo abcdefghij >&2", tail_bytes=4)
    assert (result.stdout, result.stderr) == ("789\n", "hij\n")
    assert (await run("echo hi", tail_bytes=0)).stdout == ""


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_tail_size_must_be_a_non_negative_integer(bad):
    with pytest.raises(InvalidArgument, match="tail_bytes must be a non-negative integer"):
        BashTask(tail_bytes=bad)


async def test_undecodable_output_is_replaced_not_refused():
    result = await run(r"printf 'ok \xff\xfe done'")
    assert result.stdout == "ok \ufffd\ufffd done"


async def test_killed_by_a_signal_names_it():
    with pytest.raises(BashFailed, match="killed by SIGKILL") as info:
        await run("kill -KILL $$")
    assert info.value.exit_code == -9
    assert info.value.signal == "SIGKILL"


async def test_child_killed_by_signal_is_explained():
    # Not the last command, so bash forks it and reports 128+N.
    with pytest.raises(BashFailed, match=r"code 143 \(128\+15: likely killed by SIGTERM\)"):
        await run("sh -c 'kill -TERM $$'; exit $?")


async def test_huge_output_on_both_streams_keeps_bounded_tails():
    # stderr is written first and far past a pipe's buffer: reading stdout alone first
    # would deadlock, so finishing proves the streams are read concurrently.
    cmd = (
        "head -c 10000000 /dev/zero | tr '\\0' e >&2; echo -n ERR-END >&2; "
        "head -c 10000000 /dev/zero | tr '\\0' o; echo -n OUT-END"
    )
    result = await run(cmd)
    limit = BashTask.tail_bytes
    assert result.stdout == "o" * (limit - 7) + "OUT-END"
    assert result.stderr == "e" * (limit - 7) + "ERR-END"


async def test_tail_memory_stays_bounded():
    class Endless(trio.abc.ReceiveStream):
        def __init__(self) -> None:
            self.left = 200  # 200 x 64 KiB = 12.5 MiB

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            self.left -= 1
            return b"x" * 65536 if self.left >= 0 else b""

        async def aclose(self) -> None:
            pass

    tail = Tail(100)
    await tail.drain(Endless())
    assert len(tail._buf) <= 200
    assert tail.text() == "x" * 100
    assert tail.eof.is_set()


async def test_truncated_tail_does_not_start_inside_a_character():
    # 2-byte characters; an odd cut would otherwise begin with a replacement character.
    result = await run("for i in $(seq 3000); do printf 'é'; done; printf x", tail_bytes=4095)
    assert result.stdout.endswith("éx")
    assert "\ufffd" not in result.stdout
    assert 4000 < len(result.stdout.encode()) <= 4095


async def test_env_is_merged_into_the_node_environment_and_cwd_is_used(tmp_path):
    result = await run('echo "$GREETING"; echo "$PATH"; pwd', env={"GREETING": "hi"}, cwd=tmp_path)
    greeting, path, cwd = result.stdout.splitlines()
    assert greeting == "hi"
    assert path == os.environ["PATH"]
    assert Path(cwd).resolve() == tmp_path.resolve()


async def test_missing_cwd_is_refused_at_run_time(tmp_path):
    with pytest.raises(InvalidArgument, match=r"'cwd'.*cannot be used on this node"):
        await run("true", cwd=tmp_path / "missing")


async def test_timeout_kills_the_whole_group(tmp_path):
    with trio.fail_after(3), pytest.raises(TaskTimeout) as info:
        await BashTask().run(BashTask.params(SPAWN, timeout=0.5, cwd=tmp_path))
    assert "timed out after 0.5 s" in str(info.value)
    assert "started" in str(info.value)  # the stderr tail
    assert isinstance(info.value, BashTimeout)
    assert info.value.output.exit_code is None
    assert "started" in info.value.output.stderr
    bash_pid, child_pid = await wait_for_pids(tmp_path)
    assert gone(bash_pid)
    await assert_gone(child_pid)


async def test_sigterm_ignored_gets_sigkill_after_the_grace(tmp_path):
    # An ignored SIGTERM is inherited by the background child too.
    params = BashTask.params("trap '' TERM; " + SPAWN, timeout=0.3, cwd=tmp_path)
    start = trio.current_time()
    with trio.fail_after(3), pytest.raises(TaskTimeout):
        await QuickBash().run(params)
    assert trio.current_time() - start >= 0.3 + QuickBash.kill_grace
    bash_pid, child_pid = await wait_for_pids(tmp_path)
    assert gone(bash_pid)
    await assert_gone(child_pid)


async def test_cancel_kills_the_whole_group_and_propagates(tmp_path):
    outcome: list[object] = []

    async def runner() -> None:
        try:
            outcome.append(await BashTask().run(BashTask.params(SPAWN, cwd=tmp_path)))
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner)
            bash_pid, child_pid = await wait_for_pids(tmp_path)
            assert not gone(child_pid)
            nursery.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    # bash was killed and reaped before the cancellation finished propagating.
    assert gone(bash_pid)
    await assert_gone(child_pid)


async def test_background_job_left_behind_is_stopped_when_the_command_exits(tmp_path):
    # The child holds stdout open: without stopping it the run would never see EOF.
    cmd = "sleep 1000 & echo $! > child.pid; echo done"
    result = await run(cmd, cwd=tmp_path)
    assert result.stdout == "done\n"
    await assert_gone(int((tmp_path / "child.pid").read_text()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cmd": ""}, "'cmd' must be a non-empty string"),
        ({"cmd": "   "}, "'cmd' must be a non-empty string"),
        ({"cmd": 42}, "'cmd' must be a non-empty string"),
        ({"cmd": "echo \0"}, "'cmd' must not contain NUL"),
        ({"cmd": "true", "timeout": 0}, "'timeout' must be a positive"),
        ({"cmd": "true", "timeout": -1}, "'timeout' must be a positive"),
        ({"cmd": "true", "timeout": float("nan")}, "'timeout' must be a positive"),
        ({"cmd": "true", "timeout": float("inf")}, "'timeout' must be a positive"),
        ({"cmd": "true", "timeout": True}, "'timeout' must be a positive"),
        ({"cmd": "true", "timeout": "5"}, "'timeout' must be a positive"),
        ({"cmd": "true", "env": ["A=1"]}, "'env' must be a map of str to str"),
        ({"cmd": "true", "env": {"A": 1}}, "'env' value of 'A' must be a string"),
        ({"cmd": "true", "env": {"A=B": "1"}}, "'env' names must be non-empty strings"),
        ({"cmd": "true", "env": {"": "1"}}, "'env' names must be non-empty strings"),
        ({"cmd": "true", "cwd": 3}, "'cwd' must be a non-empty path string"),
        ({"cmd": "true", "cwd": ""}, "'cwd' must be a non-empty path string"),
    ],
)
async def test_bad_params_are_refused_when_built_and_when_run(kwargs, message):
    cmd = kwargs.pop("cmd")
    with pytest.raises(InvalidArgument, match=message):
        BashTask.params(cmd, **kwargs)
    with pytest.raises(InvalidArgument, match=message):
        await BashTask().run(pack({"cmd": cmd, **kwargs}))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (b"\xc1", "not msgpack"),
        (pack(["echo hi"]), "must be a map"),
        (pack({}), "need 'cmd'"),
        (pack({"cmd": "true", "time_out": 5}), r"unknown keys \['time_out'\]"),
    ],
)
async def test_malformed_params_fail_at_run_time(params, message):
    with pytest.raises(InvalidArgument, match=message):
        await BashTask().run(params)


def test_params_round_trip_leaves_out_what_is_unset():
    from tickwork.model import unpack

    assert unpack(BashTask.params("true")) == {"cmd": "true"}
    assert unpack(BashTask.params("true", timeout=2, env={"A": "b"}, cwd="/srv")) == {
        "cmd": "true",
        "timeout": 2.0,
        "env": {"A": "b"},
        "cwd": "/srv",
    }
