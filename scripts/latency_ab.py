#!/usr/bin/env python3
"""Latency at 1,000 messages/s through the clients, this code against another version
of it, interleaved.

    latency_ab.py --base DIR [--new DIR] [--kinds trio,asyncio,blocking]
                  [--rounds R] [--messages N] [--client-base] [--json]

Starts two pairs of ``p2pnode run`` nodes with TLS and no store (``scripts/bench.py``'s
``Cluster``, B dialling A): one running the ``p2pnode`` package found in ``--base DIR``
(put first on their ``PYTHONPATH``: e.g. ``git archive COMMIT p2pnode | tar -x -C
DIR``), one this checkout's code, or the package in ``--new DIR``. Then, ``--rounds``
times, for each kind of client, one latency run on each pair in turn (the order
alternates by round): ``client_bench.run_once`` at 1,000 messages/s, ``--messages``
messages, publisher on A and subscriber on B. The clients are started fresh
(``spawn``); with ``--client-base`` each side's clients run that side's code too
(otherwise this checkout's). Reports per kind the medians of the runs' p50 and p99,
the ratio new / base of the p50 medians and how many runs of the new code were faster
than their pair. Run it once with the same package on both sides (``--base`` and
``--new`` the same copy) to see how far apart two identical pairs come out on the
machine at that moment. Loopback only; run it inside ``unshare -n sh -c 'ip link set
lo up && ...'``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client_bench  # scripts/client_bench.py: run_once
import lone_bench  # scripts/lone_bench.py: a pair of nodes from a package directory

KINDS = ("trio", "asyncio", "blocking")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    client_bench.MP = mp.get_context("spawn")  # clients import the code of their side
    kinds = args.kinds
    dirs = {"base": str(Path(args.base).resolve()),
            "new": str(Path(args.new).resolve()) if args.new else None}
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        side: {kind: [] for kind in kinds} for side in dirs}
    with contextlib.ExitStack() as stack:
        pairs = {side: lone_bench.cluster(stack, ["--store", "none"], path)
                 for side, path in dirs.items()}

        def one(side: str, kind: str, n: int) -> dict[str, Any]:
            a, b = (str(node.socket) for node in pairs[side].nodes)
            saved = list(sys.path)
            path = dirs[side]
            if args.client_base and path is not None:
                sys.path.insert(0, path)
            try:
                return client_bench.run_once(kind, a, b, n, 1000.0, args.timeout)
            finally:
                sys.path[:] = saved

        for side in pairs:  # warm-up
            one(side, kinds[0], 300)
        for r in range(args.rounds):
            for kind in kinds:
                for side in (("base", "new") if r % 2 == 0 else ("new", "base")):
                    out = one(side, kind, args.messages)
                    runs[side][kind].append((out["p50_ms"], out["p99_ms"]))
    return report(runs, args)


def report(runs: dict[str, dict[str, list[tuple[float, float]]]],
           args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in args.kinds:
        row: dict[str, Any] = {}
        for side in ("base", "new"):
            p50s = [p50 for p50, _ in runs[side][kind]]
            row[f"{side}_p50_ms"] = round(statistics.median(p50s), 3)
            row[f"{side}_p99_ms"] = round(statistics.median(p99 for _, p99 in runs[side][kind]),
                                          3)
            row[f"{side}_runs_p50_ms"] = [round(x, 3) for x in p50s]
        row["ratio"] = round(row["new_p50_ms"] / row["base_p50_ms"], 3)
        row["new_faster_runs"] = sum(n < b for n, b in zip(
            row["new_runs_p50_ms"], row["base_runs_p50_ms"], strict=True))
        out[kind] = row
    out["params"] = {"base": args.base, "new": args.new, "rounds": args.rounds,
                     "messages": args.messages, "client_base": args.client_base,
                     "load_average": round(os.getloadavg()[0], 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True,
                    help="a directory holding the p2pnode package to compare with")
    ap.add_argument("--new", help="the same for the new side (default: this checkout)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--messages", type=int, default=3000, help="per latency run")
    ap.add_argument("--client-base", action="store_true",
                    help="each side's clients run that side's code")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each run (s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    if not args.kinds or (bad := [k for k in args.kinds if k not in KINDS]):
        ap.error(f"--kinds: one or more of {', '.join(KINDS)}"
                 + (f" (not {', '.join(bad)})" if args.kinds else ""))
    if args.rounds < 1 or args.messages < 10:
        ap.error("--rounds must be at least 1 and --messages at least 10")
    return lone_bench.run_and_print("latency_ab", measure, args)


if __name__ == "__main__":
    sys.exit(main())
