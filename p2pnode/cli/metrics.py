"""Prometheus metrics: the counters of the ``status`` reply over HTTP (``GET /metrics``).

``serve_metrics`` is a tiny HTTP/1.0-style responder: one request per connection,
the request head limited to ``MAX_REQUEST`` bytes and ``REQUEST_TIMEOUT`` seconds,
at most ``MAX_CONNECTIONS`` connections at a time (more are closed at once), only
``GET /metrics`` (404 for another path, 405 for another method).

``render`` flattens the status dict (docs/operations.md, "Metrics"):

- ``messages.delivered: 7`` becomes ``p2pnode_messages_delivered_total 7`` (a counter);
- a dict of counters by reason, ``links.closed: {"timeout": 2}``, becomes
  ``p2pnode_links_closed_total{reason="timeout"} 2``;
- the numbers that go up and down (``GAUGES``, and every top-level number) are
  gauges without ``_total``; ``uptime_s`` becomes ``p2pnode_uptime_seconds``;
- booleans are gauges of 0 or 1; strings become labels of an ``_info`` gauge of 1.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import trio

log = logging.getLogger("p2pnode.metrics")

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Status fields inside sections that are gauges, not counters.
GAUGES = frozenset({"messages.seen_cache", "history.batches", "history.bytes",
                    "history.max_bytes", "history.max_age_s", "security.origins_tracked"})
#: Top-level fields that become labels of ``p2pnode_info``.
INFO_KEYS = ("node_id", "name", "version", "protocol", "listen")
#: The label name for the keys of a dict of counters (default "key").
LABELS = {"closed": "reason", "refused": "code", "refused_by_peer": "code",
          "handshake_failed": "code"}


async def serve_metrics(
    host: str, port: int, get_status: Callable[[], dict[str, Any]], *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render(get_status())`` at ``http://HOST:PORT/metrics`` until cancelled.

    ``started`` with the address really bound (port 0 picks one). Raises ``OSError``
    if the address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    active = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        active += 1
        try:
            await _serve_one(stream, get_status)
        finally:
            active -= 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        bound = listeners[0].socket.getsockname()
        log.info("metrics on http://%s/metrics", _hostport(bound[0], bound[1]))
        task_status.started((bound[0], bound[1]))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_one(stream: trio.SocketStream,
                     get_status: Callable[[], dict[str, Any]]) -> None:
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            head = await _read_head(stream)
            await stream.send_all(_respond(head, get_status))
            # Let the client read the response before the connection closes: closing
            # with its request unread would reset the connection instead.
            await stream.send_eof()
            drained = 0
            while drained < 8 * MAX_REQUEST and (data := await stream.receive_some(4096)):
                drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request head (up to the blank line), or None if it is too long or cut short."""
    buf = b""
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > MAX_REQUEST:
            return None
        data = await stream.receive_some(MAX_REQUEST)
        if not data:
            return None
        buf += data
    return buf


def _respond(head: bytes | None, get_status: Callable[[], dict[str, Any]]) -> bytes:
    if head is None:
        return _response("400 Bad Request", "bad or too long request\n")
    parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", "bad request line\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _response("404 Not Found", "only /metrics is here\n")
    if method != b"GET":
        return _response("405 Method Not Allowed", "only GET\n", extra="Allow: GET\r\n")
    return _response("200 OK", render(get_status()), CONTENT_TYPE)


def _response(status: str, body: str, content_type: str = "text/plain; charset=utf-8",
              extra: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n{extra}\r\n").encode() + data


def render(status: dict[str, Any]) -> str:
    """The status reply in the Prometheus text exposition format."""
    lines: list[str] = []
    info: dict[str, Any] = {k: status[k] for k in INFO_KEYS if k in status}
    lines += _metric("p2pnode_info", "gauge", [(info, 1)])
    for key, value in status.items():
        if key in info or key in ("ok", "id", "socket"):
            continue
        if isinstance(value, dict):
            lines += _section(key, value)
        elif _is_number(value):
            lines += _metric(_name("p2pnode", key), "gauge", [({}, value)])
    return "\n".join(lines) + "\n"


def _section(section: str, values: dict[str, Any]) -> Iterator[str]:
    strings = {k: v for k, v in values.items() if isinstance(v, str)}
    if strings:
        yield from _metric(f"p2pnode_{_clean(section)}_info", "gauge", [(strings, 1)])
    for key, value in values.items():
        name = _name(f"p2pnode_{_clean(section)}", key)
        if isinstance(value, bool) or f"{section}.{key}" in GAUGES:
            yield from _metric(name, "gauge", [({}, int(value))])
        elif _is_number(value):
            yield from _metric(name + "_total", "counter", [({}, value)])
        elif isinstance(value, dict):
            label = LABELS.get(key, "key")
            samples = [({label: k}, v) for k, v in value.items() if _is_number(v)]
            yield from _metric(name + "_total", "counter", samples)


def _metric(name: str, kind: str, samples: list[tuple[dict[str, Any], Any]]) -> Iterator[str]:
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        text = ",".join(f'{_clean(k)}="{_escape(v)}"' for k, v in labels.items())
        yield f"{name}{{{text}}} {value}" if text else f"{name} {value}"


def _name(prefix: str, key: str) -> str:
    key = _clean(key)
    return f"{prefix}_{key[:-2]}_seconds" if key.endswith("_s") else f"{prefix}_{key}"


def _clean(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def _escape(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
