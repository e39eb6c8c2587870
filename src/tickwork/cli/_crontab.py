"""Reading a crontab for ``tickwork cron import``. Pure but for two look-ups on this machine
(is a word a user account, is it a command on PATH), which tell the two kinds apart.

A *user* crontab line is ``min hour day month weekday command`` or ``@shortcut command``;
a *system* crontab (``/etc/crontab``, ``/etc/cron.d/*``) has the user to run as between
the time and the command. Comments and blank lines are skipped. Environment lines
(``NAME=value``, as cron reads them: spaces around ``=`` allowed, matching quotes around
the value removed, nothing expanded) apply to the lines after them: ``CRON_TZ``/``TZ``
set the time zone the following expressions are read in, ``MAILTO`` is reported, and
every other variable (``PATH``, ``SHELL``, ``HOME`` ...) goes into the environment of the
following lines' commands. ``@reboot`` has no time to fire at and is refused. The id of
a line's schedule is derived from its expression, user and command, so importing the
file again finds the same schedules.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
from pathlib import Path
from typing import Final, final

import attrs

from tickwork.errors import InvalidArgument
from tickwork.schedules.triggers import Cron
from tickwork.tasks.bash import BashTask

__all__ = ["MAILTO_WARNING", "CrontabEntry", "is_system_path", "parse_crontab"]

#: What ``MAILTO=`` gets (tickwork sends no mail of its own).
MAILTO_WARNING: Final = (
    "tickwork sends no mail; to hear of failed, missed or overdue runs, give the task a "
    '`notify` setting (tickwork.Notify: a webhook, e.g. Slack; docs/tasks.md, "Failure '
    'notifications"); failed runs are listed by `tickwork ls --state FAILED`'
)

_ENV: Final = re.compile(
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<name>[A-Za-z_][A-Za-z0-9_]*))\s*=\s*(?P<value>.*)"""
)
_UNESCAPED_PERCENT: Final = re.compile(r"(?<!\\)%")
#: A word that reads as a cron time field (``*``, ``0``, ``*/5``, ``1-5``, ``0,30``).
_TIME_LIKE: Final = re.compile(r"[0-9*][0-9*/,-]*")
_USER_NAME: Final = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,255}\$?")
#: Words a command can start with that ``which`` does not find: bash's own.
_SHELL_WORDS: Final = frozenset(
    [
        "!",
        "[",
        "[[",
        "{",
        "(",
        ".",
        ":",
        "builtin",
        "case",
        "cd",
        "command",
        "declare",
        "eval",
        "exec",
        "export",
        "false",
        "for",
        "if",
        "let",
        "local",
        "printf",
        "read",
        "set",
        "source",
        "test",
        "time",
        "true",
        "ulimit",
        "umask",
        "until",
        "while",
    ]
)
_SHELLS: Final = ("bash", "sh")
_ZONE_VARS: Final = ("CRON_TZ", "TZ")


@final
@attrs.frozen
class CrontabEntry:
    """One schedule line: where it is, its expression, user, command, zone and environment."""

    line: int
    expr: str
    command: str
    #: the user field of a system crontab line; None in a user crontab
    user: str | None = None
    #: the zone CRON_TZ/TZ set before the line; None: the import's --tz
    zone: str | None = None
    #: the variables set before the line, for its command
    env: dict[str, str] = attrs.field(factory=dict)

    @property
    def schedule_id(self) -> str:
        """``crontab-`` and a hash of the expression, user and command: stable across imports.

        The zone and environment are not in it: an edited ``PATH`` makes the same line
        with another definition (refused on import without ``--replace``), never a second
        schedule running the same command.
        """
        text = f"{' '.join(self.expr.split())}\x00{self.command}"
        if self.user is not None:
            text += f"\x00{self.user}"
        return "crontab-" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()

    @property
    def params(self) -> bytes:
        """The bash task's params: command, environment and user."""
        return BashTask.params(self.command, env=self.env or None, user=self.user)


def is_system_path(name: str) -> bool:
    """``/etc/crontab`` or a file in ``/etc/cron.d``: where system crontabs live."""
    if name == "-":
        return False
    path = Path(name).resolve()
    return path == Path("/etc/crontab") or path.parent == Path("/etc/cron.d")


def _is_account(word: str) -> bool:
    try:
        pwd.getpwnam(word)
    except (KeyError, ValueError):  # ValueError: a NUL in the word
        return False
    return True


def _is_command(word: str, env: dict[str, str]) -> bool:
    """A word a command line can start with: a shell word, a path, or a program on PATH."""
    if word in _SHELL_WORDS or not _USER_NAME.fullmatch(word):
        return True
    path = os.pathsep.join(p for p in (env.get("PATH"), os.environ.get("PATH")) if p)
    return shutil.which(word, path=path) is not None


@attrs.define
class _Reader:
    """The state of one pass over a crontab: the environment so far, what was found."""

    name: str
    system: bool | None
    env: dict[str, str] = attrs.field(factory=dict)
    zone: str | None = None
    entries: list[CrontabEntry] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    def where(self, n: int) -> str:
        return f"{self.name}:{n}"

    def environment(self, n: int, var: str, raw: str) -> None:
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not var or "\0" in var or "\0" in value:
            self.errors.append(f"{self.where(n)}: environment line with an empty name or a NUL")
        elif var in _ZONE_VARS:
            try:
                Cron("@daily", value)
            except InvalidArgument as exc:
                self.errors.append(f"{self.where(n)}: {var}={value}: {exc}")
                return
            self.zone = value
            if var == "TZ":  # cron passes TZ to the commands too
                self.env[var] = value
        elif var == "MAILTO":
            self.warnings.append(f"{self.where(n)}: MAILTO= ignored: {MAILTO_WARNING}")
        else:
            if var == "SHELL" and Path(value).name not in _SHELLS:
                self.warnings.append(
                    f"{self.where(n)}: SHELL={value}: commands run with /bin/bash "
                    "(SHELL is only set in their environment)"
                )
            self.env[var] = value

    def schedule(self, n: int, line: str) -> None:
        """Read one schedule line; raises ValueError with its problem."""
        system = bool(self.system)
        expr, rest = _split(line, system)
        words = rest.split()
        user = None
        if system:
            user, _, rest = rest.partition(" ")
            self.check_user(n, user, rest)
        elif self.system is None and words and len(words) > 1:
            first = words[0]
            if _is_account(first) and not _is_command(first, self.env):
                raise ValueError(
                    f"{first!r} after the time fields is a user on this machine, not a "
                    "command: this is a system crontab (its lines name the user to run as); "
                    f"import it with --system (or --no-system if {first!r} is a command)"
                )
        command = rest.strip()
        if not command:
            raise ValueError(f"no command after {expr!r}" + (f" {user}" if user else ""))
        try:
            Cron(expr, self.zone or "UTC")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        if _UNESCAPED_PERCENT.search(command):
            self.warnings.append(
                f"{self.where(n)}: '%' is passed to bash as it is (cron would end the command "
                "there and send the rest as its input)"
            )
        entry = CrontabEntry(n, expr, command.replace("\\%", "%"), user, self.zone, dict(self.env))
        try:
            entry.params  # noqa: B018 - checked now, not when it runs
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        self.entries.append(entry)

    def check_user(self, n: int, user: str, rest: str) -> None:
        if not _USER_NAME.fullmatch(user) or (
            not _is_account(user) and _is_command(user, self.env)
        ):
            raise ValueError(
                f"{user!r} is not a user name but a command: this looks like a user crontab "
                "(no user field); import it without --system"
            )
        if rest.strip() and not _is_account(user):
            self.warnings.append(
                f"{self.where(n)}: user {user!r} does not exist on this machine; its runs "
                "fail on any node where it does not exist either"
            )

    def check_repeats(self) -> None:
        """Two lines with one schedule id must define the same schedule."""
        seen: dict[str, CrontabEntry] = {}
        for e in self.entries:
            first = seen.setdefault(e.schedule_id, e)
            if first is not e and (first.zone, first.env) != (e.zone, e.env):
                self.errors.append(
                    f"{self.where(e.line)}: repeats line {first.line} with another time "
                    "zone or environment; tickwork would make them one schedule"
                )


def _split(line: str, system: bool) -> tuple[str, str]:
    """A line's expression and what follows it; raises ValueError for a line that has not
    exactly the time fields cron reads (a 6th or 7th one is seconds or years, not cron)."""
    if line.startswith("@"):
        expr, _, rest = line.partition(" ")
        if expr.lower() == "@reboot":
            raise ValueError(
                "@reboot is not supported: tickwork fires at times, not at boot; start "
                "that command from your service manager (e.g. a systemd unit) instead"
            )
    else:
        parts = line.split(None, 5)
        if len(parts) < 6:
            raise ValueError(
                "expected 5 time fields"
                + (", a user and a command" if system else " and a command")
                + f" (min hour day month weekday {'user ' if system else ''}command), "
                f"got {line!r}"
            )
        expr, rest = " ".join(parts[:5]), parts[5]
    words = rest.split()
    extra = 0
    while extra < len(words) and _TIME_LIKE.fullmatch(words[extra]):
        extra += 1
    if extra:
        count = "more than 1" if line.startswith("@") else str(5 + extra)
        raise ValueError(
            f"{count} time-like fields; a crontab line has 5 time fields (min hour day "
            f"month weekday){' and a user' if system else ''} before the command (seconds "
            f"or years are not cron): {line!r}"
        )
    return expr, rest.strip()


def parse_crontab(
    text: str, name: str = "crontab", *, system: bool | None = None
) -> tuple[list[CrontabEntry], list[str], list[str]]:
    """The schedule lines of a crontab, the warnings, and the errors (one line each).

    ``system``: True reads a system crontab (a user field after the time fields); False a
    user crontab; None a user crontab that is refused if it looks like a system one (a
    line whose word after the time fields is a user account here and not a command).
    """
    reader = _Reader(name, system)
    # cron ends a line at "\n" only: not at the other breaks str.splitlines() knows
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        env = _ENV.fullmatch(line)
        if env is not None:
            var = env.group("name") or env.group("dq") or env.group("sq") or ""
            reader.environment(n, var, env.group("value"))
            continue
        try:
            reader.schedule(n, line)
        except ValueError as exc:
            reader.errors.append(f"{reader.where(n)}: {' '.join(str(exc).split())}")
    reader.check_repeats()
    return reader.entries, reader.warnings, reader.errors
