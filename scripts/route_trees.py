#!/usr/bin/env python3
"""Measure the interest-routing trees of gossip/routes.py (docs/interest.md).

On a random regular graph (NODES nodes of DEGREE links, seeded), each of TOPICS topics
is subscribed by each node with probability FRACTION, and published from a random
origin. For each: the nodes on the Takahashi-Matsuyama tree (``Routes.tree``) and on
the shortest-path tree from the origin cut to the branches that lead to an interested
node, per interested node; the time to build the graph, to compute a tree
(``next_hops`` at the origin, a cache miss) and to answer from the cache.

Usage: python scripts/route_trees.py [--nodes 1000] [--degree 6] [--topics 100]
       [--fraction 0.02] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.gossip import Routes
from p2pnode.testing import random_regular_edges


def shortest_path_tree(routes: Routes, origin: bytes, interested: frozenset[bytes]) -> int:
    """The nodes on the union of the shortest paths from ``origin`` to each interested
    node (each node's path through its lowest-id parent), the origin included."""
    g = routes.graph
    root = g.index[origin]
    parent = {root: root}
    frontier = [root]
    while frontier:
        nxt = []
        for u in frontier:
            for v in g.adj[u]:
                if v not in parent:
                    parent[v] = u
                    nxt.append(v)
        frontier = nxt
    on = {root}
    for node in interested:
        v = g.index[node]
        while v in parent and v not in on:
            on.add(v)
            v = parent[v]
    return len(on)


def measure(nodes: int, degree: int, topics: int, fraction: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    ids = [rng.randbytes(32) for _ in range(nodes)]
    lists: dict[bytes, set[bytes]] = {node: set() for node in ids}
    for a, b in random_regular_edges(nodes, degree, seed):
        lists[ids[a]].add(ids[b])
        lists[ids[b]].add(ids[a])
    views = {}
    build_ms = []
    for _ in range(5):
        start = time.perf_counter()
        routes = Routes(ids[0], max_cache=topics)
        routes.set_graph(lists)
        routes.graph  # noqa: B018 - built on first use: time it here
        build_ms.append((time.perf_counter() - start) * 1000)
    tm, spt, tree_ms, hit_us, sizes = [], [], [], [], []
    for k in range(topics):
        interested = frozenset(node for node in ids if rng.random() < fraction)
        if not interested:
            continue
        origin = rng.choice(ids)
        view = views.get(origin)
        if view is None:
            view = views[origin] = Routes(origin, max_cache=topics)
            view.set_graph(lists)
            view.graph  # noqa: B018
        start = time.perf_counter()
        view.next_hops(origin, f"t{k}", interested, 0)
        tree_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        view.next_hops(origin, f"t{k}", interested, 0)
        hit_us.append((time.perf_counter() - start) * 1e6)
        tm.append((len(view.tree(origin, interested)) + 1) / len(interested))
        spt.append(shortest_path_tree(view, origin, interested) / len(interested))
        sizes.append(len(interested))
    return {
        "nodes": nodes, "degree": degree, "topics": len(tm), "fraction": fraction,
        "seed": seed, "interested_mean": round(statistics.mean(sizes), 1),
        "tm_per_interested": round(statistics.mean(tm), 2),
        "spt_per_interested": round(statistics.mean(spt), 2),
        "build_ms_median": round(statistics.median(build_ms), 2),
        "tree_ms_median": round(statistics.median(tree_ms), 2),
        "tree_ms_max": round(max(tree_ms), 2),
        "cache_hit_us_median": round(statistics.median(hit_us), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (2 <= args.nodes <= 100_000 and 1 <= args.degree < args.nodes
            and 1 <= args.topics <= 100_000 and 0 < args.fraction <= 1):
        parser.error("need 2 <= nodes <= 100000, 1 <= degree < nodes, "
                     "1 <= topics <= 100000, 0 < fraction <= 1")
    report = measure(args.nodes, args.degree, args.topics, args.fraction, args.seed)
    print(json.dumps(report) if args.json
          else "\n".join(f"{key:22} {value}" for key, value in report.items()))


if __name__ == "__main__":
    main()
