"""BashTask: run a shell command in its own process group, keeping bounded output tails.

The command runs as ``/bin/bash -c CMD`` in a new session, so it and everything it
starts share one process group that the task owns. Whatever way the run ends (the
command exits, its ``timeout`` passes, or the run is cancelled by an abort or the
executor's timeout), the task signals that whole group, SIGTERM then SIGKILL after
``kill_grace`` seconds, and reaps the command: a run never leaves processes behind.
A command that wants to leave a daemon running must detach it from the group itself
(``setsid``) and redirect its output.

stdout and stderr are read at the same time (reading one after the other deadlocks as
soon as the other pipe fills) and only the last ``tail_bytes`` of each are kept, so a
command that prints gigabytes runs in bounded memory.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs
import trio

from tickwork.errors import InvalidArgument, TaskTimeout, TickworkError
from tickwork.model import RunOutput, pack, unpack
from tickwork.task import Task
from tickwork.tasks._bash_process import (
    Tail,
    describe_exit,
    feed,
    read_both,
    signal_group,
    signal_name,
    tails_text,
)
from tickwork.tasks._bash_user import check_user, run_as

__all__ = ["BashFailed", "BashTask", "BashTimeout"]

_BASH = "/bin/bash"
#: Commands up to this many bytes (UTF-8) are given to bash as its ``-c`` argument. One
#: argument may not be longer than 128 KiB on Linux (MAX_ARG_STRLEN, "Argument list too
#: long"): a longer command is written to bash on a pipe and sourced from it (``.`` reads
#: the whole of it before running any, so the command's stdin is at its end, as empty as
#: the ``/dev/null`` of a short command's). Only its error messages differ: they name
#: ``/dev/stdin`` where a short command's name ``bash``.
MAX_ARGUMENT_CMD: Final = 100_000
_FROM_PIPE: Final = ". /dev/stdin"
_KEYS = ("cmd", "timeout", "env", "cwd", "user")
#: After the group is gone, how long to keep reading what is left in the pipes. A
#: process that escaped the group (setsid) may hold a pipe open forever.
_DRAIN_SECONDS = 1.0
#: How long to wait for the kernel to deliver SIGKILL before giving up on reaping.
_KILL_WAIT_SECONDS = 5.0


class BashFailed(TickworkError):
    """The command exited with a non-zero status or was killed by a signal.

    ``exit_code`` follows :mod:`subprocess`: negative ``-N`` means killed by signal N.
    ``stdout`` and ``stderr`` are the (bounded) tails of the output.
    """

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{describe_exit(exit_code)}{tails_text(stdout, stderr)}")

    @property
    def output(self) -> RunOutput:
        """The output tails and the exit code, as the run history keeps them."""
        return RunOutput(self.stdout, self.stderr, self.exit_code)

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed the command, or None if it exited."""
        return signal_name(-self.exit_code) if self.exit_code < 0 else None

    def __reduce__(self) -> tuple[type[BashFailed], tuple[int, str, str]]:
        # The default pickling calls cls(*self.args), which is the message alone.
        return (type(self), (self.exit_code, self.stdout, self.stderr))


class BashTimeout(TaskTimeout):
    """The command ran past its ``timeout``; its process group was killed.

    ``output`` holds the tails of what it printed until then (no exit code).
    """

    def __init__(self, message: str, output: RunOutput) -> None:
        self.output = output
        super().__init__(message)

    def __reduce__(self) -> tuple[type[BashTimeout], tuple[str, RunOutput]]:
        return (type(self), (str(self), self.output))


@attrs.frozen(slots=True)
class _Params:
    """Validated parameters of one bash run (see :meth:`BashTask.params`)."""

    cmd: str
    timeout: float | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: str | None = None
    user: str | None = None

    @classmethod
    def from_mapping(cls, raw: object) -> _Params:
        """Check an unpacked params object. Raises InvalidArgument saying what is wrong."""
        if not isinstance(raw, dict):
            raise InvalidArgument(
                f"bash params must be a map like {{'cmd': 'echo hi'}}, got {type(raw).__name__}"
            )
        unknown = sorted(str(k) for k in raw if k not in _KEYS)
        if unknown:
            raise InvalidArgument(
                f"bash params have unknown keys {unknown}; the known keys are {list(_KEYS)}"
            )
        if "cmd" not in raw:
            raise InvalidArgument("bash params need 'cmd', the command to run")
        return cls(
            cmd=_check_cmd(raw["cmd"]),
            timeout=_check_timeout(raw.get("timeout")),
            env=_check_env(raw.get("env")),
            cwd=_check_cwd(raw.get("cwd")),
            user=check_user(raw.get("user")),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The params as a map, leaving out what is unset."""
        out: dict[str, Any] = {"cmd": self.cmd}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.user is not None:
            out["user"] = self.user
        return out


def _check_cmd(cmd: object) -> str:
    if not isinstance(cmd, str) or not cmd.strip():
        raise InvalidArgument(f"bash 'cmd' must be a non-empty string, got {cmd!r}")
    if "\0" in cmd:
        raise InvalidArgument("bash 'cmd' must not contain NUL characters")
    return cmd


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    # bool is an int subclass; True seconds is surely a mistake
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidArgument(
            f"bash 'timeout' must be a positive, finite number of seconds, got {timeout!r}"
        )
    return float(timeout)


def _check_env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise InvalidArgument(f"bash 'env' must be a map of str to str, got {env!r}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidArgument(
                f"bash 'env' names must be non-empty strings without '=' or NUL, got {key!r}"
            )
        if not isinstance(value, str) or "\0" in value:
            raise InvalidArgument(
                f"bash 'env' value of {key!r} must be a string without NUL, got {value!r}"
            )
    return dict(env)


def _check_cwd(cwd: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str) or not cwd or "\0" in cwd:
        raise InvalidArgument(f"bash 'cwd' must be a non-empty path string, got {cwd!r}")
    return cwd


class BashTask(Task):
    """Run ``params`` = packed ``{"cmd", "timeout"?, "env"?, "cwd"?, "user"?}`` with bash.

    Build params with :meth:`params`. The result is a :class:`tickwork.RunOutput`
    (``exit_code`` 0, ``stdout`` and ``stderr`` tails of ``tail_bytes`` bytes each, decoded
    as UTF-8 with replacement), which the run history keeps; a non-zero exit raises
    :class:`BashFailed`, a run past ``timeout`` seconds raises :class:`BashTimeout` (a
    :class:`~tickwork.errors.TaskTimeout`); both carry the tails in ``output`` too.
    ``env`` is added to the node's environment. With ``user``, the command runs as that
    user (a node running as root switches to it; any other node runs only its own user's
    commands), with HOME, USER and LOGNAME of the account and, unless ``cwd`` is given,
    in its home directory, as cron runs a system crontab's lines.

    Args:
        tail_bytes: bytes kept from the end of stdout and of stderr (default 64 KiB each).
    """

    name: ClassVar[str] = "bash"
    #: Seconds between SIGTERM and SIGKILL to the command's process group.
    kill_grace: ClassVar[float] = 2.0
    #: Bytes kept from the end of stdout and of stderr, unless given to the constructor.
    tail_bytes: int = 65536

    def __init__(self, *, tail_bytes: int | None = None) -> None:
        if tail_bytes is not None:
            if isinstance(tail_bytes, bool) or not isinstance(tail_bytes, int) or tail_bytes < 0:
                raise InvalidArgument(
                    f"tail_bytes must be a non-negative integer, got {tail_bytes!r}"
                )
            self.tail_bytes = tail_bytes

    @staticmethod
    def params(
        cmd: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        user: str | None = None,
    ) -> bytes:
        """Validate and pack the params of one run.

        Raises:
            InvalidArgument: an empty ``cmd``, a ``timeout`` that is not a positive number
                of seconds, ``env`` that is not str to str, a ``cwd`` that is not a path,
                a ``user`` that is not a user name.
        """
        raw: dict[str, object] = {"cmd": cmd, "timeout": timeout, "cwd": cwd, "user": user}
        if isinstance(cwd, os.PathLike):
            raw["cwd"] = os.fspath(cwd)
        # A Mapping that is not a dict (e.g. os.environ) is fine to pass in.
        raw["env"] = dict(env) if isinstance(env, Mapping) else env
        return pack(_Params.from_mapping(raw).to_mapping())

    async def run(self, params: bytes) -> RunOutput:
        """Run the command; see the class docstring for the result and the failures."""
        try:
            raw = unpack(params)
        except Exception as exc:
            raise InvalidArgument(
                f"bash params are not msgpack ({exc!r}); build them with BashTask.params()"
            ) from exc
        spec = _Params.from_mapping(raw)
        out, err = Tail(self.tail_bytes), Tail(self.tail_bytes)
        exit_code, timed_out = await self._execute(spec, out, err)
        stdout, stderr = out.text(), err.text()
        if timed_out:
            raise BashTimeout(
                f"bash command timed out after {spec.timeout:g} s and its process group "
                f"was killed{tails_text('', stderr)}",
                RunOutput(stdout, stderr, None),
            )
        if exit_code != 0:
            raise BashFailed(exit_code, stdout, stderr)
        return RunOutput(stdout, stderr, exit_code)

    async def _execute(self, spec: _Params, out: Tail, err: Tail) -> tuple[int, bool]:
        """Run ``spec`` to its end, filling ``out`` and ``err``: (exit code, timed out)."""
        env = {**os.environ, **spec.env} if spec.env else None
        cwd = spec.cwd
        popen: dict[str, Any] = {}
        if spec.user is not None:
            who = run_as(spec.user)
            env = {**os.environ, **who.env, **spec.env}
            cwd = who.cwd if cwd is None else cwd
            popen = who.popen
        script = spec.cmd.encode()
        piped = len(script) > MAX_ARGUMENT_CMD
        try:
            proc = await trio.lowlevel.open_process(
                [_BASH, "-c", _FROM_PIPE if piped else spec.cmd],
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                # Its own session and process group: one killpg reaches everything it
                # starts, and a ^C meant for the node does not reach it.
                start_new_session=True,
                **popen,
            )
        except OSError as exc:
            if cwd is not None and exc.filename == cwd:
                raise InvalidArgument(
                    f"bash 'cwd' {cwd!r} cannot be used on this node: {exc.strerror}"
                ) from exc
            raise
        # The readers are shielded so that they keep draining the pipes while the group
        # is stopped (their EOF tells us the group is gone); we end them ourselves.
        readers = trio.CancelScope(shield=True)
        # Shielded too: a cancelled run ends the feeding only once the group is stopped.
        feeder = trio.CancelScope(shield=True)
        timed_out = False
        finished = False
        cancelled: trio.Cancelled | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_both, readers, proc, out, err)
            if piped:
                nursery.start_soon(feed, feeder, proc, script)
            try:
                with trio.move_on_after(math.inf if spec.timeout is None else spec.timeout) as t:
                    await proc.wait()
                timed_out = t.cancelled_caught
                finished = True
            except trio.Cancelled as exc:
                # Re-raised below, outside the nursery, which would otherwise wrap it in
                # an ExceptionGroup: callers expect a bare Cancelled from an aborted run.
                cancelled = exc
            finally:
                try:
                    # On every path, even a plain exit: background jobs it left behind
                    # belong to the run and must not outlive it.
                    await self._stop_group(proc, out, err)
                finally:
                    feeder.cancel()  # bash has exited: it reads no more
                    if finished:
                        readers.deadline = trio.current_time() + _DRAIN_SECONDS
                    else:
                        readers.cancel()
        if cancelled is not None:
            raise cancelled
        if proc.returncode is None:
            # Only a process stuck in the kernel (state D) survives SIGKILL this long.
            raise TickworkError(
                f"bash command (pid {proc.pid}) did not exit {_KILL_WAIT_SECONDS:g} s "
                "after SIGKILL; it could not be reaped"
            )
        return proc.returncode, timed_out

    async def _stop_group(self, proc: trio.Process, out: Tail, err: Tail) -> None:
        """SIGTERM the process group, SIGKILL it after ``kill_grace``, and reap the command.

        Shielded and bounded, so it runs to the end even while the run is being cancelled.
        """
        # The session leader's pid is the group id. Once bash is reaped the id stays
        # reserved while any member lives; when none does, killpg finds no group.
        pgid = proc.pid
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.kill_grace + _KILL_WAIT_SECONDS
            if not signal_group(pgid, signal.SIGTERM):
                await proc.wait()
                return
            with trio.move_on_after(self.kill_grace):
                # Not `killpg(pgid, 0)`: members that died stay zombies when the node's
                # pid 1 does not reap orphans (containers), so the group never looks empty.
                await proc.wait()
                await out.eof.wait()
                await err.eof.wait()
            # Sweeps up what is left: members that ignored SIGTERM or closed their pipes.
            signal_group(pgid, signal.SIGKILL)
            await proc.wait()
