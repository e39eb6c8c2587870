"""Running a bash command as another user: the ``user`` of the bash task's params (the
user field of a system crontab line).

A node that runs as root switches to the user for the command (its uid, its primary
group and its supplementary groups, with ``HOME``, ``USER`` and ``LOGNAME`` set from its
account and, unless ``cwd`` is given, its home directory as the working directory, as
cron does). A node that is not root runs a command only as its own user: asked for
another, the run fails with a message that says why, as it does for a user that does
not exist on the node.
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import Any, Final, final

import attrs

from tickwork.errors import InvalidArgument

__all__ = ["RunAs", "check_user", "run_as"]

#: A user name as useradd and cron accept it (a trailing '$' is a Samba machine account).
_NAME: Final = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,255}\$?")


def check_user(user: object) -> str | None:
    """The ``user`` of bash params: None, or a user name.

    Raises:
        InvalidArgument: anything that no account can be named.
    """
    if user is None:
        return None
    if not isinstance(user, str) or not _NAME.fullmatch(user):
        raise InvalidArgument(
            f"bash 'user' must be a user name (letters, digits, '_', '.', '-'), got {user!r}"
        )
    return user


@final
@attrs.frozen
class RunAs:
    """How to start a command as a user: ``Popen`` options, environment and directory."""

    #: ``user``/``group``/``extra_groups`` for ``Popen``; empty when no switch is needed
    popen: dict[str, Any]
    #: HOME, USER and LOGNAME of the account
    env: dict[str, str]
    #: the account's home directory if it is one, else ``/``
    cwd: str


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def run_as(user: str) -> RunAs:
    """How this node runs a command as ``user``.

    Raises:
        InvalidArgument: ``user`` has no account here, or is another user than the node's
            while the node is not root (only root can switch users).
    """
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise InvalidArgument(
            f"bash 'user' {user!r} does not exist on this node (no such account)"
        ) from None
    euid = os.geteuid()
    popen: dict[str, Any] = {}
    if account.pw_uid != euid:
        if euid != 0:
            raise InvalidArgument(
                f"bash 'user' {user!r}: this node runs as {_name_of(euid)!r}, not root, so "
                "it cannot run commands as another user; run the node as root, or as "
                f"{user!r}"
            )
        popen = {
            "user": account.pw_uid,
            "group": account.pw_gid,
            "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid),
        }
    env = {"HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name}
    cwd = account.pw_dir if Path(account.pw_dir).is_dir() else "/"
    return RunAs(popen, env, cwd)
