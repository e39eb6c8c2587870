"""What names tasks and bash commands on the command line: ``module:attr`` task specs
(``--tasks``) and the params of a bash instance (``add``, ``cron add``)."""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from tickwork.errors import InvalidArgument
from tickwork.task import Task
from tickwork.tasks.bash import BashTask

__all__ = ["BASH_KEYS", "bash_params", "resolve_tasks"]


#: The keys of the bash task's params (see ``BashTask.params``).
BASH_KEYS = ("cmd", "timeout", "env", "cwd", "user")


def resolve_tasks(spec: str) -> list[Task]:
    """The tasks named by one ``module:attr`` spec (``attr`` may be dotted).

    The attribute may be a :class:`~tickwork.task.Task` instance, a Task subclass (it is
    instantiated with no arguments), or a list or tuple of those. The current directory
    is importable, as for ``python -m``.

    Raises:
        ValueError: a malformed spec, a module that does not import, a missing attribute,
            or something that is not a task; the message says which.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{spec!r} is not of the form module:attr (e.g. myapp.tasks:Greet)")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        raise ValueError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    return [_as_task(spec, item) for item in items]


def _as_task(spec: str, obj: object) -> Task:
    if isinstance(obj, Task):
        return obj
    if isinstance(obj, type) and issubclass(obj, Task):
        try:
            return obj()
        except Exception as exc:  # noqa: BLE001 - the user's constructor may raise anything
            raise ValueError(
                f"{spec}: cannot instantiate {obj.__name__}() ({type(exc).__name__}: {exc}); "
                "name an instance instead"
            ) from None
    raise ValueError(
        f"{spec} is {obj!r}, not a tickwork.Task instance, a Task subclass, or a list of them"
    )


def bash_params(
    command: tuple[str, ...],
    params: Any,
    *,
    cwd: str | None = None,
    env: tuple[tuple[str, str], ...] = (),
    default_cwd: str | None = None,
) -> bytes:
    """The bash task's params from the words after ``--`` and/or ``--params``.

    The words are quoted with :func:`shlex.join`, so each stays one argument; ``--params``
    may add ``timeout``, ``env`` and ``cwd``, or carry the whole thing with ``cmd``.
    ``cwd`` (``--cwd``) and ``env`` (``--env`` pairs) are added to them; without a
    directory, ``default_cwd`` is used (``add`` passes the caller's: the command runs
    where it was added, as in a shell).

    Raises:
        click.UsageError: no command, or two; a directory or variable given twice; bad
            params (``BadParameter``).
    """
    spec = {} if params is None else params
    if not isinstance(spec, dict):
        raise click.BadParameter(
            'bash params must be a JSON object like {"cmd": "echo hi"}', param_hint="'--params'"
        )
    unknown = sorted(set(spec) - set(BASH_KEYS))
    if unknown:
        raise click.BadParameter(
            f"unknown bash params {unknown}; bash takes {list(BASH_KEYS)}",
            param_hint="'--params'",
        )
    if command:
        if "cmd" in spec:
            raise click.UsageError("give the command either after -- or as cmd in --params")
        spec = {**spec, "cmd": shlex.join(command)}
    if "cmd" not in spec:
        raise click.UsageError("the bash task needs a command: put it after -- or in --params")
    spec = _with_place(spec, cwd or default_cwd if "cwd" not in spec else cwd, env)
    try:
        return BashTask.params(
            spec["cmd"],
            timeout=spec.get("timeout"),
            env=spec.get("env"),
            cwd=spec.get("cwd"),
            user=spec.get("user"),
        )
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="'--params'") from None


def _with_place(spec: dict[str, Any], cwd: str | None, env: tuple[tuple[str, str], ...]) -> Any:
    """``spec`` with a directory and ``--env`` added."""
    if cwd is not None and "cwd" in spec:
        raise click.UsageError("give the directory either with --cwd or as cwd in --params")
    if cwd is not None:
        spec = {**spec, "cwd": cwd}
    given = spec.get("env") or {}
    if env and isinstance(given, dict):  # not a dict: BashTask.params says what is wrong
        merged = dict(given)
        for name, value in env:
            if name in merged:
                raise click.UsageError(f"environment variable {name} is given twice")
            merged[name] = value
        spec = {**spec, "env": merged}
    return spec
