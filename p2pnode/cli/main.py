"""The ``p2pnode`` command: run a node, and talk to a running one through its socket."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .. import __version__
from ..client.core import ApiReplyError, Client, event_payload, open_client, publish_request
from ..config.file import (
    LOG_FORMATS,
    LOG_LEVELS,
    RunSettings,
    SettingsError,
    build_settings,
    gather,
)
from ..config.settings import (
    DEFAULT_PORT,
    DEFAULT_TOPIC,
    NodeConfig,
    default_data_dir,
    default_socket_path,
    format_hostport,
)
from ..errors import P2PError, single_error
from ..identity.keys import generate_network_key
from ..mesh.draw import names_of, render_png, to_dot
from .logs import announce, format_pairs, setup_logging
from .metrics import serve_metrics
from .sdnotify import notify
from .statusview import summary

if TYPE_CHECKING:
    from ..node.node import Node

EPILOG = f"""\
The socket defaults to $P2PNODE_SOCKET, else $XDG_RUNTIME_DIR/p2pnode.sock, else
/tmp/p2pnode-UID/p2pnode.sock (here: {default_socket_path()}). Clients talk only
to a node of their own user or root, or of --server-user. The default topic is
"{DEFAULT_TOPIC}". See docs/cli.md for the full reference."""

RUN_EPILOG = f"""\
Every flag can also be set in the --config file (key: the flag's name with
underscores; --peer is peers = [...], --mdns-interface is mdns_interfaces = [...],
--no-mdns is mdns = false) or in a P2PNODE_<KEY> variable (P2PNODE_LISTEN,
P2PNODE_PEERS="a:7420,b", P2PNODE_MDNS=0, ...). A flag wins over a variable, a
variable over the file, the file over the default. See docs/cli.md.

{EPILOG}"""


def _add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", type=Path, default=None, metavar="PATH",
                   help="the node's local API socket (default: see below)")


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every client command: where the node is, and whom to trust."""
    _add_socket(p)
    p.add_argument("--server-user", default=None, metavar="USER",
                   help="also talk to a node run by this user (a name or uid; default "
                        "$P2PNODE_SERVER_USER). Without it, a socket served by anyone but "
                        "you or root is refused")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``p2pnode`` command."""
    parser = argparse.ArgumentParser(
        prog="p2pnode", description="A peer-to-peer messaging node for local networks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a node", epilog=RUN_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run a node until SIGINT or SIGTERM.")
    _add_run_flags(run)

    keygen = sub.add_parser("keygen", help="make a network key",
                            description="Write a new network key to FILE (mode 0600). Copy "
                                        "it to every machine of the network and run each "
                                        "node with --network-key FILE.")
    keygen.add_argument("--network", type=Path, required=True, metavar="FILE",
                        help="where to write the key (an existing file is not overwritten)")

    send = sub.add_parser("send", help="publish messages",
                          description="Publish TEXT as one message; without TEXT, publish "
                                      "each line of standard input as a message.")
    _add_client_flags(send)
    send.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default {DEFAULT_TOPIC!r}")
    send.add_argument("--to", default=None, metavar="NODE_ID",
                      help="deliver only at this node (a direct message)")
    send.add_argument("text", nargs="*", metavar="TEXT")

    recv = sub.add_parser("recv", help="print messages as they arrive",
                          description="Subscribe and print messages as they arrive.")
    _add_client_flags(recv)
    recv.add_argument("--topic", action="append", default=[], metavar="T",
                      help=f"a topic to receive (repeatable; default {DEFAULT_TOPIC!r}; "
                           "'*' for all topics)")
    recv.add_argument("--count", type=int, default=None, metavar="N",
                      help="exit after N messages")
    recv.add_argument("--json", action="store_true", help="print each event as a JSON line")
    recv.add_argument("--since", default=None, metavar="ID|TIME",
                      help="first replay the messages of the node's history after this "
                           "message id, or since this time: Unix seconds, ISO 8601 "
                           "(2026-11-25T10:00:00) or a duration ago (90s, 5m, 2h, 1d)")

    for name, text in (("peers", "list the linked peers"),
                       ("status", "summarise the node's state, links, rates and drops")):
        p = sub.add_parser(name, help=text, description=text.capitalize() + ".")
        _add_client_flags(p)
        p.add_argument("--json", action="store_true",
                       help="print the node's reply as JSON" if name == "status" else
                       "print JSON")
    sub.choices["status"].add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS",
        help="measure rates over this many seconds (default 1); 0: average them over "
             "the node's uptime, and answer at once")
    monitor = sub.add_parser(
        "monitor", help="stream the node's logs and events",
        description="Print the node's log records, link changes and (with --messages) "
                    "message deliveries as they happen, until Ctrl-C.")
    _add_client_flags(monitor)
    monitor.add_argument("--level", choices=LOG_LEVELS, default="info",
                         help="the lowest log level to show (default info; the node "
                              "sends only what passes its own --log-level)")
    monitor.add_argument("--messages", action="store_true",
                         help="also show every message the node delivers (no payload)")
    monitor.add_argument("--json", action="store_true", help="print each event as JSON")
    monitor.add_argument("--count", type=int, default=None, metavar="N",
                         help="exit after N events")
    mesh = sub.add_parser(
        "mesh", help="show the whole mesh as this node sees it",
        description="Print the nodes of the mesh and their links, as this node knows them "
                    "from the link lists every node shares (every 30 s, and soon after a "
                    "link changes), with when each node was last heard of.")
    _add_client_flags(mesh)
    out = mesh.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the node's reply as JSON")
    out.add_argument("--dot", action="store_true",
                     help="print a Graphviz graph (render with: dot -Tsvg -o mesh.svg)")
    out.add_argument("--png", type=Path, metavar="FILE",
                     help="draw the mesh to FILE (needs matplotlib and networkx: "
                          "pip install 'p2pnode[sim]')")
    peers = sub.choices["peers"]
    peers.add_argument("--wait-min", type=int, default=None, metavar="N",
                       help="first wait until the node has at least N peers")
    peers.add_argument("--wait-max", type=int, default=None, metavar="N",
                       help="first wait until the node has at most N peers")
    peers.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long --wait-min/--wait-max may wait (default 10; "
                            "exit 1 when it runs out)")
    for command in sub.choices.values():  # "--socket (default: see below)"
        command.epilog = command.epilog or EPILOG
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _add_run_flags(run: argparse.ArgumentParser) -> None:
    """``run``'s flags. Their defaults are None: a flag not given leaves the value to
    the environment, the configuration file or the default (``configfile``)."""
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="read settings from this TOML file (default $P2PNODE_CONFIG; "
                          "flags and P2PNODE_* variables override it)")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help=f"TCP address to accept links on (default 0.0.0.0:{DEFAULT_PORT}; "
                          "port 0 picks a free port)")
    _add_socket(run)
    run.add_argument("--peer", action="append", metavar="HOST[:PORT]",
                     help=f"a node to link to and keep linked (repeatable; "
                          f"port defaults to {DEFAULT_PORT})")
    run.add_argument("--name", help="a human name for this node (default: the host name)")
    run.add_argument("--data-dir", type=Path, metavar="DIR",
                     help=f"where the node keeps its identity (default {default_data_dir()})")
    run.add_argument("--no-mdns", action="store_const", const=True,
                     help="do not use mDNS discovery")
    run.add_argument("--mdns-interface", action="append", metavar="IP",
                     help="use mDNS only on the interface with this address (repeatable)")
    run.add_argument("--advertise", metavar="HOST",
                     help="the address announced to peers (default: the listen address)")
    run.add_argument("--max-hops", type=int, metavar="N",
                     help="how many links a message travels at most (default 32)")
    run.add_argument("--gossip", choices=["tree", "flood"],
                     help="how messages spread: broadcast trees, about one copy per node "
                          "(default), or flooding, a copy over every link")
    run.add_argument("--history-bytes", type=int, metavar="N",
                     help="recent messages kept for repair and replay (recv --since), at "
                          f"most N bytes (default {NodeConfig.history_bytes}; 0: none)")
    run.add_argument("--history-age", type=float, metavar="SECONDS",
                     help="... and for at most this long (default "
                          f"{NodeConfig.history_age:g}, at most {NodeConfig.seen_ttl:g})")
    run.add_argument("--order-hold", type=float, metavar="SECONDS",
                     help="hold an origin's later messages this long while a missing "
                          f"earlier one is repaired (default {NodeConfig.order_hold:g})")
    run.add_argument("--network-key", type=Path, metavar="FILE",
                     help="join the network this key file defines (made by `p2pnode keygen "
                          "--network FILE`); without it the node is on the open network: "
                          "links are encrypted, but any node may join")
    run.add_argument("--insecure", action="store_const", const=True,
                     help="plaintext links without TLS (debugging only; such a node can "
                          "link only to other --insecure nodes)")
    run.add_argument("--api-group", metavar="GROUP",
                     help="also admit local apps running as members of GROUP (the socket "
                          "becomes mode 0660, group GROUP); by default only this user")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    run.add_argument("--log-format", choices=LOG_FORMATS,
                     help="text: key=value lines (default); json: one JSON object per line")
    run.add_argument("--metrics", metavar="HOST:PORT",
                     help="serve the status counters in Prometheus format at "
                          "http://HOST:PORT/metrics (default off)")


async def run_node(settings: RunSettings) -> None:
    """Run a node until SIGINT or SIGTERM, then leave gracefully."""
    from ..node.node import Node

    config, fmt = settings.node, settings.log_format
    node = Node(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            announce(fmt, f"node {config.name} ({node.node_hex}) listening on "
                     f"{node.listen_str}, socket {config.socket_path}", node_id=node.node_hex,
                     name=config.name, listen=node.listen_str, socket=config.socket_path)
            announce(fmt, security_summary(node))
            if settings.metrics is not None:
                host, port = await nursery.start(serve_metrics, *settings.metrics,
                                                 node.status_info)
                announce(fmt, f"metrics on http://{format_hostport(host, port)}/metrics",
                         metrics=format_hostport(host, port))
            notify(f"READY=1\nSTATUS=listening on {node.listen_str}")
            async for signum in signals:
                logging.getLogger("p2pnode").info("signal %d: leaving", signum)
                break
            notify("STOPPING=1")
            await node.stop()
            nursery.cancel_scope.cancel()  # the metrics server


def security_summary(node: Node) -> str:
    """One line that says how this node's links are protected."""
    if node.config.insecure:
        return ("WARNING: --insecure: links are plaintext and unauthenticated; "
                "use only for debugging")
    if node.network.is_open:
        return ("open network: links are encrypted (TLS 1.3), but any node may join; "
                "use --network-key to admit only members")
    return f"network {node.network_tag}: links are encrypted and admit only members"


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
    if args.count is not None and args.count < 1:
        raise P2PError("--count must be at least 1")
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
        received = 0
        async for event in client.events():
            if event.get("event") == "dropped":
                print(f"p2pnode: {event.get('count')} messages were dropped: this receiver "
                      "did not keep up", file=sys.stderr, flush=True)
                continue
            if args.json:
                line = json.dumps(event)
            else:
                line = event_payload(event).decode("utf-8", "backslashreplace")
            print(line, flush=True)
            received += 1
            if args.count is not None and received >= args.count:
                break
    return 0


async def cmd_monitor(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise P2PError("--count must be at least 1")
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        await client.monitor(args.level, args.messages)
        print(f"p2pnode: monitoring {client_path(args.socket)} (level {args.level}"
              f"{', messages' if args.messages else ''})", file=sys.stderr, flush=True)
        shown = 0
        async for event in client.events():
            line = json.dumps(event) if args.json else monitor_line(event, args.level)
            if line is None:
                continue
            print(line, flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                break
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


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "keygen":
            key = generate_network_key(args.network)
            print(f"p2pnode: wrote network key {args.network} (network {key.tag}); copy it "
                  f"to each machine and run: p2pnode run --network-key {args.network}")
            return 0
        if args.command == "run":
            settings = build_settings(gather(args, os.environ))
            setup_logging(settings.log_level, settings.log_format)
            trio.run(run_node, settings)
            return 0
        handler = {"send": cmd_send, "recv": cmd_recv, "monitor": cmd_monitor,
                   "mesh": cmd_mesh}.get(
            args.command, cmd_info)
        return trio.run(handler, args)
    except BaseExceptionGroup as group:
        leaf = single_error(group)
        if leaf is group:
            raise
        raise leaf from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``p2pnode`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except SettingsError as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
        return 2
    except (P2PError, ApiReplyError) as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        where = exc.filename or getattr(args, "socket", None) or default_socket_path()
        print(f"p2pnode: error: no node at the socket {where} ({exc.strerror}); "
              "is `p2pnode run` running, and is --socket right?", file=sys.stderr)
    except PermissionError as exc:
        where = exc.filename or getattr(args, "socket", None) or default_socket_path()
        print(f"p2pnode: error: no access to the socket {where} ({exc.strerror}): it or its "
              "directory belongs to another user; run this as the node's user (or a member "
              "of its --api-group)", file=sys.stderr)
    except OSError as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
    except trio.EndOfChannel as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1

