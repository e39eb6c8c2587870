"""Reading a standard (user) crontab for ``tickwork cron import``. Pure: text in, entries out.

A line is ``min hour day month weekday command`` or ``@shortcut command``. Comments and
blank lines are skipped; environment lines (``NAME=value``) are reported and ignored, as
tickwork runs every command with bash in the node's environment; ``@reboot`` has no
time to fire at and is refused. The id of a line's schedule is derived from its
expression and command, so importing the file again finds the same schedules.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, final

import attrs

from tickwork.errors import InvalidArgument
from tickwork.triggers import Cron

__all__ = ["CrontabEntry", "parse_crontab"]

_ENV = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=")
_UNESCAPED_PERCENT = re.compile(r"(?<!\\)%")
_ENV_ADVICE: Final = {
    "CRON_TZ": "pass --tz ZONE to read the expressions in a time zone",
    "TZ": "pass --tz ZONE to read the expressions in a time zone",
    "SHELL": "commands run with bash",
    "MAILTO": "tickwork sends no mail; failed runs are listed by `tickwork ls --state FAILED`",
}


@final
@attrs.frozen
class CrontabEntry:
    """One schedule line: its line number, expression and command."""

    line: int
    expr: str
    command: str

    @property
    def schedule_id(self) -> str:
        """``crontab-`` and a hash of the expression and the command: stable across imports."""
        text = f"{' '.join(self.expr.split())}\x00{self.command}"
        return "crontab-" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _entry(name: str, n: int, line: str) -> CrontabEntry:
    """Raises ValueError with the line's problem."""
    if line.startswith("@"):
        word, _, command = line.partition(" ")
        expr = word
        if word.lower() == "@reboot":
            raise ValueError(
                f"{name}:{n}: @reboot is not supported: tickwork fires at times, not at boot; "
                "start that command from your service manager (e.g. a systemd unit) instead"
            )
    else:
        parts = line.split(None, 5)
        if len(parts) < 6:
            raise ValueError(
                f"{name}:{n}: expected 5 time fields and a command "
                f"(min hour day month weekday command), got {line!r}"
            )
        expr, command = " ".join(parts[:5]), parts[5]
    command = command.strip()
    if not command:
        raise ValueError(f"{name}:{n}: no command after {expr!r}")
    try:
        Cron(expr)
    except InvalidArgument as exc:
        raise ValueError(f"{name}:{n}: {exc}") from None
    return CrontabEntry(n, expr, command)


def parse_crontab(
    text: str, name: str = "crontab"
) -> tuple[list[CrontabEntry], list[str], list[str]]:
    """The schedule lines of a crontab, the warnings, and the errors (each names its line)."""
    entries: list[CrontabEntry] = []
    warnings: list[str] = []
    errors: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        env = _ENV.match(line)
        if env is not None:
            var = env.group(1)
            advice = _ENV_ADVICE.get(var, "set variables inside the command instead (VAR=x cmd)")
            warnings.append(f"{name}:{n}: environment line {var}= ignored: {advice}")
            continue
        try:
            entry = _entry(name, n, line)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if _UNESCAPED_PERCENT.search(entry.command):
            warnings.append(
                f"{name}:{n}: '%' is passed to bash as it is (cron would end the command "
                "there and send the rest as its input)"
            )
        entries.append(attrs.evolve(entry, command=entry.command.replace("\\%", "%")))
    return entries, warnings, errors
