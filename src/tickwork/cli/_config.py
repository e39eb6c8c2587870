"""Configuration of ``tickwork run``: every option also from the environment and a TOML file.

One precedence rule for every option: the command line, then the environment
(``TICKWORK_<OPTION>``), then the configuration file (``--config PATH`` or
``$TICKWORK_CONFIG``), then the option's default. The names are derived from each
option's long name (``--max-concurrency`` is ``TICKWORK_MAX_CONCURRENCY`` and the key
``max-concurrency``), so an option added to ``tickwork run`` is covered without more code.

click does the layering (``envvar`` and ``Context.default_map``); this module names the
variables, reads the file, refuses keys it does not know, and says where a bad value came
from, since click's own message names only the option.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import click
from click.core import ParameterSource

from tickwork.tasks import HandoffSettings
from tickwork.tasks._settings import ENV as HANDOFF_ENV

__all__ = [
    "ENV_PREFIX",
    "HANDOFF_SETTINGS",
    "ConfiguredCommand",
    "env_name",
    "file_key",
    "handoff_settings",
]

#: the prefix of every environment variable the node reads
ENV_PREFIX = "TICKWORK_"

#: the ``[handoff]`` table of the configuration file: the hand-off tasks' connection
#: settings (key -> environment variable, which wins over the key)
HANDOFF_SETTINGS: Final[Mapping[str, str]] = {
    field.replace("_", "-"): var for field, var in HANDOFF_ENV.items()
}
_HANDOFF_TABLE = "handoff"


def _long_name(param: click.Parameter) -> str:
    """The option's longest spelling without its dashes: ``max-concurrency``."""
    return max(param.opts, key=len).lstrip("-")


def env_name(param: click.Parameter) -> str:
    """An option's environment variable: ``--max-concurrency`` is ``TICKWORK_MAX_CONCURRENCY``."""
    return ENV_PREFIX + _long_name(param).replace("-", "_").upper()


def file_key(param: click.Parameter) -> str:
    """The configuration file's key for an option: its long name, ``max-concurrency``."""
    return _long_name(param)


def _configurable(params: list[click.Parameter]) -> list[click.Option]:
    return [p for p in params if isinstance(p, click.Option) and p.name != "config"]


def _read_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Load the TOML file as the command's ``default_map`` (eager: before other options)."""
    if value is None or ctx.resilient_parsing:
        return value
    where = f"config file {value}"
    ctx.meta["tickwork.config"] = where
    if ctx.get_parameter_source("config") is ParameterSource.ENVIRONMENT:
        where += f" (from ${ENV_PREFIX}CONFIG)"
    try:
        with value.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise click.UsageError(f"cannot read {where}: {exc.strerror or exc}", ctx) from None
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{where} is not valid TOML: {exc}", ctx) from None
    options = {file_key(p): p for p in _configurable(ctx.command.params)}
    defaults: dict[str, Any] = {}
    for key, item in data.items():
        if key == _HANDOFF_TABLE:
            _export_handoff(ctx, where, item)
            continue
        option = options.get(key)
        if option is None or option.name is None:
            known = ", ".join([*options, f"[{_HANDOFF_TABLE}]"])
            raise click.UsageError(f"{where}: unknown key {key!r} (known: {known})", ctx)
        # A lone string for a repeatable option is one value, not its characters.
        defaults[option.name] = [item] if option.multiple and isinstance(item, str) else item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _export_handoff(ctx: click.Context, where: str, table: object) -> None:
    """Keep the ``[handoff]`` settings for :func:`handoff_settings`."""
    if not isinstance(table, dict):
        raise click.UsageError(f"{where}: {_HANDOFF_TABLE!r} must be a table", ctx)
    for key, item in table.items():
        var = HANDOFF_SETTINGS.get(key)
        if var is None:
            known = ", ".join(HANDOFF_SETTINGS)
            raise click.UsageError(
                f"{where}: unknown key {key!r} in [{_HANDOFF_TABLE}] (known: {known})", ctx
            )
        if not isinstance(item, str):
            raise click.UsageError(f"{where}: [{_HANDOFF_TABLE}] {key} must be a string", ctx)
    ctx.meta["tickwork.handoff"] = dict(table)


def handoff_settings(
    ctx: click.Context, environ: Mapping[str, str] | None = None
) -> HandoffSettings:
    """The hand-off tasks' settings: the environment, then the file's ``[handoff]`` table,
    then the defaults. Nothing of the file goes into the node's environment, so commands
    run by ``BashTask`` do not inherit a secret written there."""
    env = os.environ if environ is None else environ
    table: Mapping[str, str] = ctx.meta.get("tickwork.handoff", {})
    given = {}
    for field, var in HANDOFF_ENV.items():
        value = env.get(var) or table.get(field.replace("_", "-"))
        if value:
            given[field] = value
    return HandoffSettings(**given)


def _origin(ctx: click.Context, param: click.Parameter) -> str | None:
    """Where a parameter's value came from, when not the command line."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is ParameterSource.ENVIRONMENT:
        return f"from ${env_name(param)}"
    if source is ParameterSource.DEFAULT_MAP:
        where = ctx.meta.get("tickwork.config", "the config file")
        return f"from {where}, key {file_key(param)!r}"
    return None


def _param_of(ctx: click.Context, exc: click.BadParameter) -> click.Parameter | None:
    if exc.param is not None:
        return exc.param
    hint = str(exc.param_hint or "")
    for param in ctx.command.params:
        if any(f"'{opt}'" in hint for opt in param.opts):
            return param
    return None


def _located(ctx: click.Context, exc: click.BadParameter) -> click.BadParameter:
    """``exc`` with where its value came from added (environment or file)."""
    param = _param_of(ctx, exc)
    if param is None:
        return exc
    origin = _origin(ctx, param)
    if origin is None or origin in exc.message:
        return exc
    # The hint names the option alone: click's would add "(env var: ...)" even to a value
    # that came from the file.
    hint = exc.param_hint if exc.param_hint is not None else f"'--{_long_name(param)}'"
    return click.BadParameter(
        f"{exc.message} ({origin})", ctx=exc.ctx, param=exc.param, param_hint=hint
    )


class ConfiguredCommand(click.Command):
    """A command whose every option is also read from ``TICKWORK_<OPTION>`` and from the
    TOML file given by ``--config`` (or ``$TICKWORK_CONFIG``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for option in _configurable(self.params):
            if option.envvar is None:
                option.envvar = env_name(option)
            option.show_envvar = True
        self.params.insert(
            0,
            click.Option(
                ["--config"],
                type=click.Path(dir_okay=False, path_type=Path),
                envvar=f"{ENV_PREFIX}CONFIG",
                show_envvar=True,
                is_eager=True,
                expose_value=False,
                callback=_read_config,
                metavar="PATH",
                help="A TOML file of option values (keys: the long option names without "
                "'--'). The command line wins over the environment, which wins over the "
                "file.",
            ),
        )

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.BadParameter as exc:
            raise _located(ctx, exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            raise _located(ctx, exc) from None
