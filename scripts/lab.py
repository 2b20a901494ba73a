#!/usr/bin/env python3
"""A lab of p2pnode hosts on one machine, in Linux network namespaces (needs root).

    lab.py create --hosts 5 [--subnet 10.77.0.0/24] [--node-args "--no-mdns"]
    lab.py status
    lab.py exec h3 p2pnode peers          # any command, inside h3, P2PNODE_SOCKET set
    lab.py ping h1 h3
    lab.py down h2 / lab.py up h2         # cut / restore h2's link
    lab.py stop h2 / lab.py start h2      # stop (TERM, then KILL) / start h2's node
    lab.py kill h2 --signal STOP|CONT|KILL|TERM|INT
    lab.py destroy [--purge]              # stop the nodes, delete everything (idempotent)

``--prefix NAME`` (default p2plab) names the namespaces (NAME-sw, NAME-h1, ...) and the
lab directory (default /tmp/p2plab-NAME, or ``--lab-dir``). See docs/discovery.md.
The implementation is ``Lab`` in ``scripts/netlab.py``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # p2pnode from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # netlab, beside this script

from netlab import (
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    STATE_FILE,
    Lab,
    LabError,
    environment_problem,
)

SIGNALS = {"STOP": signal.SIGSTOP, "CONT": signal.SIGCONT, "KILL": signal.SIGKILL,
           "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
    parser.add_argument("--lab-dir", type=Path, default=None,
                        help="state, sockets and logs (default /tmp/p2plab-PREFIX)")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create the lab and start a node on every host")
    create.add_argument("--hosts", type=int, required=True, metavar="N")
    create.add_argument("--subnet", default=DEFAULT_SUBNET)
    create.add_argument("--node-args", default="", help="extra 'p2pnode run' arguments")
    create.add_argument("--node-cmd", default=None,
                        help="replace the node command entirely (a stand-in, for testing)")
    create.add_argument("--no-nodes", action="store_true", help="only build the network")
    destroy = sub.add_parser("destroy", help="stop the nodes and delete the lab")
    destroy.add_argument("--purge", action="store_true", help="also delete the lab directory")
    sub.add_parser("status", help="hosts, addresses, links and node pids")
    exec_ = sub.add_parser("exec", help="run a command inside a host")
    exec_.add_argument("host")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER)
    ping = sub.add_parser("ping", help="one ICMP echo from a host to another")
    ping.add_argument("src")
    ping.add_argument("dst")
    for name, text in [("down", "cut a host's link"), ("up", "restore a host's link"),
                       ("stop", "stop a host's node"), ("start", "start a host's node")]:
        sub.add_parser(name, help=text).add_argument("host")
    kill = sub.add_parser("kill", help="send a signal to a host's node")
    kill.add_argument("host")
    kill.add_argument("--signal", default="KILL", choices=sorted(SIGNALS))
    return parser


def lab_dir_of(args: argparse.Namespace) -> Path:
    return args.lab_dir or Path(f"/tmp/p2plab-{args.prefix}")


def cmd_create(args: argparse.Namespace) -> int:
    lab = Lab(args.hosts, prefix=args.prefix, subnet=args.subnet,
              node_args=shlex.split(args.node_args),
              node_cmd=shlex.split(args.node_cmd) if args.node_cmd else None,
              lab_dir=lab_dir_of(args), start_nodes=not args.no_nodes)
    lab.create()
    print(f"lab {args.prefix!r}: {args.hosts} hosts, state in {lab.lab_dir / STATE_FILE}")
    print_status(lab)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    directory = lab_dir_of(args)
    try:
        lab = Lab.load(directory)
    except LabError:  # no state: destroy whatever carries the prefix
        lab = Lab(0, prefix=args.prefix, lab_dir=directory)
    for warning in lab.destroy(purge=args.purge):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"lab {args.prefix!r} destroyed")
    return 0


def print_status(lab: Lab) -> None:
    for row in lab.status():
        node = f"pid {row['pid']}" if row["pid"] else "not running"
        link = "up" if row["link_up"] else "DOWN"
        print(f"{row['host']:>4}  {row['addr']:<15} link {link:<4}  node {node:<14} "
              f"netns {row['netns']}  socket {lab.socket_path(row['host'])}")


def run(args: argparse.Namespace) -> int:
    if args.command == "create":
        return cmd_create(args)
    if args.command == "destroy":
        return cmd_destroy(args)
    lab = Lab.load(lab_dir_of(args))
    if args.command == "status":
        print_status(lab)
    elif args.command == "exec":
        if not args.cmd:
            raise LabError("exec: give a command to run")
        return lab.exec(args.host, args.cmd).returncode
    elif args.command == "ping":
        ok = lab.ping(args.src, args.dst)
        print(f"{args.src} -> {args.dst} ({lab.addr(args.dst)}): {'reply' if ok else 'no reply'}")
        return 0 if ok else 1
    elif args.command in ("down", "up"):
        (lab.link_down if args.command == "down" else lab.link_up)(args.host)
    elif args.command == "stop":
        lab.stop_node(args.host)
    elif args.command == "start":
        print(f"{lab.host(args.host)}: node pid {lab.start_node(args.host)}")
    elif args.command == "kill":
        lab.signal(args.host, SIGNALS[args.signal])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = environment_problem()
    if problem:
        print(f"lab.py: {problem}", file=sys.stderr)
        return 2
    try:
        return run(args)
    except LabError as exc:
        print(f"lab.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
