#!/usr/bin/env python3
"""Measure what ``subscribe`` with ``since`` costs a node, and what a flood of them does
(docs/security.md, "Replay floods").

    replay_flood.py [--history-mib 4] [--payload 1000] [--requests 2000] [--clients 1]
                    [--flood-since 0|unknown] [--flood-topics none|all] [--json]

Two nodes, A and B, each in its own process (real loopback TCP with TLS, real Unix
sockets, in a temporary directory), linked to each other. A client fills A's history
(``--history-mib`` MiB of ``--payload``-byte messages), then:

- cost: replays one at a time on a fresh connection each (10 requests per case, within
  the per-client rate limit), timed from sending the request to receiving its reply and
  all its events. Cases: the whole history (all topics), the whole history filtered to a
  topic it does not hold, an unknown message id, and a recent message id.
- flood: ``--clients`` clients send ``--requests`` ``subscribe`` lines with ``since``
  in all, each its share in one write, and read the answers, while two probes
  measure the latency of a message published every 10 ms (an app on A to an app on
  A, an app on B to an app on A), and a task inside node A's process measures the
  longest time its event loop did not get round to it (it asks to wake every
  millisecond). The link A-B must stay up.

Works against older versions of p2pnode (``PYTHONPATH=OLD_CHECKOUT``): a node without a
replay rate limit answers every request. Only loopback is used.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MP = mp.get_context("fork")
PROBE_EVERY = 0.01
FLOOD_TIMEOUT = 120.0


# ---------------------------------------------------------------- the nodes (children)

def node_main(kwargs: dict[str, Any], port: Any, gap: Any) -> None:
    """Run one node until killed; publish its TCP port in ``port`` and the longest
    event-loop stall since the parent last zeroed it in ``gap`` (seconds)."""
    import trio

    from p2pnode.config import NodeConfig
    from p2pnode.node import Node

    fields = NodeConfig.__dataclass_fields__
    config = NodeConfig(**{k: v for k, v in kwargs.items() if k in fields})

    async def heartbeat() -> None:
        while True:
            before = time.perf_counter()
            await trio.sleep(0.001)
            late = time.perf_counter() - before - 0.001
            if late > gap.value:
                gap.value = late

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            node = Node(config)
            await nursery.start(node.run)
            assert node.listen_addr is not None
            port.value = node.listen_addr[1]
            nursery.start_soon(heartbeat)

    trio.run(main)


class NodeProc:
    def __init__(self, root: Path, name: str, **kwargs: Any) -> None:
        self.socket = root / f"{name}.sock"
        kwargs.update(name=name, listen_host="127.0.0.1", listen_port=0, mdns=False,
                      socket_path=self.socket, data_dir=root / name)
        self.port = MP.Value("i", 0)
        self.gap = MP.Value("d", 0.0)
        self.proc = MP.Process(target=node_main, args=(kwargs, self.port, self.gap),
                               daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 20
        while not self.port.value or not self.socket.exists():
            if time.monotonic() > deadline or not self.proc.is_alive():
                raise RuntimeError(f"node {name} did not start")
            time.sleep(0.02)

    def request(self, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        with Conn(self.socket, timeout) as conn:
            conn.send(req)
            return conn.reply()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


# ---------------------------------------------------------------- clients (parent)

class Conn:
    """A blocking API connection that splits lines without decoding events."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.pending: collections.deque[bytes] = collections.deque()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, req: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(req).encode() + b"\n")

    def next_line(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the node closed the connection")
            *lines, self.buf = (self.buf + data).split(b"\n")
            self.pending.extend(lines)
        return self.pending.popleft()

    def reply(self) -> dict[str, Any]:
        """The next reply (events on the way are skipped)."""
        while True:
            line = self.next_line()
            if is_reply(line):
                out: dict[str, Any] = json.loads(line)
                return out


def is_reply(line: bytes) -> bool:
    return line.startswith((b'{"ok"', b'{"id"'))


def timed_replay(conn: Conn, req: dict[str, Any]) -> tuple[float, int]:
    """Send one replay request; return (seconds until its reply and all its events came,
    events received). The reply may come before the events (older nodes) or after."""
    start = time.perf_counter()
    conn.send(req)
    events, reply = 0, None
    while reply is None or events < reply.get("replayed", 0):
        line = conn.next_line()
        if is_reply(line):
            reply = json.loads(line)
            if not reply.get("ok"):
                raise RuntimeError(f"replay refused: {reply}")
        elif line:
            events += 1
    return time.perf_counter() - start, events


def fill_history(node: NodeProc, target: int, payload: int) -> tuple[int, str]:
    """Publish on node until its history holds ``target`` bytes; return (messages, the id
    of the last one)."""
    data = "x" * payload
    sent, last = 0, ""
    with Conn(node.socket) as conn:
        while node.request({"op": "status"})["history"]["bytes"] < target:
            for k in range(200):
                conn.send({"op": "publish", "topic": f"fill{k % 8}", "data": data})
            for _ in range(200):
                last = conn.reply()["msg_id"]
            sent += 200
            if sent > 10 * target // payload + 10_000:
                raise RuntimeError("history does not fill up (is it turned off?)")
    return sent, last


def measure_costs(node: NodeProc, recent_id: str) -> dict[str, float]:
    cases = {
        "whole history, all topics": {"topics": [], "since": 0},
        "whole history, a topic it does not hold": {"topics": ["nothing"], "since": 0},
        "an unknown message id, a topic it does not hold": {"topics": ["nothing"],
                                                            "since": "00" * 16},
        "the last message id": {"topics": [], "since": recent_id},
    }
    out = {}
    for label, fields in cases.items():
        with Conn(node.socket) as conn:
            times = [timed_replay(conn, {"op": "subscribe", **fields})[0] for _ in range(10)]
        out[label] = sorted(times)[len(times) // 2]
    return out


class Probe:
    """Publishes a timestamp every 10 ms on ``pub``; ``sub`` measures the latency."""

    def __init__(self, pub: Path, sub: Path, topic: str) -> None:
        self.pub, self.sub, self.topic = pub, sub, topic
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.subscribed = threading.Event()
        self.threads = [threading.Thread(target=self._publish, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]
        self.threads[1].start()
        if not self.subscribed.wait(10):
            raise RuntimeError("probe did not subscribe")
        self.threads[0].start()

    def _publish(self) -> None:
        with Conn(self.pub) as conn:
            while not self.stop.is_set():
                conn.send({"op": "publish", "topic": self.topic, "data": str(time.monotonic())})
                time.sleep(PROBE_EVERY)

    def _receive(self) -> None:
        with Conn(self.sub, timeout=FLOOD_TIMEOUT) as conn:
            conn.send({"op": "subscribe", "topics": [self.topic]})
            conn.reply()
            self.subscribed.set()
            conn.sock.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    line = conn.next_line()
                except TimeoutError:
                    continue
                if b'"event":"message"' in line:
                    sent = float(json.loads(line)["data"])
                    self.latencies.append(time.monotonic() - sent)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def flood_one(conn: Conn, line: bytes, requests: int, counts: list[int]) -> None:
    """Send ``requests`` copies of ``line`` in one write; count the replies in
    ``counts`` (ok, rate_limited, other errors)."""
    sender = threading.Thread(target=conn.sock.sendall, args=(line * requests,))
    sender.start()
    while sum(counts) < requests:
        got = conn.next_line()
        if not is_reply(got):
            continue
        if b'"ok":true' in got:
            counts[0] += 1
        elif b'"rate_limited"' in got:
            counts[1] += 1
        else:
            counts[2] += 1
    sender.join()


def flood(node: NodeProc, requests: int, clients: int, since: str | float,
          topics: list[str]) -> dict[str, Any]:
    """``clients`` connections send ``requests`` replay requests in all, each its share
    in one write, at once."""
    line = json.dumps({"op": "subscribe", "topics": topics, "since": since}).encode() + b"\n"
    conns = [Conn(node.socket, timeout=FLOOD_TIMEOUT) for _ in range(clients)]
    counts = [[0, 0, 0] for _ in conns]
    threads = [threading.Thread(target=flood_one,
                                args=(c, line, requests // clients, counts[k]))
               for k, c in enumerate(conns)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(FLOOD_TIMEOUT)
    seconds = time.perf_counter() - start
    for c in conns:
        c.sock.close()
    return {"seconds": seconds, "ok": sum(c[0] for c in counts),
            "rate_limited": sum(c[1] for c in counts), "other_errors": sum(c[2] for c in counts)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="p2pflood-"))
    nodes: list[NodeProc] = []
    try:
        history = int(args.history_mib * (1 << 20))
        a = NodeProc(root, "a", history_bytes=history, history_batches=100_000)
        nodes.append(a)
        b = NodeProc(root, "b", peers=(("127.0.0.1", a.port.value),))
        nodes.append(b)
        a.request({"op": "peers", "wait_min": 1, "timeout": 20})
        messages, last_id = fill_history(a, int(history * 0.95), args.payload)
        result: dict[str, Any] = {"history_bytes": a.request({"op": "status"})["history"]
                                  ["bytes"], "history_messages": messages}
        result["cost_s"] = measure_costs(a, last_id)
        probes = [Probe(a.socket, a.socket, "probe-aa"), Probe(b.socket, a.socket, "probe-ba")]
        time.sleep(0.3)
        a.gap.value = 0.0
        since: str | float = 0 if args.flood_since == "0" else "00" * 16
        topics = [] if args.flood_topics == "all" else ["nothing"]
        result["flood"] = flood(a, args.requests, args.clients, since, topics)
        result["flood"]["max_loop_stall_s"] = a.gap.value
        time.sleep(0.3)
        for p in probes:
            p.close()
        for p, name in zip(probes, ("a_to_a", "b_to_a"), strict=True):
            lat = sorted(p.latencies)
            result["flood"][f"probe_{name}_max_latency_s"] = lat[-1] if lat else None
            result["flood"][f"probe_{name}_messages"] = len(lat)
        status = a.request({"op": "status"})
        result["link_closed_during_run"] = status["links"]["closed"]
        result["peers_after"] = len(a.request({"op": "peers"})["peers"])
        return result
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-mib", type=float, default=4.0)
    parser.add_argument("--payload", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1,
                        help="connections the flood is spread over (default 1)")
    parser.add_argument("--flood-since", choices=("0", "unknown"), default="0")
    parser.add_argument("--flood-topics", choices=("none", "all"), default="none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"history: {result['history_bytes']} bytes, {result['history_messages']} messages")
    for label, secs in result["cost_s"].items():
        print(f"cost per replay, {label}: {secs * 1000:.2f} ms")
    for key, value in result["flood"].items():
        print(f"flood {key}: {value:.3f}" if isinstance(value, float) else
              f"flood {key}: {value}")
    print(f"links closed: {result['link_closed_during_run']}, "
          f"peers of A after: {result['peers_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
