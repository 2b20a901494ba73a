"""The ``p2pnode`` command line: its subcommands and flags (``build_parser``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..config.file import LOG_FORMATS, LOG_LEVELS
from ..config.settings import (
    DEFAULT_PORT,
    DEFAULT_TOPIC,
    NodeConfig,
    default_data_dir,
    default_socket_path,
)

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
    _add_send_recv(sub)
    _add_peers_status(sub)
    _add_monitor_mesh(sub)
    for command in sub.choices.values():  # "--socket (default: see below)"
        command.epilog = command.epilog or EPILOG
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", type=Path, default=None, metavar="PATH",
                   help="the node's local API socket (default: see below)")


def _client_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                    *, help: str, description: str) -> argparse.ArgumentParser:
    """A command that talks to a node, with the flags of every such command: where the
    node is, and whom to trust."""
    p = sub.add_parser(name, help=help, description=description)
    _add_socket(p)
    p.add_argument("--server-user", default=None, metavar="USER",
                   help="also talk to a node run by this user (a name or uid; default "
                        "$P2PNODE_SERVER_USER). Without it, a socket served by anyone but "
                        "you or root is refused")
    return p


def _add_send_recv(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = _client_command(sub, "send", help="publish messages",
                           description="Publish TEXT as one message; without TEXT, publish "
                                       "each line of standard input as a message.")
    send.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default {DEFAULT_TOPIC!r}")
    send.add_argument("--to", default=None, metavar="NODE_ID",
                      help="deliver only at this node (a direct message)")
    send.add_argument("text", nargs="*", metavar="TEXT")
    recv = _client_command(sub, "recv", help="print messages as they arrive",
                           description="Subscribe and print messages as they arrive.")
    recv.add_argument("--topic", action="append", default=[], metavar="T",
                      help=f"a topic to receive (repeatable; default {DEFAULT_TOPIC!r}; "
                           "'*' for all topics), or a pattern: '+' matches one level, "
                           "'#' the rest (sensors/+/temperature, sensors/#)")
    recv.add_argument("--count", type=int, default=None, metavar="N",
                      help="exit after N messages")
    recv.add_argument("--json", action="store_true", help="print each event as a JSON line")
    recv.add_argument("--since", default=None, metavar="ID|TIME",
                      help="first replay the messages of the node's history after this "
                           "message id, or since this time: Unix seconds, ISO 8601 "
                           "(2026-11-25T10:00:00) or a duration ago (90s, 5m, 2h, 1d)")


def _add_peers_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "list the linked peers"
    peers = _client_command(sub, "peers", help=text, description=text.capitalize() + ".")
    peers.add_argument("--json", action="store_true", help="print JSON")
    peers.add_argument("--wait-min", type=int, default=None, metavar="N",
                       help="first wait until the node has at least N peers")
    peers.add_argument("--wait-max", type=int, default=None, metavar="N",
                       help="first wait until the node has at most N peers")
    peers.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long --wait-min/--wait-max may wait (default 10; "
                            "exit 1 when it runs out)")
    text = "summarise the node's state, links, rates and drops"
    status = _client_command(sub, "status", help=text, description=text.capitalize() + ".")
    status.add_argument("--json", action="store_true", help="print the node's reply as JSON")
    status.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS",
        help="measure rates over this many seconds (default 1); 0: average them over "
             "the node's uptime, and answer at once")


def _add_monitor_mesh(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = _client_command(
        sub, "monitor", help="stream the node's logs and events",
        description="Print the node's log records, link changes and (with --messages) "
                    "message deliveries as they happen, until Ctrl-C.")
    monitor.add_argument("--level", choices=LOG_LEVELS, default="info",
                         help="the lowest log level to show (default info; the node "
                              "sends only what passes its own --log-level)")
    monitor.add_argument("--messages", action="store_true",
                         help="also show every message the node delivers (no payload)")
    monitor.add_argument("--json", action="store_true", help="print each event as JSON")
    monitor.add_argument("--count", type=int, default=None, metavar="N",
                         help="exit after N events")
    mesh = _client_command(
        sub, "mesh", help="show the whole mesh as this node sees it",
        description="Print the nodes of the mesh and their links, as this node knows them "
                    "from the link lists every node shares (every 30 s, and soon after a "
                    "link changes), with when each node was last heard of.")
    out = mesh.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the node's reply as JSON")
    out.add_argument("--dot", action="store_true",
                     help="print a Graphviz graph (render with: dot -Tsvg -o mesh.svg)")
    out.add_argument("--png", type=Path, metavar="FILE",
                     help="draw the mesh to FILE (needs matplotlib and networkx: "
                          "pip install 'p2pnode[sim]')")


def _add_run_flags(run: argparse.ArgumentParser) -> None:
    """``run``'s flags. Their defaults are None: a flag not given leaves the value to
    the environment, the configuration file or the default (``config.file``)."""
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

