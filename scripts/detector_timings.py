#!/usr/bin/env python3
"""Measure the membership failure detector in virtual time (docs/failures.md).

Each run starts NODES nodes on a memory network, every one given node 0 as its seed
(peer exchange on, 3 to 5 links each), waits until all know all, then freezes one
node's streams (like SIGSTOP: it neither reads nor writes). Frozen for good: how long
until every other node lists it as dead. Frozen for a while (--pause): whether any
node suspected it, or declared it dead, by 20 s after it woke.

Usage: python scripts/detector_timings.py [--nodes 9] [--runs 20] [--pause S]... [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.testing import MemoryNetwork, start_memory_mesh, wait_until


async def one_run(n: int, seed: int, pause: float | None) -> dict[str, Any]:
    """One mesh, one frozen node: the figures of that run."""
    net = MemoryNetwork()
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nodes = await start_memory_mesh(nursery, [(i, 0) for i in range(1, n)], n,
                                        network=net, seed=seed, peer_exchange=True,
                                        degree_low=3, degree_high=5)

        def state(node: Any, of: bytes) -> str | None:
            return next((m.state for m in node.membership.members() if m.node_id == of),
                        None)

        await wait_until(lambda: all(state(a, b.node_id) == "alive" for a in nodes
                                     for b in nodes))
        await trio.sleep(10)
        victim = nodes[random.Random(seed).randrange(1, n)]
        others = [node for node in nodes if node is not victim]
        kinds: list[str] = []
        for node in others:
            node.membership.add_listener(lambda kind, _m: kinds.append(kind))
        start = trio.current_time()
        net.sim.freeze(victim.config.listen_port)
        if pause is None:
            await wait_until(lambda: all(state(o, victim.node_id) == "dead" for o in others))
            out["dead_after_s"] = round(trio.current_time() - start, 3)
        else:
            await trio.sleep(pause)
            net.sim.thaw(victim.config.listen_port)
            await trio.sleep(20)
        out["suspected"] = "member_suspect" in kinds
        out["dead_events"] = kinds.count("member_dead")
        nursery.cancel_scope.cancel()
    return out


def measure(n: int, runs: int, pauses: list[float]) -> dict[str, Any]:
    """Every case, ``runs`` times each (seeds 0 to runs - 1)."""
    def run(seed: int, pause: float | None) -> dict[str, Any]:
        return trio.run(one_run, n, seed, pause,
                        clock=trio.testing.MockClock(autojump_threshold=0))

    dead = [run(seed, None)["dead_after_s"] for seed in range(runs)]
    report: dict[str, Any] = {
        "nodes": n, "runs": runs,
        "frozen_dead_after_s": {"min": min(dead), "median": statistics.median(dead),
                                "max": max(dead)},
        "paused": [],
    }
    for pause in pauses:
        rows = [run(seed, pause) for seed in range(runs)]
        report["paused"].append({
            "pause_s": pause, "runs_suspected": sum(r["suspected"] for r in rows),
            "dead_events": sum(r["dead_events"] for r in rows)})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=9)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pause", type=float, action="append",
                        help="seconds a node is frozen and then woken (repeatable; "
                             "default 2.0, 2.5 and 2.8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.nodes < 3 or args.runs < 1:
        parser.error("--nodes must be at least 3 and --runs at least 1")
    report = measure(args.nodes, args.runs, args.pause or [2.0, 2.5, 2.8])
    if args.json:
        print(json.dumps(report))
        return
    d = report["frozen_dead_after_s"]
    print(f"{args.nodes} nodes, {args.runs} runs each (virtual time)")
    print(f"frozen for good: dead at every other node after {d['min']:.2f} to "
          f"{d['max']:.2f} s (median {d['median']:.2f})")
    for row in report["paused"]:
        print(f"frozen {row['pause_s']:g} s: suspected in {row['runs_suspected']} of "
              f"{args.runs} runs, member_dead events {row['dead_events']}")


if __name__ == "__main__":
    main()
