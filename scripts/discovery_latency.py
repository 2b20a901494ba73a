#!/usr/bin/env python3
"""Measure how long a new node takes to get its first mDNS-discovered link.

Builds a 2-host lab of network namespaces (needs root and iproute2; mDNS stays
inside the lab), keeps a node running on h1, then starts and stops the node on
h2 RUNS times. For each run it reports:

- ``start_to_link``: from launching ``p2pnode run`` to h2's first link (includes
  Python's start-up and imports);
- ``ready_to_link``: from the node reporting ready (listening, socket served,
  mDNS announced) to that first link.

Usage: sudo python3 scripts/discovery_latency.py [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # netlab, beside this script

from netlab import Lab, environment_problem

from p2pnode.client import BlockingClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="how many starts (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 1 <= args.runs <= 100:
        parser.error("--runs must be 1-100")
    problem = environment_problem()
    if problem:
        print(f"discovery_latency: {problem}", file=sys.stderr)
        return 2
    start_to_link: list[float] = []
    ready_to_link: list[float] = []
    prefix = f"p2pd-{uuid.uuid4().hex[:6]}"
    with Lab(2, prefix=prefix, subnet="10.232.9.0/24", start_nodes=False) as lab:
        lab.start_node("h1", ready_timeout=10)
        for _ in range(args.runs):
            t0 = time.monotonic()
            lab.start_node("h2", ready_timeout=10)
            t_ready = time.monotonic()
            with BlockingClient(lab.socket_path("h2"), timeout=15) as client:
                client.peers(wait_min=1, wait_timeout=10)
            t_link = time.monotonic()
            start_to_link.append(t_link - t0)
            ready_to_link.append(t_link - t_ready)
            lab.stop_node("h2")
            with BlockingClient(lab.socket_path("h1"), timeout=15) as client:
                client.peers(wait_max=0, wait_timeout=10)
    result = {
        "runs": args.runs,
        "start_to_link_median_ms": round(statistics.median(start_to_link) * 1000, 1),
        "start_to_link_max_ms": round(max(start_to_link) * 1000, 1),
        "ready_to_link_median_ms": round(statistics.median(ready_to_link) * 1000, 1),
        "ready_to_link_max_ms": round(max(ready_to_link) * 1000, 1),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
