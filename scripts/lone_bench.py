#!/usr/bin/env python3
"""A lone request's round trip, this code against another version of it, interleaved.

    lone_bench.py [--base DIR] [--store none|sqlite] [--rounds R] [--block N]
                  [--line JSON] [--json]

Starts a pair of ``p2pnode run`` nodes with TLS (``scripts/bench.py``'s ``Cluster``,
B dialling A) running this checkout's code, and, with ``--base DIR``, a second pair
running the ``p2pnode`` package found in DIR (put first on their ``PYTHONPATH``: e.g.
``git archive COMMIT p2pnode | tar -x -C DIR``), plus the trio echo server of
``scripts/client_bench.py``. Then, ``--rounds`` times, ``--block`` lone requests (each
sent 0.5 ms after the previous answer, ``client_bench.lone_rtt_us``) to node A of
each pair in turn (the order alternates by round) and to the echo server. Reports the
medians of the blocks' median round trips, how many blocks of the new code were
faster, and node A's CPU time per request (user and system, every thread, from
``/proc``: it includes the kernel's part of the wake-ups). Loopback only; run it inside
``unshare -n sh -c 'ip link set lo up && ...'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster
import client_bench  # scripts/client_bench.py: the echo server, lone_rtt_us


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system, every thread) process ``pid`` used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster(stack: contextlib.ExitStack, flags: list[str], path: str | None) -> bench.Cluster:
    """A pair of nodes; ``path``: where their ``p2pnode`` package comes from."""
    old = os.environ.get("PYTHONPATH")
    if path is not None:
        os.environ["PYTHONPATH"] = path
    try:
        return stack.enter_context(bench.Cluster(2, [(1, 0)], insecure=False, node_args=flags))
    finally:
        if path is not None:
            if old is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = old


def measure(args: argparse.Namespace) -> dict[str, Any]:
    flags = ["--store", "none"] if args.store == "none" else ["--sync", "normal"]
    line = args.line.encode() + b"\n"
    rtt: dict[str, list[float]] = {"new": [], "base": []}
    cpu: dict[str, list[float]] = {"new": [], "base": []}
    echo: list[float] = []
    with contextlib.ExitStack() as stack:
        pairs = {"new": cluster(stack, flags, None)}
        if args.base:
            pairs["base"] = cluster(stack, flags, str(Path(args.base).resolve()))
        echo_path = stack.enter_context(client_bench.echo_server())
        nodes = {k: c.nodes[0] for k, c in pairs.items()}
        for node in nodes.values():  # warm-up
            client_bench.lone_rtt_us(str(node.socket), line, 100, args.timeout)
        for r in range(args.rounds):
            for kind in (list(nodes) if r % 2 == 0 else list(nodes)[::-1]):
                before = cpu_s(nodes[kind].proc.pid)
                rtt[kind].append(client_bench.lone_rtt_us(str(nodes[kind].socket), line,
                                                          args.block, args.timeout))
                cpu[kind].append((cpu_s(nodes[kind].proc.pid) - before) / args.block * 1e6)
            echo.append(client_bench.lone_rtt_us(echo_path, line, args.block, args.timeout))
    out: dict[str, Any] = {"echo_rtt_us": round(statistics.median(echo), 1)}
    for kind in nodes:
        prefix = "" if kind == "new" else "base_"
        out[prefix + "request_rtt_us"] = round(statistics.median(rtt[kind]), 1)
        out[prefix + "cpu_us_per_request"] = round(statistics.median(cpu[kind]), 1)
        out[prefix + "blocks_us"] = [round(x) for x in rtt[kind]]
    out["request_to_echo"] = round(out["request_rtt_us"] / out["echo_rtt_us"], 2)
    if args.base:
        out["new_faster_blocks"] = sum(n < b for n, b in zip(rtt["new"], rtt["base"], strict=True))
    out["params"] = {"store": args.store, "rounds": args.rounds, "block": args.block,
                     "line": args.line, "base": args.base,
                     "load_average": round(os.getloadavg()[0], 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="a directory holding the p2pnode package to compare with")
    ap.add_argument("--store", choices=["none", "sqlite"], default="none",
                    help="the nodes' store: none, or sqlite with --sync normal")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block", type=int, default=300, help="lone requests per block")
    ap.add_argument("--line", default='{"op":"publish","topic":"rtt","data":"x"}',
                    help="the request (one JSON line)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.block < 1:
        ap.error("--rounds and --block must be at least 1")
    return run_and_print("lone_bench", measure, args)


def run_and_print(name: str, measure: Callable[[argparse.Namespace], dict[str, Any]],
                  args: argparse.Namespace) -> int:
    """Run ``measure(args)`` and print its report (one JSON object with ``--json``, else a
    line per key); a ``BenchError`` is printed as ``name: ...``, exit status 1."""
    try:
        out = measure(args)
    except bench.BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
