"""What the CLI writes to stderr: log records (text or JSON lines) and the ``error: ...``
lines of a failed command, with its exit status."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import click

from tickwork._groups import leaves
from tickwork.errors import TickworkError

log = logging.getLogger("tickwork.cli")

__all__ = ["JsonLogFormatter", "error_report", "setup_logging"]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record: ``time``, ``level``, ``logger``, ``message``.

    A record with an exception also carries ``exception`` (the formatted traceback).
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=repr, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Send every logger's records to stderr at ``level``, as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _one_line(text: str) -> str:
    return "error: " + " ".join(text.split())


def error_report(exc: BaseException) -> tuple[list[str], int]:
    """The ``error: ...`` lines to print for ``exc`` (maybe a group) and the exit status.

    2 for a usage error, 130 for an interrupt, 1 for the rest. A leaf that is neither
    click's nor tickwork's own is unexpected: its traceback is logged at DEBUG.
    """
    lines: list[str] = []
    code = 1
    for err in leaves(exc):
        if isinstance(err, KeyboardInterrupt | click.Abort):
            return [_one_line("interrupted")], 130
        if isinstance(err, click.UsageError):
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
            lines.append(_one_line(err.format_message()) + hint)
            code = max(code, err.exit_code)
        elif isinstance(err, click.ClickException):
            lines.append(_one_line(err.format_message()))
            code = max(code, err.exit_code)
        elif isinstance(err, TickworkError):
            lines.append(_one_line(str(err)))
        else:
            log.debug("unexpected error", exc_info=err)
            lines.append(
                _one_line(f"unexpected {type(err).__name__}: {err}")
                + " (run with --log-level DEBUG for the traceback)"
            )
    return lines, code
