"""The ``p2pnode`` command line: its subcommands and flags (``build_parser``)."""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, cast

from .. import __version__
from ..config.file import LOG_FORMATS, LOG_LEVELS
from ..config.settings import (
    DEFAULT_PORT,
    DEFAULT_TOPIC,
    NodeConfig,
    default_data_dir,
    default_socket_path,
)
from ..ids import parse_id
from ..members.service import STATES

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

class Parser(argparse.ArgumentParser):
    """An argument parser whose errors say more: ``--wait-min must be >= 0, not -1``,
    how to give a value that begins with ``-``, and (``parse_command_line``) a
    mistyped flag reported with its command's usage and the nearest flag."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        if m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: (must .*)", message):
            message = f"{m[1]} {m[2]}"
        elif m := re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected one argument", message):
            message += (f" (a value that begins with '-' must be attached with '=': "
                        f"{m[1]}=VALUE)")
        super().error(message)


def parse_command_line(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``p2pnode``'s arguments (exit status 2 and a usage message on a mistake).
    ``recv --since -5m`` is read as ``--since=-5m``; an unknown flag is reported with the
    usage of its command, and the flag it is nearest to."""
    parser = build_parser()
    args = _attach_dash_values(list(sys.argv[1:] if argv is None else argv))
    namespace, extras = parser.parse_known_args(args)
    if extras:
        command = parser.commands.get(getattr(namespace, "command", ""), parser)
        known = [o for action in command._actions for o in action.option_strings]
        hints = [close[0] for e in extras
                 if (close := difflib.get_close_matches(e.split("=")[0], known, 1))]
        command.error(f"unrecognized arguments: {' '.join(extras)}"
                      + (f" (did you mean {', '.join(hints)}?)" if hints else ""))
    return namespace


#: A relative time such as ``-5m`` or ``-90s``, which argparse would take for a flag.
_DASH_DURATION = re.compile(r"-\d+(\.\d+)?[smhd]?")


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--since -5m`` as ``--since=-5m`` (before ``--``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] == "--since" and i + 1 < len(argv) and _DASH_DURATION.fullmatch(argv[i + 1]):
            out.append(f"--since={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def number(kind: Callable[[str], float], low: float, high: float | None = None
           ) -> Callable[[str], float]:
    """An argparse type: an int or float (``kind``) from ``low`` to ``high``."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, not {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def node_id(text: str) -> str:
    """An argparse type: a node id (32 hex digits)."""
    try:
        parse_id(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a node id: 32 hex digits, as `p2pnode peers` shows, not {text!r}"
        ) from None
    return text.lower()


def build_parser() -> Parser:
    """The argument parser of the ``p2pnode`` command."""
    parser = Parser(
        prog="p2pnode", description="A peer-to-peer messaging node for local networks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pnode {__version__}")
    # The commands' parsers are ``Parser``s too (argparse makes them of the parent's class).
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    parser.commands = sub.choices
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
    check = sub.add_parser("check-config", help="check a configuration file",
                           description="Check a configuration file as `p2pnode run --config "
                                       "FILE` would (with the P2PNODE_* variables), without "
                                       "starting a node; print the settings it gives, or "
                                       "every problem (exit status 1).")
    check.add_argument("file", type=Path, metavar="FILE", help="the TOML file to check")
    _add_send_recv(sub)
    _add_peers_status(sub)
    _add_monitor_mesh(sub)
    _add_request_serve(sub)
    _add_store(sub)
    _add_members(sub)
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
    send.add_argument("--to", type=node_id, default=None, metavar="NODE_ID",
                      help="deliver only at this node (a direct message)")
    send.add_argument("--retain", action="store_true",
                      help="make it the topic's retained message, which subscribers get "
                           "first (an empty TEXT, '', clears it)")
    send.add_argument("text", nargs="*", metavar="TEXT")
    recv = _client_command(
        sub, "recv", help="print messages as they arrive",
        description="Subscribe and print messages as they arrive, one line each: the\n"
                    "topic, the origin (the publishing node's name, or the start of its\n"
                    "id) and the payload, separated by tabs; newlines, tabs and\n"
                    "backslashes in them are escaped as \\n, \\t and \\\\.")
    recv.add_argument("--topic", action="append", default=[], metavar="T",
                      help=f"a topic to receive (repeatable; default {DEFAULT_TOPIC!r}; "
                           "'*' for all topics), or a pattern: '+' matches one level, "
                           "'#' the rest (sensors/+/temperature, sensors/#)")
    recv.add_argument("--count", type=number(int, 1), default=None, metavar="N",
                      help="exit after N messages")
    mode = recv.add_mutually_exclusive_group()
    mode.add_argument("--data", action="store_true",
                      help="print only each message's payload, as it is (for pipelines)")
    mode.add_argument("--json", action="store_true", help="print each event as a JSON line")
    recv.add_argument("--reconnect", action="store_true",
                      help="when the node stops, wait for it (retrying for up to 5 "
                           "minutes) and go on where it was, nothing missed or repeated")
    recv.add_argument("--durable", default=None, metavar="NAME",
                      help="a durable subscription (kept by the node's message store): "
                           "resume after the last message acked under NAME, and ack each "
                           "message once it is printed")
    recv.add_argument("--no-retained", dest="retained", action="store_false",
                      help="do not print the topics' retained messages first")
    recv.add_argument("--since", default=None, metavar="ID|TIME",
                      help="first replay the messages of the node's history after this "
                           "message id, or since this time: Unix seconds, ISO 8601 "
                           "(2026-11-25T10:00:00) or a duration ago (90s, 5m, 2h, 1d; "
                           "-5m too)")


def _add_peers_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "list the linked peers"
    peers = _client_command(sub, "peers", help=text, description=text.capitalize() + ".")
    peers.add_argument("--json", action="store_true", help="print JSON")
    peers.add_argument("--wait-min", type=number(int, 0), default=None, metavar="N",
                       help="first wait until the node has at least N peers")
    peers.add_argument("--wait-max", type=number(int, 0), default=None, metavar="N",
                       help="first wait until the node has at most N peers")
    peers.add_argument("--timeout", type=number(float, 0, 3600), default=10.0,
                       metavar="SECONDS",
                       help="how long --wait-min/--wait-max may wait (default 10; "
                            "exit 1 when it runs out)")
    text = "summarise the node's state, links, rates and drops"
    status = _client_command(sub, "status", help=text, description=text.capitalize() + ".")
    status.add_argument("--json", action="store_true", help="print the node's reply as JSON")
    status.add_argument(
        "--interval", type=number(float, 0, 3600), default=1.0, metavar="SECONDS",
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
    monitor.add_argument("--count", type=number(int, 1), default=None, metavar="N",
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


def _add_request_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    request = _client_command(
        sub, "request", help="ask the apps that serve a topic; print their replies",
        description="Send DATA as a request on a topic to the apps that serve it on every "
                    "node (p2pnode serve, or an app), and print each reply as NAME: DATA, "
                    "until --max-replies came or --timeout passed. Without DATA, the "
                    "request's data is standard input. Exit status 1 when no reply came "
                    "(or only error replies).")
    request.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default {DEFAULT_TOPIC!r}")
    request.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                         help="how long to wait for replies (default 5; at most the "
                              f"node's maximum, {NodeConfig.request_timeout_max:g})")
    request.add_argument("--max-replies", type=int, default=1, metavar="N",
                         help="stop waiting once N replies came (default 1)")
    request.add_argument("--json", action="store_true", help="print each reply as a JSON line")
    request.add_argument("text", nargs="*", metavar="DATA")
    serve = _client_command(
        sub, "serve", help="answer the requests on a topic with a command",
        description="Answer the requests on a topic: run COMMAND for each, with the "
                    "request's data on its standard input; its standard output is the "
                    "reply. A command that fails (a non-zero exit), runs over "
                    "--command-timeout or writes over --max-output answers with an error "
                    "reply. Runs until Ctrl-C. Put -- before COMMAND.")
    serve.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default {DEFAULT_TOPIC!r}")
    serve.add_argument("--command-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="kill a command that runs longer (default 10)")
    serve.add_argument("--max-output", type=int, default=65536, metavar="BYTES",
                       help="the most a command may write as its reply (default 65536)")
    serve.add_argument("--concurrency", type=int, default=4, metavar="N",
                       help="commands run at once at most (default 4); more requests wait "
                            "their turn")
    serve.add_argument("--count", type=int, default=None, metavar="N",
                       help="exit after answering N requests")
    serve.add_argument("argv", nargs="*", metavar="COMMAND [ARG ...]")


def _add_store(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = _client_command(
        sub, "store", help="show what the node's message store holds",
        description="Show the node's message store: its size, the oldest and newest "
                    "message, messages per origin, durable subscriptions and their lag. "
                    "Asks the running node; with --data-dir or --file, reads a stopped "
                    "node's store file instead, read-only.")
    store.add_argument("--json", action="store_true", help="print the report as JSON")
    where = store.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                       help="read the store of the stopped node whose data directory is DIR")
    where.add_argument("--file", type=Path, default=None, metavar="PATH",
                       help="read the store file PATH (a node's --store FILE)")


def _add_members(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    members = _client_command(
        sub, "members", help="list the members of the mesh, with their tags and state",
        description="List the members of the mesh as this node knows them, this node "
                    "included: id, name, state (alive, suspect, dead, left), addresses "
                    "and tags.")
    members.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                         help="only members with this tag (repeatable: all of them)")
    members.add_argument("--state", action="append", default=[], choices=STATES,
                         help="only members in this state (repeatable: any of them)")
    members.add_argument("--json", action="store_true", help="print the members as JSON")
    tags = _client_command(
        sub, "tags", help="show or change this node's tags",
        description="Set and delete tags of the running node (they travel to every "
                    "member), then print its tags. Without flags, print them. Tags "
                    "given to `p2pnode run --tag` come back at the node's next start.")
    tags.add_argument("--json", action="store_true", help="print the tags as JSON")
    tags.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="set this tag (repeatable)")
    tags.add_argument("--delete", action="append", default=[], metavar="KEY",
                      help="delete this tag (repeatable)")


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
    run.add_argument("--tag", action="append", metavar="KEY=VALUE",
                     help="a tag that tells the mesh about this node, such as role=display "
                          "(repeatable; at most 32)")
    run.add_argument("--data-dir", type=Path, metavar="DIR",
                     help=f"where the node keeps its identity (default {default_data_dir()})")
    run.add_argument("--no-mdns", action="store_const", const=True,
                     help="do not use mDNS discovery")
    run.add_argument("--mdns-interface", action="append", metavar="IP",
                     help="use mDNS only on the interface with this address (repeatable)")
    run.add_argument("--no-peer-exchange", action="store_const", const=True,
                     help="link only to --peer and mDNS nodes, not to members learned "
                          "from the member list")
    run.add_argument("--advertise", metavar="HOST",
                     help="the address announced to peers (default: the listen address)")
    run.add_argument("--max-hops", type=int, metavar="N",
                     help="how many links a message travels at most (default 32)")
    run.add_argument("--gossip", choices=["tree", "flood", "interest"],
                     help="how messages spread: broadcast trees, about one copy per node "
                          "(default), flooding, a copy over every link, or interest "
                          "routing, only toward nodes that subscribe (docs/interest.md)")
    run.add_argument("--history-bytes", type=int, metavar="N",
                     help="recent messages kept for repair and replay (recv --since), at "
                          f"most N bytes (default {NodeConfig.history_bytes}; 0: none)")
    run.add_argument("--history-age", type=float, metavar="SECONDS",
                     help="... and for at most this long (default "
                          f"{NodeConfig.history_age:g}, at most {NodeConfig.seen_ttl:g})")
    run.add_argument("--order-hold", type=float, metavar="SECONDS",
                     help="hold an origin's later messages this long while a missing "
                          f"earlier one is repaired (default {NodeConfig.order_hold:g})")
    run.add_argument("--retained-max-topics", type=int, metavar="N",
                     help="keep retained messages on at most N topics (default "
                          f"{NodeConfig.retained_max_topics}; 0: none)")
    run.add_argument("--retained-max-bytes", type=int, metavar="N",
                     help="... and at most N bytes of them (default "
                          f"{NodeConfig.retained_max_bytes})")
    _add_store_flags(run)
    _add_run_service_flags(run)


def _add_store_flags(run: argparse.ArgumentParser) -> None:
    """``run``'s flags for the message store on disk (docs/store.md)."""
    run.add_argument("--store", metavar="sqlite|none|FILE",
                     help="keep every message on disk, in the data directory (sqlite, the "
                          "default) or in FILE, so that history, `recv --since` and durable "
                          "subscriptions survive restarts; none: history in memory only")
    run.add_argument("--store-age", type=float, metavar="SECONDS",
                     help="keep stored messages this long after their publication (default "
                          f"{NodeConfig.store_age:g})")
    run.add_argument("--store-bytes", type=int, metavar="N",
                     help=f"... in at most N bytes (default {NodeConfig.store_bytes}; 0: "
                          "no limit)")
    run.add_argument("--sync", choices=["off", "normal", "full"],
                     help="when a publish is confirmed: once stored and safe from a crash of "
                          "the node (normal, the default), also from a power loss (full), "
                          "or at once (off)")
    run.add_argument("--max-durables", type=int, metavar="N",
                     help="durable subscriptions the store keeps at most (default "
                          f"{NodeConfig.max_durables})")
    run.add_argument("--durable-max-unacked", type=int, metavar="N",
                     help="messages a durable subscriber may have delivered and not acked "
                          f"at most (default and highest max_unacked: "
                          f"{NodeConfig.durable_max_unacked})")


def _add_run_service_flags(run: argparse.ArgumentParser) -> None:
    """``run``'s flags for membership, local apps, logs and metrics (see above)."""
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
                          "http://HOST:PORT/metrics, and health at /healthz (default off)")
    run.add_argument("--on-event", action="append", metavar="KIND=PATH",
                     help="run the program PATH on each member event KIND (member_join, "
                          "member_update, member_suspect, member_dead, member_left; "
                          "member_* for all), the event in its environment and on its "
                          "standard input (repeatable)")
    run.add_argument("--event-timeout", type=float, metavar="SECONDS",
                     help="kill an --on-event program still running after this long "
                          f"(default {NodeConfig.event_timeout:g})")
    run.add_argument("--health-min-links", type=int, metavar="N",
                     help="GET /healthz answers 503 while the node has fewer than N links "
                          "(default 0: healthy whenever it serves its socket)")

