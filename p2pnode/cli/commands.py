"""The client commands of ``p2pnode``: send, recv, monitor, mesh, peers and status talk
to a running node through its socket and print what it says."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..client import Client, event_payload, open_client, publish_request
from ..config.settings import DEFAULT_TOPIC, default_socket_path
from ..errors import P2PError
from ..mesh.draw import names_of, render_png, to_dot
from .logs import format_pairs
from .serve import cmd_request, cmd_serve
from .statusview import summary


async def cmd_send(args: argparse.Namespace) -> int:
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        if args.text:
            msg_id = await client.publish(args.topic, " ".join(args.text), args.to, wait=True)
            print(msg_id)
            return 0
        return await _send_lines(client, args.topic, args.to)


async def _send_lines(client: Client, topic: str, to: str | None) -> int:
    """Publish each line of stdin, pipelined: requests go out as lines come in."""
    sent = 0
    answered = 0
    failed = 0
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    all_answered = trio.Event()
    done_sending = False

    async def read_replies() -> None:
        nonlocal failed, answered
        while True:
            reply = await client.reply()
            answered += 1
            if not reply.get("ok"):
                failed += 1
                print(f"p2pnode: error: {reply.get('error')}", file=sys.stderr)
            if done_sending and answered == sent:
                all_answered.set()

    async with stdin, trio.open_nursery() as nursery:
        nursery.start_soon(read_replies)
        buf = b""
        while data := await stdin.receive_some(65536):
            *lines, buf = (buf + data).split(b"\n")
            for line in lines:
                await client.send(publish_request(topic, line.rstrip(b"\r"), to))
                sent += 1
        if buf:
            await client.send(publish_request(topic, buf, to))
            sent += 1
        done_sending = True
        if answered < sent:
            await all_answered.wait()
        nursery.cancel_scope.cancel()
    return 1 if failed else 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since_arg(text: str, now: float | None = None) -> str | float:
    """``recv --since``: a message id, a Unix time, an ISO 8601 time, or a duration ago
    (``90s``, ``5m``, ``2h``, ``1d``). Raises ``P2PError``."""
    text = text.strip()
    if len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    now = time.time() if now is None else now
    if text[-1:] in _UNITS:
        try:
            amount = float(text[:-1])
        except ValueError:
            amount = -1.0
        if amount >= 0 and math.isfinite(amount):
            return max(0.0, now - amount * _UNITS[text[-1]])
    try:
        value = float(text)
        if value >= 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise P2PError(f"--since {text!r}: expected a message id (32 hex digits), a Unix "
                       "time, an ISO 8601 time or a duration such as 5m") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return max(0.0, moment.timestamp())


async def cmd_recv(args: argparse.Namespace) -> int:
    topics = args.topic or [DEFAULT_TOPIC]
    topics = [] if "*" in topics else topics
    _check_count(args.count)
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        since = parse_since_arg(args.since) if args.since is not None else None
        reply = await client.subscribe(topics, since)
        print(f"p2pnode: subscribed to {', '.join(topics) or 'all topics'}"
              + (f"; replaying {reply.get('replayed', 0)} messages from history"
                 if since is not None else ""), file=sys.stderr, flush=True)
        if reply.get("since_found") is False:
            print("p2pnode: that message is not in the node's history (any more): "
                  "replaying all of it", file=sys.stderr, flush=True)
        await _print_events(client, partial(_recv_line, as_json=args.json), args.count)
    return 0


def _recv_line(event: dict[str, Any], *, as_json: bool) -> str | None:
    """A received message as a line (its payload, or the event as JSON); a ``dropped``
    notice goes to stderr instead (None)."""
    if event.get("event") == "dropped":
        print(f"p2pnode: {event.get('count')} messages were dropped: this receiver "
              "did not keep up", file=sys.stderr, flush=True)
        return None
    if as_json:
        return json.dumps(event)
    return event_payload(event).decode("utf-8", "backslashreplace")


def _check_count(count: int | None) -> None:
    if count is not None and count < 1:
        raise P2PError("--count must be at least 1")


async def _print_events(client: Client, line_of: Callable[[dict[str, Any]], str | None],
                        count: int | None) -> None:
    """Print ``line_of(event)`` for each event (None: nothing) until ``count`` lines
    were printed (None: until the node hangs up)."""
    printed = 0
    async with aclosing(client.events()) as events:
        async for event in events:
            line = line_of(event)
            if line is None:
                continue
            print(line, flush=True)
            printed += 1
            if count is not None and printed >= count:
                return


async def cmd_monitor(args: argparse.Namespace) -> int:
    _check_count(args.count)
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        await client.monitor(args.level, args.messages)
        print(f"p2pnode: monitoring {client_path(args.socket)} (level {args.level}"
              f"{', messages' if args.messages else ''})", file=sys.stderr, flush=True)
        line_of = json.dumps if args.json else partial(monitor_line, level=args.level)
        await _print_events(client, line_of, args.count)
    return 0


def client_path(socket: Path | None) -> Path:
    return socket if socket is not None else default_socket_path()


def monitor_line(event: dict[str, Any], level: str) -> str | None:
    """One monitor event as text; None for a ``link`` event that a log line shows too."""
    kind = event.get("event")
    if kind == "log":
        extra = {k: v for k, v in event.items()
                 if k not in ("event", "time", "level", "logger", "message")}
        return (f"{event.get('time')} {event.get('level', '?'):<7} {event.get('logger')}: "
                f"{event.get('message')}" + (" " + format_pairs(extra) if extra else ""))
    if kind == "link":
        if level in ("debug", "info"):
            return None  # the "link up"/"link down" log line says the same
        detail = event.get("addr") if event.get("state") == "up" else event.get("reason")
        return f"link {event.get('state')}: {event.get('name')} ({event.get('node_id')}) {detail}"
    if kind == "delivered":
        return (f"delivered {event.get('topic')} {event.get('msg_id')} from "
                f"{str(event.get('origin'))[:8]}, {event.get('hops')} hops, "
                f"{event.get('size')} bytes")
    if kind == "dropped":
        return f"({event.get('count')} events dropped: this monitor did not keep up)"
    return json.dumps(event)


async def cmd_mesh(args: argparse.Namespace) -> int:
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        view = await client.request({"op": "mesh"})
    view.pop("ok", None)
    if args.json:
        print(json.dumps(view, indent=2))
    elif args.dot:
        print(to_dot(view), end="")
    elif args.png is not None:
        try:
            render_png(view, args.png)
        except ImportError as exc:
            raise P2PError(f"--png needs matplotlib and networkx ({exc.name} is missing): "
                           "pip install 'p2pnode[sim]'") from None
        print(f"p2pnode: drew {len(view['nodes'])} nodes and {len(view['links'])} links "
              f"to {args.png}", file=sys.stderr)
    else:
        print(mesh_table(view))
    return 0


def mesh_table(view: dict[str, Any]) -> str:
    """The readable ``p2pnode mesh``: the nodes, then the links."""
    labels = names_of(view)
    rows = [("NODE ID", "NAME", "LISTEN", "LINKS", "LAST SEEN")]
    for n in view["nodes"]:
        me = n["node_id"] == view["self"]
        rows.append((n["node_id"], n["name"] + (" (this node)" if me else ""), n["listen"],
                     str(len(n["links"])), "now" if me else f"{n['last_seen_s']:.0f}s ago"))
    lines = _table(rows)
    lines.append(f"\n{len(view['nodes'])} nodes, {len(view['links'])} links:")
    lines += [f"  {labels.get(a, a[:8])} -- {labels.get(b, b[:8])}" for a, b in view["links"]]
    return "\n".join(lines)


async def cmd_info(args: argparse.Namespace) -> int:
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        if args.command == "peers":
            peers = await client.peers(args.wait_min, args.wait_max, args.timeout)
            if args.json:
                print(json.dumps(peers, indent=2))
            else:
                print(_peer_table(peers))
        else:
            status = await client.status()
            status.pop("ok", None)
            if args.json:
                print(json.dumps(status, indent=2))
                return 0
            if args.interval < 0:
                raise P2PError("--interval must be at least 0")
            before = None
            if args.interval > 0:
                await trio.sleep(args.interval)
                before, status = status, await client.status()
            print(summary(status, before, await client.peers()))
    return 0


def _peer_table(peers: list[dict[str, Any]]) -> str:
    if not peers:
        return "no peers"
    rows = [("NODE ID", "NAME", "ADDRESS", "DIR", "SINCE")]
    rows += [(p["node_id"], p["name"], p["addr"], p["direction"], f"{p['since_s']:.0f}s")
             for p in peers]
    return "\n".join(_table(rows))


def _table(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]



#: The client commands by name (``main`` runs them in ``trio.run``).
COMMANDS = {"send": cmd_send, "recv": cmd_recv, "monitor": cmd_monitor, "mesh": cmd_mesh,
            "peers": cmd_info, "status": cmd_info, "request": cmd_request, "serve": cmd_serve}
