"""Structured logs: ``key=value`` lines (the default) or one JSON object per line.

Every record has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``
and ``message``; the fields passed with ``extra={...}`` follow, and ``exc`` holds
a traceback when there is one.

    time=2025-01-01T12:00:00.123Z level=info logger=p2pnode.links message="link up: a ..."
    {"time": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "p2pnode.links", ...}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from ..api.monitor import format_time, record_fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), default=str, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``key=value`` pairs (logfmt): values with spaces, quotes or ``=`` are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return format_pairs(record_fields(record))


def format_pairs(fields: dict[str, Any]) -> str:
    """``{"a": 1, "b": "x y"}`` as ``a=1 b="x y"``."""
    return " ".join(f"{key}={_kv_value(value)}" for key, value in fields.items())


def _kv_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``"text"`` (key=value) or ``"json"``."""
    return JsonFormatter() if log_format == "json" else KeyValueFormatter()


def setup_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as
    ``log_format`` ("text" or "json"), replacing the root logger's handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def announce(log_format: str, message: str, *, level: str = "notice", **fields: Any) -> None:
    """Print a line the operator must see whatever the log level (where the node
    listens, how it is secured, what a reload changed): ``p2pnode: MESSAGE`` on stderr,
    or with the JSON format a JSON object with ``level`` (``notice``) and ``fields``.
    The node logs none of these itself at the default level: each is printed once."""
    if log_format == "json":
        line = json.dumps({"time": format_time(time.time()), "level": level,
                           "logger": "p2pnode", "message": message, **fields},
                          default=str, ensure_ascii=False)
    else:
        line = f"p2pnode: {message}"
    print(line, file=sys.stderr, flush=True)
