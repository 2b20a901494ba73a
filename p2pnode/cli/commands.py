"""The client commands of ``p2pnode``: send, recv, monitor, mesh, peers and status talk
to a running node through its socket and print what it says."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..client import Client, publish_request
from ..config.settings import default_socket_path
from ..errors import P2PError
from ..mesh.draw import names_of, render_png, to_dot
from .explain import open_client
from .logs import format_pairs
from .membersview import cmd_members, cmd_tags
from .recv import cmd_recv
from .serve import cmd_request, cmd_serve
from .statusview import summary
from .storeview import cmd_store
from .text import check_count, plural, table


async def cmd_send(args: argparse.Namespace) -> int:
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        if args.text:
            msg_id = await client.publish(args.topic, " ".join(args.text), args.to, wait=True,
                                          retain=args.retain)
            print(f"sent message {msg_id} to topic {args.topic}"
                  + (f" (for node {args.to})" if args.to else ""))
            return 0
        return await _send_lines(client, args.topic, args.to, args.retain)


async def _send_lines(client: Client, topic: str, to: str | None, retain: bool = False) -> int:
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
                err = reply.get("error")
                err = err if isinstance(err, dict) else {}
                print(f"p2pnode: error: line {answered} not sent: {err.get('code')}: "
                      f"{err.get('message')}", file=sys.stderr)
            if done_sending and answered == sent:
                all_answered.set()

    async with stdin, trio.open_nursery() as nursery:
        nursery.start_soon(read_replies)
        buf = b""
        while data := await stdin.receive_some(65536):
            *lines, buf = (buf + data).split(b"\n")
            for line in lines:
                await client.send(publish_request(topic, line.rstrip(b"\r"), to,
                                                  retain=retain))
                sent += 1
        if buf:
            await client.send(publish_request(topic, buf, to, retain=retain))
            sent += 1
        done_sending = True
        if answered < sent:
            await all_answered.wait()
        nursery.cancel_scope.cancel()
    return 1 if failed else 0


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
    check_count(args.count)
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
        hops, size = event.get("hops"), event.get("size")
        return (f"delivered {event.get('topic')} {event.get('msg_id')} from "
                f"{str(event.get('origin'))[:8]}, "
                f"{plural(hops, 'hop') if isinstance(hops, int) else f'{hops} hops'}, "
                f"{plural(size, 'byte') if isinstance(size, int) else f'{size} bytes'}")
    if kind == "dropped":
        count = event.get("count")
        what = plural(count, "event") if isinstance(count, int) else f"{count} events"
        return f"({what} dropped: this monitor did not keep up)"
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
        print(f"p2pnode: drew {plural(len(view['nodes']), 'node')} and "
              f"{plural(len(view['links']), 'link')} to {args.png}", file=sys.stderr)
    else:
        print(mesh_table(view))
    return 0


def mesh_table(view: dict[str, Any]) -> str:
    """The readable ``p2pnode mesh``: the nodes, then the links."""
    labels = names_of(view)
    # Interest mode: each node's routed batches for its apps and for others.
    counts = any(n.get("wanted") is not None for n in view["nodes"])
    rows: list[tuple[str, ...]] = [("NODE ID", "NAME", "LISTEN", "LINKS", "STATE")
            + (("WANTED", "RELAYED") if counts else ())]
    for n in view["nodes"]:
        me = n["node_id"] == view["self"]
        rows.append((n["node_id"], n["name"] + (" (this node)" if me else ""), n["listen"],
                     str(len(n["links"])), _mesh_state(n, me))
                    + ((_count(n.get("wanted")), _count(n.get("relayed"))) if counts else ()))
    lines = _table(rows)
    lines.append(f"\n{plural(len(view['nodes']), 'node')}, "
                 f"{plural(len(view['links']), 'link')}:")
    lines += [f"  {labels.get(a, a[:8])} -- {labels.get(b, b[:8])}" for a, b in view["links"]]
    return "\n".join(lines)


def _count(value: object) -> str:
    return str(value) if isinstance(value, int) else "-"


def _mesh_state(node: dict[str, Any], me: bool) -> str:
    """``this node``, ``linked`` (a live link to this node: it is up now), or when the
    node's link list was last heard of (it may be up, further away)."""
    if me:
        return "this node"
    if node.get("linked"):
        return "linked"
    seen = node.get("last_seen_s")
    return f"heard {seen:.0f}s ago" if isinstance(seen, int | float) else "?"


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
    rows = [("NODE ID", "NAME", "LISTEN", "DIR", "SINCE", "RTT", "LAST FAILURE")]
    for p in peers:
        rtt, failed = p.get("rtt_ms"), p.get("last_failure")
        rows.append((p["node_id"], p["name"], p.get("listen") or p["addr"], p["direction"],
                     f"{p['since_s']:.0f}s", f"{rtt:.1f} ms" if rtt is not None else "-",
                     f"{failed['reason']}, {failed['ago_s']:.0f}s ago" if failed else "-"))
    return "\n".join(_table(rows))


def _table(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as lines of left-aligned columns, two spaces apart."""
    return table(rows)



#: The client commands by name (``main`` runs them in ``trio.run``).
COMMANDS = {"send": cmd_send, "recv": cmd_recv, "monitor": cmd_monitor, "mesh": cmd_mesh,
            "peers": cmd_info, "status": cmd_info, "request": cmd_request, "serve": cmd_serve,
            "store": cmd_store, "members": cmd_members, "tags": cmd_tags}
