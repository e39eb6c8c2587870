"""Built-in tasks that ship with tickwork."""

from __future__ import annotations

from tickwork.tasks.bash import BashFailed as BashFailed
from tickwork.tasks.bash import BashTask as BashTask

__all__ = ["BashFailed", "BashTask"]
