"""Prometheus metrics: the ``status`` reply over HTTP (``GET /metrics``).

``serve_metrics`` is a tiny HTTP/1.0-style responder: one request per connection,
the request head limited to ``MAX_REQUEST`` bytes and ``REQUEST_TIMEOUT`` seconds,
at most ``MAX_CONNECTIONS`` connections at a time (more are closed at once), only
``GET /metrics`` and ``GET /healthz`` (404 for another path, 405 for another method).

``GET /healthz`` answers 200 with a short JSON object when the node is healthy (it
serves its socket and has at least ``--health-min-links`` links), else 503 with the
``reason``: ``{"status": "ok", "node_id": "...", "links": 2, "min_links": 1}``.

``render`` exports every field of the status schema (``p2pnode.api.status``, described
in docs/operations.md, "Metrics"), with its description as ``# HELP``:

- a counter ``messages.delivered`` is ``p2pnode_messages_delivered_total``, a gauge
  ``messages.seen_cache`` is ``p2pnode_messages_seen_cache``; units (bytes, seconds)
  come last, before ``_total``: ``links.bytes_sent`` is ``p2pnode_links_sent_bytes_total``,
  ``uptime_s`` is ``p2pnode_uptime_seconds``;
- counters by reason, ``links.closed: {"timeout": 2}``, are
  ``p2pnode_links_closed_total{reason="timeout"} 2``;
- flags are gauges of 0 or 1; text fields are labels of an ``_info`` gauge of 1
  (``p2pnode_info``, ``p2pnode_security_info``...);
- lists (``messages.recent_gaps``) and ``NOT_EXPORTED`` are left out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import trio

from ..api.status import NodeStatus
from ..api.status_fields import SECTIONS, TOP_FIELDS, Field

log = logging.getLogger("p2pnode.metrics")

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Fields /metrics leaves out: paths are of no use to a monitoring system, and an
#: error's text would make a new series for every text (``store.failing`` says it).
NOT_EXPORTED = frozenset({"socket", "store.path", "store.error"})
#: What ``/healthz`` asks: (healthy, a JSON-able body).
Health = Callable[[], tuple[bool, dict[str, Any]]]


async def serve_metrics(
    host: str, port: int, get_status: Callable[[], NodeStatus], health: Health | None = None,
    *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render(get_status())`` at ``http://HOST:PORT/metrics``, and ``health()``
    at ``/healthz`` (when given), until cancelled.

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
            await _serve_one(stream, get_status, health)
        finally:
            active -= 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        bound = listeners[0].socket.getsockname()
        log.debug("metrics on http://%s/metrics", _hostport(bound[0], bound[1]))
        task_status.started((bound[0], bound[1]))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_one(stream: trio.SocketStream, get_status: Callable[[], NodeStatus],
                     health: Health | None) -> None:
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            head = await _read_head(stream)
            await stream.send_all(_respond(head, get_status, health))
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


def _respond(head: bytes | None, get_status: Callable[[], NodeStatus],
             health: Health | None = None) -> bytes:
    if head is None:
        return _response("400 Bad Request", "bad or too long request\n")
    parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", "bad request line\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target not in (b"/metrics", b"/healthz") or (target == b"/healthz" and health is None):
        return _response("404 Not Found", "only /metrics and /healthz are here\n")
    if method != b"GET":
        return _response("405 Method Not Allowed", "only GET\n", extra="Allow: GET\r\n")
    if target == b"/healthz":
        assert health is not None
        ok, body = health()
        return _response("200 OK" if ok else "503 Service Unavailable",
                         json.dumps(body) + "\n", "application/json")
    return _response("200 OK", render(get_status()), CONTENT_TYPE)


def _response(status: str, body: str, content_type: str = "text/plain; charset=utf-8",
              extra: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n{extra}\r\n").encode() + data


def render(status: NodeStatus) -> str:
    """The status reply in the Prometheus text exposition format, one family per field
    of the schema (``FIELDS``) but the ones in ``NOT_EXPORTED`` and the lists."""
    lines = list(_info_family("p2pnode_info", "this node: its id, name, address and versions",
                              TOP_FIELDS, status))
    for field in TOP_FIELDS:
        lines += _family(field, getattr(status, field.name))
    for section in SECTIONS:
        values = getattr(status, section.name)
        if values is None:
            continue
        lines += _info_family(f"p2pnode_{section.name}_info", section.description,
                              section.fields, values)
        for field in section.fields:
            lines += _family(field, getattr(values, field.name))
    return "\n".join(lines) + "\n"


def metric_name(field: Field) -> str:
    """The family name of a field (counters without their ``_total``):
    ``p2pnode_`` + section + name, the unit last, in base units
    (``links.bytes_sent``: ``p2pnode_links_sent_bytes``; ``uptime_s``:
    ``p2pnode_uptime_seconds``)."""
    base = field.metric or field.name
    if field.unit == "seconds":
        base = base.removesuffix("_s")
    if field.unit and not base.endswith(field.unit):
        base = f"{base}_{field.unit}"
    return f"p2pnode_{field.section}_{base}" if field.section else f"p2pnode_{base}"


def sample_name(field: Field) -> str:
    """The name of a field's samples: counters end in ``_total``."""
    name = metric_name(field)
    return f"{name}_total" if field.kind in ("counter", "by_reason") else name


def exported(field: Field) -> bool:
    """Whether /metrics shows the field (as a family of its own or as a label)."""
    return field.kind != "list" and field.path not in NOT_EXPORTED


def _family(field: Field, value: Any) -> Iterator[str]:
    if field.kind in ("info", "list") or not exported(field):
        return
    name = sample_name(field)
    if field.kind == "by_reason":
        label = field.label or "key"
        samples = [({label: k}, v) for k, v in value.items() if _is_number(v)]
        yield from _metric(name, "counter", field.help, samples)
    else:
        kind = "counter" if field.kind == "counter" else "gauge"
        yield from _metric(name, kind, field.help, [({}, int(value) if field.kind == "flag"
                                                     else value)])


def _info_family(name: str, help_text: str, fields: tuple[Field, ...],
                 values: Any) -> Iterator[str]:
    """One gauge of 1 whose labels are the ``info`` fields (text) of a section."""
    labels = {f.name: getattr(values, f.name) for f in fields
              if f.kind == "info" and exported(f)}
    if labels:
        text = f"{help_text} (always 1; labels: {', '.join(labels)})"
        yield from _metric(name, "gauge", text, [(labels, 1)])


def _metric(name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, Any], Any]]) -> Iterator[str]:
    yield f"# HELP {name} {_escape_help(help_text)}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        yield f"{name}{{{text}}} {value}" if text else f"{name} {value}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
