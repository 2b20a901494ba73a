#!/usr/bin/env python3
"""mesh10_topics: interest routing against broadcast trees on bench.py's mesh (issue 19).

    mesh_topics.py [--messages N] [--mesh-messages M] [--rounds R] [--publishers P]
                   [--static] [--timeout S] [--json]

Two clusters of 10 ``p2pnode run`` nodes on loopback (``scripts/bench.py``'s
``Cluster``: TLS, signed batches, the store on, ``mesh_edges(10)``: a ring plus chords
i -- i+5), one with ``--gossip tree`` (today's default), one with ``--gossip
interest``; both up for the whole run. On each, one subscriber process holds a
connection on every node, node i's subscribed to topic ``t{i}`` only, for the whole
run (so that the nodes' interests stay put); before anything is timed, the script
waits until every node's view of the mesh (``mesh``) and of the members' interests
(``members``) is complete and the same on every node, and a warm-up run has gone
through.

- ``mesh10_topics``: P publishers (default 10: one on each node's socket, raw and
  pipelined as bench.py's) send N messages in all, N/P each, round-robin over the
  10 topics (publisher p's k-th message: seq k*P + p, topic t{k mod 10}); the figure
  is N / (first send -> the moment the last subscriber has every message of its
  topic). Flow control: at most ``--window`` messages (default bench.WINDOW, 16,000,
  as bench.py's mesh10) published and not yet received, in all (so no node's
  per-client event queue overflows; with 64,000 tree mode queued about 4 s, more
  than the nodes' history holds, and lost messages). Every message must reach its
  topic's subscriber exactly once (the seqs each connection got are compared with
  the ones published on its topic); dropped events count as a failure.
- ``mesh10_msgs_per_s``: bench.py's mesh10 (one publisher on node 0, a subscriber on
  every node, all nodes get all M messages) on the tree cluster, in the same rounds:
  the figure the issue's target (interest >= 3x mesh10) compares with.

Rounds alternate the order (tree, interest, mesh10; then interest, tree, mesh10 ...);
medians are reported with ``ratio`` = interest / tree and ``to_mesh10`` = interest /
mesh10, and beside them the sums over the nodes of the ``interest`` and ``gossip``
counters of ``status`` for the measured runs (``unrouted`` should not grow once the
mesh has settled). ``--static``: nodes keep only their --peer links
(``--no-peer-exchange``; by default, as in bench.py, nodes below 4 links dial more
members, so the mesh ends with about 6 links per node). Loopback only: run it inside
``unshare -n sh -c 'ip link set lo up && ...'``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster, the raw publisher, mesh10
from topic_bench import cpu_seconds

from p2pnode.client import check_server

MP = bench.MP
TOPICS = 10
BATCH = 250  # messages per sendall of one publisher (a multiple of TOPICS)
COUNTERS = {"interest": ("wanted", "relayed", "routed", "off_tree", "unrouted", "unwanted",
                         "stream_held", "stream_gaps", "stream_late", "fetch_asked"),
            "gossip": ("ihave_sent", "grafts_sent", "grafts_received", "graft_misses",
                       "prunes_sent", "repaired", "missing_given_up"),
            "messages": ("received", "delivered", "duplicates", "forwarded", "order_held",
                         "order_gaps", "order_late", "order_stale"),
            "links": ("opened", "queue_drops", "pings_lost"), "api": ("events_dropped",)}


def topic_of(seq: int, publishers: int) -> int:
    return (seq // publishers) % TOPICS


def publish_line(seq: int, run: int, publishers: int) -> bytes:
    """A publish of message ``seq`` of run ``run`` (the payload's second field, where
    bench.py puts a time) on its topic."""
    head = b"%010d %019d " % (seq, run)
    data = head + b"x" * (bench.PAYLOAD_SIZE - len(head))
    return (b'{"op":"publish","topic":"t%d","data":"' % topic_of(seq, publishers)
            + data + b'"}\n')


# ---------------------------------------------------------------- the subscriber

def subscribe(path: str, topic: str) -> tuple[socket.socket, bytes]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(path)
    check_server(s, path)
    s.sendall(json.dumps({"op": "subscribe", "topics": [topic]}).encode() + b"\n")
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise bench.BenchError(f"{path} closed the connection")
        buf += chunk
    reply, rest = buf.split(b"\n", 1)
    if b'"ok":true' not in reply:
        raise bench.BenchError(f"subscribe failed: {reply[:300]!r}")
    s.setblocking(False)
    return s, rest


class Tally:
    """What one connection got in one run: each seq once, of this run only."""

    def __init__(self, n: int, run: int, want: int) -> None:
        self.run, self.want = b"%019d" % run, want
        self.seen = bytearray(n)
        self.got = self.dups = self.dropped = self.stale = self.last = 0

    def take(self, data: bytes) -> bool:
        """Count the events in ``data`` (whole lines); True if a new message came."""
        before = self.got
        for seq_b, run_b in bench.EVENT_RE.findall(data):
            seq = int(seq_b)
            if run_b != self.run or seq >= len(self.seen):
                self.stale += 1
            elif self.seen[seq]:
                self.dups += 1
            else:
                self.seen[seq] = 1
                self.got += 1
        if b'"dropped"' in data:
            self.dropped += sum(int(c) for c in DROPPED_RE.findall(data))
        if self.got != before:
            self.last = time.monotonic_ns()
            return True
        return False


DROPPED_RE = re.compile(rb'"event":"dropped","count":(\d+)')


def subscriber_main(paths: list[str], ctrl: Any, progress: Any) -> None:
    """Connection k on ``paths[k]`` subscribes to t{k} and stays; then, for each run
    asked on ``ctrl`` ((n, run, wants, timeout); None ends), count until every
    connection has its ``wants[k]`` messages (or bench.IDLE_S without any), answer."""
    sel = selectors.DefaultSelector()
    try:
        for k, path in enumerate(paths):
            s, rest = subscribe(path, f"t{k}")
            sel.register(s, selectors.EVENT_READ, [k, rest])
    except Exception as exc:
        ctrl.send(repr(exc))
        return
    ctrl.send(True)
    while (cmd := ctrl.recv()) is not None:
        n, run, wants, timeout = cmd
        tallies = [Tally(n, run, want) for want in wants]
        for k in range(len(paths)):
            progress[k] = 0
        ctrl.send("go")
        deadline, idle_since = time.monotonic() + timeout, time.monotonic()
        while any(t.got < t.want for t in tallies) and time.monotonic() < deadline:
            ready = sel.select(0.2)
            if not ready and time.monotonic() - idle_since > bench.IDLE_S:
                break
            for key, _ in ready:
                chunk = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                if not chunk:
                    raise bench.BenchError(f"node {key.data[0]} closed the subscriber")
                idle_since = time.monotonic()
                data = key.data[1] + chunk
                cut = data.rfind(b"\n") + 1
                key.data[1], data = data[cut:], data[:cut]
                tally = tallies[key.data[0]]
                if tally.take(data):
                    progress[key.data[0]] = tally.got + tally.dropped
        ctrl.send([{"got": t.got, "dups": t.dups, "dropped": t.dropped, "stale": t.stale,
                    "last": t.last, "seen": bytes(t.seen)} for t in tallies])


class Subscriber:
    """The subscriber process of one cluster, its control pipe and progress."""

    def __init__(self, cluster: bench.Cluster) -> None:
        self.ctrl, child = MP.Pipe()
        self.progress = MP.Array("q", TOPICS, lock=False)
        paths = [str(node.socket) for node in cluster.nodes]
        self.proc = MP.Process(target=subscriber_main, daemon=True,
                               args=(paths, child, self.progress))
        self.proc.start()
        cluster.children.append(self.proc)
        status = self.ctrl.recv() if self.ctrl.poll(30) else "no answer in 30 s"
        if status is not True:
            raise bench.BenchError(f"subscriber did not start: {status}")

    def start(self, n: int, run: int, wants: list[int], timeout: float) -> None:
        self.ctrl.send((n, run, wants, timeout))
        if not self.ctrl.poll(10) or self.ctrl.recv() != "go":
            raise bench.BenchError("the subscriber did not start the run")

    def result(self, timeout: float) -> list[dict[str, Any]]:
        if not self.ctrl.poll(timeout):
            raise bench.BenchError("the subscriber gave no result")
        out: list[dict[str, Any]] = self.ctrl.recv()
        return out


# ---------------------------------------------------------------- settling

def mesh_state(node: bench.Node) -> tuple[frozenset[Any], tuple[Any, ...], frozenset[str]]:
    """(links, interests by name, names linked now) as ``node`` sees the mesh."""
    mesh = node.request({"op": "mesh"})
    members = node.request({"op": "members"})["members"]
    links = frozenset(tuple(pair) for pair in mesh["links"])
    interests = tuple(sorted((m["name"], tuple(m.get("interests") or ())) for m in members
                             if m["state"] == "alive"))
    names = {n["node_id"]: n["name"] for n in mesh["nodes"]}
    linked = frozenset(n["name"] for n in mesh["nodes"] if n.get("linked"))
    if len(names) != len(members) or set(names.values()) != {m["name"] for m in members}:
        return frozenset(), (), frozenset()
    return links, interests, linked


def settle(cluster: bench.Cluster, timeout: float) -> float:
    """Wait until every node sees the same links (each node's own peers among them)
    and every member's interest (t{i}), twice in a row 1 s apart; the seconds it
    took."""
    t0 = time.monotonic()
    want = tuple(sorted((f"n{i}", (f"t{i}",)) for i in range(cluster.n)))
    previous = None
    while time.monotonic() - t0 < timeout:
        states = [mesh_state(node) for node in cluster.nodes]
        links = states[0][0]
        same = all(s[0] == links and s[1] == want for s in states)
        if same and links:
            ids = {n["node_id"]: n["name"]
                   for n in cluster.nodes[0].request({"op": "mesh"})["nodes"]}
            named = {frozenset((ids[a], ids[b])) for a, b in links}
            same = all(s[2] == {x for pair in named if f"n{i}" in pair for x in pair} -
                       {f"n{i}"} for i, s in enumerate(states))
        if same and previous == links:
            return time.monotonic() - t0
        previous = links if same else None
        time.sleep(1.0)
    raise bench.BenchError(f"the mesh did not settle in {timeout} s")


def counters(cluster: bench.Cluster) -> list[dict[str, int]]:
    """The COUNTERS of each node's status, flat ("interest.routed": ...)."""
    out = []
    for node in cluster.nodes:
        status = node.request({"op": "status"})
        out.append({f"{sec}.{name}": (status.get(sec) or {}).get(name, 0)
                    for sec, names in COUNTERS.items() for name in names})
    return out


def cluster_cpu(cluster: bench.Cluster) -> float:
    """CPU seconds (user + system) all nodes of ``cluster`` used so far."""
    return sum(cpu_seconds(node.proc.pid) for node in cluster.nodes)


def delta(before: list[dict[str, int]], after: list[dict[str, int]]) -> list[dict[str, int]]:
    return [{k: a[k] - b[k] for k in a} for b, a in zip(before, after, strict=True)]


# ---------------------------------------------------------------- one run

def send_all(cluster: bench.Cluster, sub: Subscriber, n: int, run: int, publishers: int,
             window: int, timeout: float) -> int:
    """Publish the run's n messages (round-robin over the publishers, BATCH each);
    return the monotonic ns of the first send."""
    per = n // publishers
    lines = [[publish_line(k * publishers + p, run, publishers) for k in range(per)]
             for p in range(publishers)]
    pubs = [bench.Publisher(cluster.nodes[p].socket) for p in range(publishers)]
    try:
        deadline = time.monotonic() + timeout
        t0 = time.monotonic_ns()
        sent = 0
        for i in range(0, per, BATCH):
            for p, pub in enumerate(pubs):
                while time.monotonic() < deadline:
                    progress = sub.progress[:]
                    if (sent - sum(progress) <= window
                            and sent // TOPICS - min(progress) <= bench.WINDOW):
                        break
                    time.sleep(0.0002)
                chunk = lines[p][i:i + BATCH]
                pub.sock.sendall(b"".join(chunk))
                sent += len(chunk)
        for pub in pubs:
            pub.wait_replies(per, timeout)
    finally:
        for pub in pubs:
            pub.close()
    return t0


def topics_run(cluster: bench.Cluster, sub: Subscriber, n: int, run: int,
               args: argparse.Namespace, problems: list[str],
               what: str) -> tuple[float, float, list[dict[str, int]]]:
    """One mesh10_topics run: msgs/s, the nodes' CPU microseconds per message (all
    nodes together) and the nodes' counters over it."""
    p = args.publishers
    wants = [sum(1 for seq in range(n) if topic_of(seq, p) == k) for k in range(TOPICS)]
    before = counters(cluster)
    sub.start(n, run, wants, args.timeout)
    cpu = cluster_cpu(cluster)
    t0 = send_all(cluster, sub, n, run, p, args.window, args.timeout)
    out = sub.result(args.timeout + 10)
    cpu = cluster_cpu(cluster) - cpu
    moved = delta(before, counters(cluster))
    for k, row in enumerate(out):
        wrong = [seq for seq in range(n) if row["seen"][seq] != (topic_of(seq, p) == k)]
        if wrong or row["dups"] or row["dropped"] or row["stale"]:
            problems.append(f"{what}: subscriber of t{k} on n{k} got {row['got']}/"
                            f"{wants[k]}, {len(wrong)} seqs wrong (e.g. {wrong[:5]}), "
                            f"{row['dups']} duplicates, {row['dropped']} dropped, "
                            f"{row['stale']} of another run; counters of n{k}: "
                            f"{moved[k]}")
    last = max(row["last"] for row in out)
    return (n / ((last - t0) / 1e9) if last > t0 else 0.0), cpu / n * 1e6, moved


# ---------------------------------------------------------------- the whole bench

def summed(rows: list[list[dict[str, int]]]) -> dict[str, int]:
    """The counters of several runs, summed over runs and nodes."""
    total: dict[str, int] = {}
    for run in rows:
        for node in run:
            for k, v in node.items():
                total[k] = total.get(k, 0) + v
    return total


def mesh10_run(tree: bench.Cluster, args: argparse.Namespace, problems: list[str],
               what: str) -> tuple[float, float]:
    """bench.py's mesh10 on ``tree``: msgs/s and the nodes' CPU microseconds per message."""
    cpu = cluster_cpu(tree)
    rate = bench.throughput(tree, 0, list(range(TOPICS)), args.mesh_messages, args.timeout,
                            problems, what)
    return rate, (cluster_cpu(tree) - cpu) / args.mesh_messages * 1e6


def rounds(clusters: dict[str, bench.Cluster], args: argparse.Namespace,
           problems: list[str]) -> dict[str, Any]:
    """Set up the subscribers, wait for the mesh, warm up, then the A/B rounds: the
    runs' msgs/s and CPU per message, and the counters summed over each mode's runs."""
    report: dict[str, Any] = {"settle_s": {}, "links": {}}
    subs = {}
    for mode, cluster in clusters.items():
        subs[mode] = Subscriber(cluster)
        report["settle_s"][mode] = round(settle(cluster, args.timeout), 1)
        report["links"][mode] = len(mesh_state(cluster.nodes[0])[0])
        topics_run(cluster, subs[mode], min(args.messages, 10_000), 0, args, problems,
                   f"{mode} warm-up")
    bench.throughput(clusters["tree"], 0, list(range(TOPICS)),
                     min(args.mesh_messages, 1000), args.timeout, problems, "mesh10 warm-up")
    runs: dict[str, list[tuple[float, float]]] = {"tree": [], "interest": [], "mesh10": []}
    moved: dict[str, list[list[dict[str, int]]]] = {"tree": [], "interest": []}
    for r in range(args.rounds):
        for mode in ("tree", "interest") if r % 2 == 0 else ("interest", "tree"):
            rate, cpu, counts = topics_run(clusters[mode], subs[mode], args.messages, r + 1,
                                           args, problems, f"{mode} round {r + 1}")
            runs[mode].append((rate, cpu))
            moved[mode].append(counts)
        runs["mesh10"].append(mesh10_run(clusters["tree"], args, problems,
                                         f"mesh10 round {r + 1}"))
    for sub in subs.values():
        sub.ctrl.send(None)
    report["runs"] = runs
    report["counters"] = {mode: summed(rows) for mode, rows in moved.items()}
    return report


def measure(args: argparse.Namespace) -> dict[str, Any]:
    problems: list[str] = []
    extra = ["--no-peer-exchange"] if args.static else []
    edges = bench.mesh_edges(TOPICS)
    load0 = os.getloadavg()
    with bench.Cluster(TOPICS, edges, False, ["--gossip", "tree", *extra]) as tree, \
            bench.Cluster(TOPICS, edges, False, ["--gossip", "interest", *extra]) as interest:
        report = rounds({"tree": tree, "interest": interest}, args, problems)
    runs = report.pop("runs")
    rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    report.update({
        "mesh10_topics_tree_msgs_per_s": round(rate["tree"]),
        "mesh10_topics_interest_msgs_per_s": round(rate["interest"]),
        "mesh10_msgs_per_s": round(rate["mesh10"]),
        "ratio": round(rate["interest"] / rate["tree"], 3) if rate["tree"] else 0.0,
        "to_mesh10": round(rate["interest"] / rate["mesh10"], 3) if rate["mesh10"] else 0.0,
        "runs": {k: [round(r) for r, _ in v] for k, v in runs.items()},
        "cpu_us_per_msg": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ratio": round(cpu["tree"] / cpu["interest"], 3) if cpu["interest"] else 0.0,
        "params": {"messages": args.messages, "mesh_messages": args.mesh_messages,
                   "rounds": args.rounds, "publishers": args.publishers,
                   "window": args.window, "static": args.static,
                   "payload_bytes": bench.PAYLOAD_SIZE, "cpus": os.cpu_count()},
        "loadavg": {"before": load0, "after": os.getloadavg()},
        "problems": problems, "ok": not problems})
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000,
                    help="mesh10_topics messages per run, in all (a multiple of "
                         "10 x publishers)")
    ap.add_argument("--mesh-messages", type=int, default=50_000,
                    help="mesh10 messages per run (bench.py's default)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds; medians are kept")
    ap.add_argument("--publishers", type=int, default=10,
                    help="publishers, on nodes 0 .. P-1 (1-10)")
    ap.add_argument("--window", type=int, default=bench.WINDOW,
                    help="messages in flight in all, at most (default bench.py's 16,000)")
    ap.add_argument("--static", action="store_true",
                    help="only the --peer links (--no-peer-exchange)")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each wait")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if not 1 <= args.publishers <= TOPICS:
        ap.error("--publishers must be 1-10")
    if args.messages < TOPICS * args.publishers or args.messages % (TOPICS * args.publishers):
        ap.error("--messages must be a positive multiple of 10 x publishers")
    if args.rounds < 1 or args.mesh_messages < 1 or args.window < TOPICS * BATCH:
        ap.error(f"--rounds and --mesh-messages must be at least 1, --window at least "
                 f"{TOPICS * BATCH}")
    signal.signal(signal.SIGTERM, bench._terminate)  # so that clean-up runs
    report = measure(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
        for problem in report["problems"]:
            print("PROBLEM:", problem)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
