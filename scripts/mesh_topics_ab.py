#!/usr/bin/env python3
"""mesh10_topics and mesh10 of this code against another build of p2pnode, in one run.

    mesh_topics_ab.py --base DIR [--rounds R] [--messages N] [--mesh-messages M]
                      [--static] [--json]

``scripts/mesh_topics.py`` compares interest routing with mesh10 on the same code; a
change that makes mesh10 faster too moves that ratio less than the change itself. This
script runs, in the same invocation, four clusters of bench.py's mesh10 shape: one
``--gossip interest`` and one ``--gossip tree`` running this checkout's code, and the
same two running the ``p2pnode`` package found in ``--base DIR`` (put first on their
``PYTHONPATH``: e.g. ``git archive main p2pnode | tar -x -C DIR``).
Each round runs mesh10_topics (mesh_topics.py's figure: 10 publishers, each node's
subscriber on one topic of 10) on both interest clusters and mesh10 (bench.py's: one
publisher, every node subscribed) on both tree clusters, the order alternating from
round to round; medians are kept. Reported: msgs/s and the nodes' CPU per message of
each, ``interest`` new / base, ``mesh10`` new / base, and interest / mesh10 for each
build and across them (this code's interest against the base's mesh10). Every message
must reach its subscribers exactly once, as in mesh_topics.py. Loopback only: run it
inside ``unshare -n sh -c 'ip link set lo up && ...'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster, mesh10
import mesh_topics as mt

KINDS = ("interest", "mesh10")


def clusters(stack: contextlib.ExitStack, base: str, extra: list[str]
             ) -> dict[str, dict[str, bench.Cluster]]:
    """The four clusters: {"new"|"base": {"interest"|"tree": cluster}}; the base's
    nodes import the ``p2pnode`` package in ``base`` (first on their PYTHONPATH)."""
    edges = bench.mesh_edges(mt.TOPICS)
    old = os.environ.get("PYTHONPATH")
    out: dict[str, dict[str, bench.Cluster]] = {}
    try:
        for build in ("new", "base"):
            if build == "base":
                os.environ["PYTHONPATH"] = base
            out[build] = {mode: stack.enter_context(bench.Cluster(
                mt.TOPICS, edges, False, ["--gossip", mode, *extra]))
                for mode in ("interest", "tree")}
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    problems: list[str] = []
    runs: dict[str, list[tuple[float, float]]] = {
        f"{kind}_{build}": [] for kind in KINDS for build in ("new", "base")}
    load0 = os.getloadavg()
    with contextlib.ExitStack() as stack:
        cl = clusters(stack, args.base, ["--no-peer-exchange"] if args.static else [])
        subs = {}
        for build, pair in cl.items():
            subs[build] = mt.Subscriber(pair["interest"])
            mt.settle(pair["interest"], args.timeout)
            mt.topics_run(pair["interest"], subs[build], min(args.messages, 10_000), 0,
                          args, problems, f"{build} warm-up")
            bench.throughput(pair["tree"], 0, list(range(mt.TOPICS)),
                             min(args.mesh_messages, 1000), args.timeout, problems,
                             f"{build} mesh10 warm-up")
        for r in range(args.rounds):
            for build in ("new", "base") if r % 2 == 0 else ("base", "new"):
                rate, cpu, _ = mt.topics_run(cl[build]["interest"], subs[build],
                                             args.messages, r + 1, args, problems,
                                             f"{build} interest round {r + 1}")
                runs[f"interest_{build}"].append((rate, cpu))
                runs[f"mesh10_{build}"].append(mt.mesh10_run(
                    cl[build]["tree"], args, problems, f"{build} mesh10 round {r + 1}"))
        for sub in subs.values():
            sub.ctrl.send(None)
    return report(runs, args, problems, load0)


def report(runs: dict[str, list[tuple[float, float]]], args: argparse.Namespace,
           problems: list[str], load0: tuple[float, float, float]) -> dict[str, Any]:
    rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}

    def ratio(a: str, b: str) -> float:
        return round(rate[a] / rate[b], 3) if rate[b] else 0.0

    return {
        "msgs_per_s": {k: round(v) for k, v in rate.items()},
        "cpu_us_per_msg": {k: round(v, 1) for k, v in cpu.items()},
        "interest_new_to_base": ratio("interest_new", "interest_base"),
        "mesh10_new_to_base": ratio("mesh10_new", "mesh10_base"),
        "to_mesh10_new": ratio("interest_new", "mesh10_new"),
        "to_mesh10_base": ratio("interest_base", "mesh10_base"),
        "new_interest_to_base_mesh10": ratio("interest_new", "mesh10_base"),
        "runs": {k: [round(r) for r, _ in v] for k, v in runs.items()},
        "params": {"base": args.base, "messages": args.messages,
                   "mesh_messages": args.mesh_messages, "rounds": args.rounds,
                   "static": args.static, "window": args.window},
        "loadavg": {"before": load0, "after": os.getloadavg()},
        "problems": problems, "ok": not problems}


#: The command line: each flag and its ``add_argument`` keywords.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--base", {"required": True,
                "help": "a directory holding the p2pnode package to compare with"}),
    ("--messages", {"type": int, "default": 100_000,
                    "help": "mesh10_topics messages per run (a multiple of 100)"}),
    ("--mesh-messages", {"type": int, "default": 50_000, "help": "mesh10 messages"}),
    ("--rounds", {"type": int, "default": 3, "help": "rounds; medians are kept"}),
    ("--static", {"action": "store_true",
                  "help": "only the --peer links (--no-peer-exchange)"}),
    ("--timeout", {"type": float, "default": 60.0, "help": "bound on each wait"}),
    ("--json", {"action": "store_true", "help": "print one JSON object"}),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, options in OPTIONS:
        ap.add_argument(flag, **options)
    args = ap.parse_args(argv)
    if not (Path(args.base) / "p2pnode").is_dir():
        ap.error(f"--base {args.base}: no p2pnode package there")
    args.base = str(Path(args.base).resolve())
    if args.messages < 100 or args.messages % 100 or args.rounds < 1 \
            or args.mesh_messages < 1:
        ap.error("--messages must be a positive multiple of 100, --rounds and "
                 "--mesh-messages at least 1")
    args.publishers, args.window = mt.TOPICS, bench.WINDOW
    signal.signal(signal.SIGTERM, bench._terminate)  # so that clean-up runs
    out = measure(args)
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
