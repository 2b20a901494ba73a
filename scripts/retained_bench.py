#!/usr/bin/env python3
"""Measure what retained messages cost: the sync that brings a node that joins the
retained set of its peer, and the subscription that gets a whole set first.

    retained_bench.py [--topics 10000] [--payload 100] [--alone] [--repeat 3] [--json]

Node A runs (``p2pnode run``, TLS on loopback, its own process); a client sets
``--topics`` retained messages of ``--payload`` bytes on it: pipelined (hundreds per
signed batch), or with ``--alone`` one per batch (a publish that waits for its reply
each: the worst case, one signature check per value). Then, ``--repeat`` times, a new
node B (its own process, an empty data directory) starts with ``--peer`` A, and the
script polls B's ``status`` every 10 ms:

- ``link_s``: from B's start to its link to A;
- ``sync_s``: from the link to B holding all the topics;
- ``sync_bytes``: bytes B received on the link until then (digest and batches);
- ``subscribe_s``: an app on B subscribes to all topics: until the reply, which comes
  after every retained event (``events`` counts them).

Only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from p2pnode.client import BlockingClient

P2PNODE = [sys.executable, "-m", "p2pnode.cli"]


def start_node(tmp: Path, name: str, peer: str | None,
               extra: list[str]) -> tuple[subprocess.Popen[str], Path, str]:
    sock = tmp / f"{name}.sock"
    args = [*P2PNODE, "run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name,
            "--socket", str(sock), "--data-dir", str(tmp / name), *extra]
    if peer:
        args += ["--peer", peer]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if found := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
            port = found.group(1)
            break
    else:
        raise RuntimeError(f"node {name} did not start")
    # Keep reading its log, so that it never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    while not sock.exists():
        time.sleep(0.01)
    return proc, sock, f"127.0.0.1:{port}"


def fill(sock: Path, topics: int, payload: int, alone: bool) -> None:
    data = "x" * payload
    with BlockingClient(sock, timeout=60) as node:
        for k in range(topics):
            if alone:
                node.publish(f"sensors/{k}", data, retain=True, wait=True)
            else:
                node.publish(f"sensors/{k}", data, retain=True)
        node.flush()
        assert node.status()["retained"]["topics"] == topics


def join_once(tmp: Path, name: str, peer: str, topics: int) -> dict[str, Any]:
    start = time.perf_counter()
    proc, sock, _ = start_node(tmp, name, peer, [])
    try:
        with BlockingClient(sock, timeout=60) as node:
            while node.status()["peers"] < 1:
                time.sleep(0.01)
            linked = time.perf_counter()
            while (status := node.status())["retained"]["topics"] < topics:
                time.sleep(0.01)
            synced = time.perf_counter()
            received = status["links"]["bytes_received"]
        with BlockingClient(sock, timeout=60) as app:
            t0 = time.perf_counter()
            reply = app.subscribe([])
            subscribed = time.perf_counter() - t0
        return {"link_s": round(linked - start, 3), "sync_s": round(synced - linked, 3),
                "sync_bytes": received, "subscribe_s": round(subscribed, 3),
                "events": reply.get("retained", 0), "dropped": reply.get("dropped", 0)}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=10_000)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--alone", action="store_true",
                        help="one retained message per signed batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="p2pret-"))
    os.environ.pop("P2PNODE_SOCKET", None)
    try:
        a, sock_a, addr_a = start_node(tmp, "a", None, [])
        try:
            t0 = time.perf_counter()
            fill(sock_a, args.topics, args.payload, args.alone)
            filled = time.perf_counter() - t0
            runs = [join_once(tmp, f"b{i}", addr_a, args.topics) for i in range(args.repeat)]
        finally:
            a.terminate()
            a.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"topics": args.topics, "payload": args.payload, "alone": args.alone,
              "fill_s": round(filled, 3), "runs": runs,
              "median_sync_s": statistics.median(r["sync_s"] for r in runs),
              "median_subscribe_s": statistics.median(r["subscribe_s"] for r in runs)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.topics} topics of {args.payload} bytes, "
              f"{'one per batch' if args.alone else 'batched'}; set in {filled:.2f}s")
        for r in runs:
            print(f"  link {r['link_s']:.3f}s  sync {r['sync_s']:.3f}s "
                  f"({r['sync_bytes']:,} bytes)  subscribe to all {r['subscribe_s']:.3f}s "
                  f"({r['events']} events, {r['dropped']} dropped)")
        print(f"median sync {result['median_sync_s']:.3f}s, "
              f"subscribe {result['median_subscribe_s']:.3f}s")


if __name__ == "__main__":
    main()
