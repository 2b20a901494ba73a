#!/usr/bin/env python3
"""What 1,000 wildcard subscriptions cost the delivery path (issue 16).

    topic_bench.py [--messages N] [--rounds R] [--patterns P] [--spread S] [--json]

Two ``p2pnode run`` nodes on loopback (``scripts/bench.py``'s ``Cluster``: TLS,
signed batches), B dialling A. A publisher (bench.py's raw-socket one, pipelined)
publishes 100-byte payloads on A's socket to ``sensors/nK/temperature``, and a
subscriber process on B's socket receives them; the figure is messages / (time of the
last message received - time the publisher started), and every message must arrive
exactly once. Two subscriptions, measured in the same run, alternately:

- ``exact``: the topic names themselves (over several connections past the 4,096
  topics one connection may hold: each message still matches one subscription);
- ``patterns``: ``sensors/+/temperature`` and P - 1 patterns that match none of the
  messages but share their first levels (``sensors/+/humidityK``, ``+/xK/#``,
  ``sensors/xK/+``, ``sensors/nJ/temperature/K/#``, ``+/+/tK``), so that the match
  walks populated levels of the trie.

``--spread S``: the messages go to S topics in turn (``sensors/nK/temperature``,
K < S). The node remembers the match of up to 16,384 topics (``MATCH_CACHE``), so
with spreads up to 16,384 a message's match is mostly one dict lookup, and past it
(``--spread 30000``) each message's topic is reduced to its shape again (the
remembered matches start over before a topic comes round again). Rounds alternate
the order (exact first, then patterns first); the median of the rounds is reported, with ``ratio`` =
patterns / exact, and beside it the CPU time node B spent per message (``/proc``:
user + system), which the load of other processes on the machine disturbs less than
the rate. ``match``: the match alone, in this process (microseconds per message:
a dict lookup; ``PatternIndex.match`` with one pattern or all P, of a topic it
remembers, of new topics of a known shape, and of new topics whose every level a
pattern names, so that it walks the trie each time). Loopback only; run it inside
``unshare -n sh -c 'ip link set lo up && ...'`` for a private network.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster and the raw publisher

from p2pnode.api import PatternIndex
from p2pnode.client import check_server

MP = bench.MP
WINDOW = bench.WINDOW
PER_REQUEST = 1024  # the API's limit of topics in one subscribe
PER_CONNECTION = 4096  # and on one connection


def topic(k: int) -> str:
    return f"sensors/n{k}/temperature"


def publish_line(seq: int, spread: int) -> bytes:
    head = b"%010d %019d " % (seq, 0)
    data = head + b"x" * (bench.PAYLOAD_SIZE - len(head))
    return (b'{"op":"publish","topic":"' + topic(seq % spread).encode()
            + b'","data":"' + data + b'"}\n')


def decoys(count: int, spread: int) -> list[str]:
    """``count`` patterns that match no ``sensors/nK/temperature`` topic."""
    shapes = ["sensors/+/humidity{k}", "+/x{k}/#", "sensors/x{k}/+",
              "sensors/n{j}/temperature/{k}/#", "+/+/t{k}"]
    return [shapes[k % len(shapes)].format(k=k, j=k % spread) for k in range(count)]


def subscriptions(mode: str, spread: int, patterns: int) -> list[str]:
    if mode == "exact":
        return [topic(k) for k in range(spread)]
    return ["sensors/+/temperature", *decoys(patterns - 1, spread)]


def open_subscribed(path: str, topics: list[str]) -> tuple[socket.socket, bytes]:
    """A connection to ``path`` subscribed to ``topics``; returns it and what came
    after the replies."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(path)
    check_server(s, path)
    parts = [topics[i:i + PER_REQUEST] for i in range(0, len(topics), PER_REQUEST)]
    for part in parts:
        s.sendall(json.dumps({"op": "subscribe", "topics": part}).encode() + b"\n")
    buf = b""
    while buf.count(b"\n") < len(parts):
        chunk = s.recv(65536)
        if not chunk:
            raise bench.BenchError("the node closed the connection")
        buf += chunk
    *replies, rest = buf.split(b"\n", len(parts))
    for reply in replies:
        if b'"ok":true' not in reply:
            raise bench.BenchError(f"subscribe failed: {reply[:300]!r}")
    return s, rest


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscriber_main(path: str, topics: list[str], n: int, deadline: float, ready: Any,
                    result: Any, progress: Any) -> None:
    """Subscribe (a connection per ``PER_CONNECTION`` topics), then count each message
    once until all ``n`` came (or the deadline, or ``bench.IDLE_S`` without data);
    report."""
    sel = selectors.DefaultSelector()
    try:
        for i in range(0, len(topics), PER_CONNECTION):
            s, rest = open_subscribed(path, topics[i:i + PER_CONNECTION])
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [rest])
    except Exception as exc:
        ready.send(repr(exc))
        return
    ready.send(True)
    seen = bytearray(n)
    got = dups = 0
    last = 0
    idle_since = time.monotonic()
    while got < n and time.monotonic() < deadline:
        ready_keys = sel.select(0.2)
        if not ready_keys and time.monotonic() - idle_since > bench.IDLE_S:
            break
        for key, _ in ready_keys:
            chunk = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            idle_since = time.monotonic()
            data = key.data[0] + chunk
            cut = data.rfind(b"\n") + 1
            key.data[0], data = data[cut:], data[:cut]
            before = got
            for seq_b, _ in bench.EVENT_RE.findall(data):
                seq = int(seq_b)
                if seen[seq]:
                    dups += 1
                else:
                    seen[seq] = 1
                    got += 1
            if b'"dropped"' in data:
                dups += 10**9  # flow control failed: not a valid run
            if got != before:
                last = time.monotonic_ns()
                progress.value = got
        if not sel.get_map():
            break
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    result.send({"got": got, "dups": dups, "last": last})


def run_once(cluster: bench.Cluster, mode: str, spread: int, patterns: int, n: int,
             timeout: float, problems: list[str]) -> tuple[float, float]:
    """One measurement: a subscriber on B with ``mode``'s subscriptions, n messages
    published on A. Returns msgs/s and node B's CPU microseconds per message."""
    ready_r, ready_w = MP.Pipe(False)
    res_r, res_w = MP.Pipe(False)
    progress = MP.Value("q", 0, lock=False)
    proc = MP.Process(target=subscriber_main, daemon=True, args=(
        str(cluster.nodes[1].socket), subscriptions(mode, spread, patterns), n,
        time.monotonic() + timeout, ready_w, res_w, progress))
    proc.start()
    cluster.children.append(proc)
    status = ready_r.recv() if ready_r.poll(30) else "no answer in 30 s"
    if status is not True:
        raise bench.BenchError(f"subscriber did not start: {status}")
    requests = [publish_line(seq, spread) for seq in range(n)]
    publisher = bench.Publisher(cluster.nodes[0].socket)
    node_b = cluster.nodes[1].proc.pid
    try:
        deadline = time.monotonic() + timeout
        cpu0 = cpu_seconds(node_b)
        t0 = time.monotonic_ns()
        for i in range(0, n, 256):
            while i - progress.value > WINDOW and time.monotonic() < deadline:
                time.sleep(0.0002)
            publisher.sock.sendall(b"".join(requests[i:i + 256]))
        publisher.wait_replies(n, timeout)
        out = bench.collect(proc, res_r, timeout)
        cpu = cpu_seconds(node_b) - cpu0
    finally:
        publisher.close()
    if out["got"] != n or out["dups"]:
        problems.append(f"{mode} spread {spread}: got {out['got']}/{n}, "
                        f"{out['dups']} duplicates or dropped")
    rate = n / ((out["last"] - t0) / 1e9) if out["last"] else 0.0
    return rate, cpu / n * 1e6


def summary(runs: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Medians of the runs of each subscription, their ratios, and the runs."""
    rate = {mode: statistics.median(r for r, _ in rs) for mode, rs in runs.items()}
    cpu = {mode: statistics.median(c for _, c in rs) for mode, rs in runs.items()}
    return {
        "exact_msgs_per_s": round(rate["exact"]),
        "patterns_msgs_per_s": round(rate["patterns"]),
        "ratio": round(rate["patterns"] / rate["exact"], 3) if rate["exact"] else 0.0,
        "exact_cpu_us_per_msg": round(cpu["exact"], 2),
        "patterns_cpu_us_per_msg": round(cpu["patterns"], 2),
        "cpu_ratio": round(cpu["patterns"] / cpu["exact"], 3) if cpu["exact"] else 0.0,
        "exact_runs": [round(r) for r, _ in runs["exact"]],
        "patterns_runs": [round(r) for r, _ in runs["patterns"]],
    }


def match_us(patterns: list[str], topics: list[str], count: int = 20_000) -> float:
    """Microseconds per ``PatternIndex.match`` of ``topics`` in turn, in this process
    (the best of 5 tries: the least disturbed by other processes)."""
    index: PatternIndex[int] = PatternIndex()
    for k, pattern in enumerate(patterns):
        index.add(pattern, k)
    names = [topics[k % len(topics)] for k in range(count)]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for name in names:
            index.match(name)
        best = min(best, time.perf_counter() - t0)
    return best / count * 1e6


def micro(patterns: int) -> dict[str, float]:
    """The match alone: a dict lookup; then one pattern or ``patterns``, with a topic
    remembered (one topic), new topics of a known shape (10,000 in turn), and new
    topics whose every level some pattern names (the trie is walked each time)."""
    many = subscriptions("patterns", 10_000, patterns)
    spread = [topic(k) for k in range(10_000)]
    named = [f"sensors/n{j}/t{k}" for j in range(3, patterns, 5)  # see decoys()
             for k in range(4, patterns, 5)]
    exact = {name: {0} for name in spread}
    t0 = time.perf_counter()
    for name in spread:
        exact.get(name)
    return {
        "exact_dict_us": round((time.perf_counter() - t0) / len(spread) * 1e6, 3),
        "one_pattern_remembered_us": round(match_us(many[:1], spread[:1]), 3),
        "patterns_remembered_us": round(match_us(many, spread[:1]), 3),
        "one_pattern_new_topic_us": round(match_us(many[:1], spread), 3),
        "patterns_new_topic_us": round(match_us(many, spread), 3),
        "patterns_walk_us": round(match_us(many, named), 3),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    problems: list[str] = []
    report: dict[str, Any] = {}
    with bench.Cluster(2, [(1, 0)], insecure=False) as cluster:
        run_once(cluster, "exact", 1, args.patterns, min(args.messages, 20_000),
                 args.timeout, problems)  # warm-up, not counted
        for spread in args.spread:
            runs: dict[str, list[tuple[float, float]]] = {"exact": [], "patterns": []}
            for r in range(args.rounds):
                order = ("exact", "patterns") if r % 2 == 0 else ("patterns", "exact")
                for mode in order:
                    runs[mode].append(run_once(cluster, mode, spread, args.patterns,
                                               args.messages, args.timeout, problems))
            report[f"spread{spread}"] = summary(runs)
    report["match"] = micro(args.patterns)
    report["params"] = {"messages": args.messages, "rounds": args.rounds,
                        "patterns": args.patterns, "payload_bytes": bench.PAYLOAD_SIZE}
    report["problems"] = problems
    report["ok"] = not problems
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000, help="messages per run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each subscription per spread; the median is kept")
    ap.add_argument("--patterns", type=int, default=1000,
                    help="patterns of the subscriber (one matches), 2-4096")
    ap.add_argument("--spread", type=int, action="append", default=None,
                    help="distinct topics published in turn (repeatable; default: 1, "
                         "2000 and 10000), 1-100000")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each wait")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    args.spread = args.spread or [1, 2000, 10000]
    if args.messages < 1 or args.rounds < 1:
        ap.error("--messages and --rounds must be at least 1")
    if not 2 <= args.patterns <= 4096 or not all(1 <= s <= 100_000 for s in args.spread):
        ap.error("--patterns must be 2-4096 and --spread 1-100000")
    report = measure(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, row in report.items():
            if key.startswith("spread"):
                print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
        print("match alone: " + ", ".join(f"{k}={v}" for k, v in report["match"].items()))
        for p in report["problems"]:
            print("PROBLEM:", p)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
