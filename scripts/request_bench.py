#!/usr/bin/env python3
"""Request/reply round trips through the shipped clients, one and two hops (issue 16).

    request_bench.py [--requests N] [--repeat R] [--kinds trio,asyncio,blocking] [--json]

Three ``p2pnode run`` nodes on loopback in a line, n0 - n1 - n2 (``scripts/bench.py``'s
``Cluster``: TLS, signed batches). For each kind of client and each distance, a
server process of that kind answers the requests on a topic (``serve``, echoing the
data) on n1 (one hop) or n2 (two hops), and an asker process of the same kind on n0
sends ``ask`` after ``ask`` (100-byte data, ``max_replies`` 1), one at a time, and
times each from the call to its return: the round trip an app sees, its own client
included. Beside them, ``sync`` on n0 through the same client: one API round trip
with no mesh in it, the floor.

``nats`` (when nats-server and nats-py are installed: ``pip install 'p2pnode[bench]'``,
``apt-get install nats-server``): the same with nats-py (asyncio) against one
nats-server on 127.0.0.1, ``msg.respond`` and ``nc.request``; "1 hop" is asker, broker,
server and back, and its floor is ``nc.flush()`` (a PING to the broker).

Reports p50, p99 and the mean in milliseconds (the medians of ``--repeat`` runs of
``--requests`` each, interleaved). Loopback only; run it inside ``unshare -n sh -c
'ip link set lo up && ...'`` for a private network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster of nodes
import client_bench  # scripts/client_bench.py: nats-server for the reference

from p2pnode.client import BlockingClient, open_asyncio_client, open_client

MP = mp.get_context("fork")
KINDS = ("trio", "asyncio", "blocking", "nats")
DATA = "x" * bench.PAYLOAD_SIZE


async def echo(data: bytes) -> bytes:
    return data


# ---------------------------------------------------------------- the server process

def server_main(kind: str, path: str, topic: str, ready: Any) -> None:
    """Answer the requests on ``topic`` with their own data, until killed."""
    if kind == "trio":
        async def serve_trio() -> None:
            async with open_client(path) as client, trio.open_nursery() as nursery:
                await nursery.start(client.serve, topic, echo)
                ready.set()
        trio.run(serve_trio)
    elif kind == "asyncio":
        async def serve_asyncio() -> None:
            async with open_asyncio_client(path) as client:
                await client.subscribe([topic])
                ready.set()
                await client.serve(topic, echo)
        asyncio.run(serve_asyncio())
    elif kind == "nats":
        asyncio.run(serve_nats(path, topic, ready))
    else:
        with BlockingClient(path, timeout=None) as client:
            client.subscribe([topic])
            ready.set()
            client.serve(topic, lambda data: data)


async def serve_nats(url: str, subject: str, ready: Any) -> None:
    import nats

    nc = await nats.connect(url)

    async def respond(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=respond)
    await nc.flush()
    ready.set()
    await asyncio.Event().wait()


# ---------------------------------------------------------------- the asker process

def asker_main(kind: str, path: str, topic: str, n: int, warmup: int, res: Any) -> None:
    """Time ``warmup + n`` asks (and as many syncs) one after the other; report the last
    ``n`` of each, in microseconds."""
    asks: list[float] = []
    syncs: list[float] = []
    total = warmup + n

    def record(into: list[float], start: int, reply: Any) -> None:
        into.append((time.perf_counter_ns() - start) / 1000)
        if into is asks and not reply:
            raise bench.BenchError("a request got no reply")

    if kind == "trio":
        async def ask_trio() -> None:
            async with open_client(path) as client:
                for _ in range(total):
                    start = time.perf_counter_ns()
                    record(asks, start, await client.ask(topic, DATA, timeout=5))
                    start = time.perf_counter_ns()
                    record(syncs, start, await client.request({"op": "sync"}))
        trio.run(ask_trio)
    elif kind == "asyncio":
        async def ask_asyncio() -> None:
            async with open_asyncio_client(path) as client:
                for _ in range(total):
                    start = time.perf_counter_ns()
                    record(asks, start, await client.ask(topic, DATA, timeout=5))
                    start = time.perf_counter_ns()
                    record(syncs, start, await client.request({"op": "sync"}))
        asyncio.run(ask_asyncio())
    elif kind == "nats":
        asyncio.run(ask_nats(path, topic, total, asks, syncs))
    else:
        with BlockingClient(path, timeout=10) as client:
            for _ in range(total):
                start = time.perf_counter_ns()
                record(asks, start, client.ask(topic, DATA, timeout=5))
                start = time.perf_counter_ns()
                record(syncs, start, client.request({"op": "sync"}))
    res.put({"ask": asks[warmup:], "sync": syncs[warmup:]})


async def ask_nats(url: str, subject: str, total: int, asks: list[float],
                   syncs: list[float]) -> None:
    import nats

    nc = await nats.connect(url)
    data = DATA.encode()
    for _ in range(total):
        start = time.perf_counter_ns()
        await nc.request(subject, data, timeout=5)
        asks.append((time.perf_counter_ns() - start) / 1000)
        start = time.perf_counter_ns()
        await nc.flush()
        syncs.append((time.perf_counter_ns() - start) / 1000)
    await nc.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_ms": s[len(s) // 2] / 1000, "p99_ms": s[min(len(s) - 1, len(s) * 99 // 100)]
            / 1000, "mean_ms": sum(s) / len(s) / 1000}


def run_once(kind: str, asker_at: str, server_at: str, topic: str, n: int, warmup: int,
             timeout: float) -> dict[str, list[float]]:
    ready, res = MP.Event(), MP.Queue()
    server = MP.Process(target=server_main, args=(kind, server_at, topic, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(timeout):
            raise bench.BenchError(f"the {kind} server did not start")
        asker = MP.Process(target=asker_main, args=(kind, asker_at, topic, n, warmup, res),
                           daemon=True)
        asker.start()
        try:
            out: dict[str, list[float]] = res.get(timeout=timeout)
        except Exception as exc:
            raise bench.BenchError(f"the {kind} asker did not finish: {exc!r}") from None
        finally:
            asker.join(5)
            if asker.is_alive():
                asker.kill()
        return out
    finally:
        server.kill()
        server.join(5)


def measure(kinds: list[str], args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(bench.Cluster(3, [(1, 0), (2, 1)], insecure=False))
        n0, n1, n2 = (str(node.socket) for node in cluster.nodes)
        url = stack.enter_context(client_bench.nats_server()) if "nats" in kinds else ""
        for rep in range(args.repeat):  # interleaved: a noisy moment hits every kind
            for kind in kinds:
                asker_at = url if kind == "nats" else n0
                where = [("1 hop", url)] if kind == "nats" else [("1 hop", n1), ("2 hops", n2)]
                for k, (hops, server_at) in enumerate(where):
                    topic = f"rr-{kind}-{k}-{rep}"
                    got = run_once(kind, asker_at, server_at, topic, args.requests,
                                   args.warmup, args.timeout)
                    runs.setdefault((kind, hops), []).append(percentiles(got["ask"]))
                    if k == 0:  # the floor, once per run
                        runs.setdefault((kind, "sync"), []).append(percentiles(got["sync"]))
    out: dict[str, Any] = {}
    for (kind, what), rows in runs.items():
        med = {k: round(sorted(r[k] for r in rows)[len(rows) // 2], 3) for k in rows[0]}
        out.setdefault(kind, {})[what] = {**med, "runs_p50_ms": [round(r["p50_ms"], 3)
                                                                 for r in rows]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="timed asks per run")
    ap.add_argument("--warmup", type=int, default=200, help="asks before timing")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (median kept)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on each run (s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown kinds: {', '.join(bad)}")
    if "nats" in kinds and not client_bench.nats_available():
        print("request_bench: nats-server or nats-py missing: no NATS reference",
              file=sys.stderr)
        kinds.remove("nats")
    if args.requests < 1 or args.repeat < 1 or args.warmup < 0:
        ap.error("--requests and --repeat must be at least 1, --warmup at least 0")
    signal.signal(signal.SIGTERM, bench._terminate)
    try:
        out = measure(kinds, args)
    except bench.BenchError as exc:
        print(f"request_bench: {exc}", file=sys.stderr)
        return 1
    out["params"] = {"requests": args.requests, "warmup": args.warmup, "repeat": args.repeat,
                     "payload_bytes": bench.PAYLOAD_SIZE, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'client':9} {'round trip':10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for kind in kinds:
        for what in ("1 hop", "2 hops", "sync"):
            if what not in out[kind]:
                continue
            row = out[kind][what]
            print(f"{kind:9} {what:10} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                  f"{row['mean_ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
