"""Monitoring sessions of the local API: log records, link changes and deliveries,
fanned out to the connections that sent ``{"op": "monitor"}``.

While at least one connection monitors, a ``logging.Handler`` on the ``p2pnode``
logger turns each record into a ``log`` event line (and the ``link up``/``link
down`` records of ``p2pnode.links`` into ``link`` events too) and queues it on
every monitoring connection, with ``send_nowait`` semantics: a connection that
reads too slowly loses events and gets a ``dropped`` notice, as subscribers do.
Records only reach the handler if they pass the loggers' level (``--log-level``).

The handler is installed on the process's ``p2pnode`` logger: when several nodes
run in one process (tests, simulations), each one's monitors see all their logs.

A record's fields (``record_fields``) are the same in a ``log`` event and in the log
lines the command writes (``cli.logs``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

S = TypeVar("S")
LOGGER = "p2pnode"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as an ordered dict: time, level, logger, message, extra fields, exc."""
    fields: dict[str, Any] = {
        "time": format_time(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def format_time(created: float) -> str:
    """``created`` (seconds since the epoch) as ``2025-01-01T12:00:00.123Z``."""
    seconds, millis = divmod(round(created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def log_event(record: logging.LogRecord) -> bytes:
    """A ``log`` event line: time, level, logger, message and the record's extra fields."""
    return _line({"event": "log", **record_fields(record)})


def link_event(record: logging.LogRecord) -> bytes | None:
    """A ``link`` event line for the ``link up``/``link down`` records of the link
    manager (their ``link`` field), or None for any other record."""
    fields = vars(record)
    state = fields.get("link")
    if record.name != "p2pnode.links" or state not in ("up", "down"):
        return None
    body = {"event": "link", "state": state, "name": fields.get("peer_name"),
            "node_id": str(fields.get("peer_id", ""))[:8]}
    if state == "up":
        body.update(direction=fields.get("direction"), addr=fields.get("addr"))
    else:
        body["reason"] = fields.get("reason")
    return _line(body)


def _line(body: dict[str, object]) -> bytes:
    text = json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":"))
    return text.encode() + b"\n"


class MonitorHub(Generic[S]):
    """The monitoring sessions of one API server.

    Args:
        send_event: queues an event line on a session, or drops and counts it.
    """

    def __init__(self, send_event: Callable[[S, bytes], None]) -> None:
        self._send_event = send_event
        self.levels: dict[S, int] = {}
        self.message_sessions: set[S] = set()
        self._handler: _Handler | None = None

    def add(self, session: S, level: str, messages: bool) -> None:
        """Start (or change) monitoring for ``session``. Call from the trio thread."""
        self.levels[session] = LEVELS[level]
        if messages:
            self.message_sessions.add(session)
        else:
            self.message_sessions.discard(session)
        if self._handler is None:
            self._handler = _Handler(self)
            logging.getLogger(LOGGER).addHandler(self._handler)

    def remove(self, session: S) -> None:
        """Stop monitoring for ``session``; the last one removes the log handler."""
        self.levels.pop(session, None)
        self.message_sessions.discard(session)
        if not self.levels:
            self.close()

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger(LOGGER).removeHandler(self._handler)
            self._handler = None

    def fan_out(self, record: logging.LogRecord) -> None:
        """Queue ``record`` on every session whose level it meets (trio thread only)."""
        line = log_event(record)
        link = link_event(record)
        for session, level in list(self.levels.items()):
            if record.levelno >= level:
                self._send_event(session, line)
            if link is not None:
                self._send_event(session, link)

    def deliver(self, line: bytes) -> None:
        """Queue a ``delivered`` event line on the sessions that asked for messages."""
        for session in self.message_sessions:
            self._send_event(session, line)


class _Handler(logging.Handler):
    """Hands records to the hub in the trio thread (records from other threads, such
    as zeroconf's, go through the trio token; dropped once the run is over)."""

    def __init__(self, hub: MonitorHub[Any]) -> None:
        super().__init__()
        self.hub = hub
        self.token = trio.lowlevel.current_trio_token()
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if threading.get_ident() == self.thread:
                self.hub.fan_out(record)
            else:
                self.token.run_sync_soon(self.hub.fan_out, record)
        except trio.RunFinishedError:
            pass
        except Exception:
            self.handleError(record)
