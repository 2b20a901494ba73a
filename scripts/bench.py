#!/usr/bin/env python3
"""Benchmark real ``p2pnode run`` processes on loopback (see docs/performance.md).

    bench.py [--security on|off|both] [--insecure] [--messages N] [--duration S]
             [--quick] [--json]

Measures, with every node started as ``p2pnode run --no-mdns --listen 127.0.0.1:0``
with its own socket and data directory in a temporary directory:

- hop1_msgs_per_s: an app publishes 100-byte payloads (pipelined) on node A's socket,
  an app subscribed on node B's socket receives them; every message must arrive
  exactly once.
- hop1_latency_p50_ms / hop1_latency_p99_ms: the same path at a steady 1,000 msgs/s.
- mesh10_msgs_per_s: 10 nodes, degree 3 (static --peer edges), a subscriber on every
  node, one publisher: messages / time until ALL nodes have received all messages.
- mesh10_topics (``scripts/mesh_topics.py``, which imports this module): the same 10
  nodes and edges, node i's subscriber on topic t{i} only, 10 publishers (one per node)
  sending round-robin over the 10 topics; ``--gossip tree`` against ``--gossip
  interest`` (issue 19: at least 3x mesh10_msgs_per_s), with mesh10 in the same rounds.
- rss_mb_max: the peak VmHWM of the node processes.
- raw_trio_msgs_per_s: length-prefixed 100-byte frames over one loopback TCP
  connection between two trio processes, batched; ratio_to_raw = hop1 / raw.
- raw_relay_latency_p50_ms / _p99_ms: the floor of the latency path without p2pnode:
  the same four processes (publisher, relay, relay, subscriber; Unix socket, TCP,
  Unix socket), the relays trio processes that copy bytes as they come.

- clients: what apps get through the shipped clients (``scripts/client_bench.py``:
  trio, asyncio, blocking; throughput, and p50/p99 at 1,000 msgs/s), beside the
  hand-tuned path (``reference``) and nats-server + nats-py where installed, on a
  pair of nodes of their own; ``request_rtt_us``, a lone publish's round trip on
  the socket, beside ``echo_rtt_us``, a trio echo server's.

The measuring apps are separate processes with raw sockets and bulk parsing. Exit
status 1 if any message was lost or duplicated (or events were dropped).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pnode.client import check_server

PAYLOAD_SIZE = 100
TOPIC = b"bench"
P2PNODE = str(Path(sys.executable).with_name("p2pnode"))
if not Path(P2PNODE).exists():
    P2PNODE = shutil.which("p2pnode") or "p2pnode"
# payload: "SSSSSSSSSS TTTTTTTTTTTTTTTTTTT " + padding to 100 bytes (seq, monotonic ns)
EVENT_RE = re.compile(rb'"data":"(\d{10}) (\d{19}) ')
MP = mp.get_context("fork")
WINDOW = 16_000  # messages in flight between the publisher and the slowest subscriber
IDLE_S = 5.0  # a subscriber gives up after this long without data


class BenchError(Exception):
    pass


def payload_request(seq: int, t_ns: int) -> bytes:
    head = b"%010d %019d " % (seq, t_ns)
    data = head + b"x" * (PAYLOAD_SIZE - len(head))
    return b'{"op":"publish","topic":"' + TOPIC + b'","data":"' + data + b'"}\n'


# ---------------------------------------------------------------- nodes

class Node:
    def __init__(self, root: Path, name: str, peers: list[str], insecure: bool,
                 extra: Sequence[str] = ()) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.socket = self.dir / "api.sock"
        self.log = self.dir / "stderr.log"
        args = [P2PNODE, "run", "--no-mdns", "--listen", "127.0.0.1:0",
                "--socket", str(self.socket), "--data-dir", str(self.dir / "data"),
                "--name", name, "--log-level", "warning"]
        for p in peers:
            args += ["--peer", p]
        if insecure:
            args.append("--insecure")
        args += extra
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env, start_new_session=True)
        self.port = 0

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise BenchError(f"node {self.name} exited {self.proc.returncode}: {text[-500:]}")
            time.sleep(0.02)
        raise BenchError(f"node {self.name} not ready after {timeout}s")

    def request(self, req: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            check_server(s, self.socket)  # the node we started, not another user's
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise BenchError(f"node {self.name} closed the API connection")
                buf += chunk
        reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
        if not reply.get("ok"):
            raise BenchError(f"node {self.name}: {reply}")
        return reply

    def vm_hwm_kb(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Cluster:
    """Nodes with static edges ``(i, j)``: node i dials node j; ``node_args``: more flags
    of ``p2pnode run`` for every node (``--store none``, ``--sync full``)."""

    def __init__(self, n: int, edges: list[tuple[int, int]], insecure: bool,
                 node_args: Sequence[str] = ()) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="p2pbench-"))
        self.nodes: list[Node] = []
        self.n, self.edges, self.insecure = n, edges, insecure
        self.node_args = list(node_args)
        self.children: list[Any] = []

    def __enter__(self) -> Cluster:
        try:
            if any(a <= j for a, j in self.edges):
                raise BenchError("edges must go from a higher to a lower index")
            for i in range(self.n):
                peers = [f"127.0.0.1:{self.nodes[j].port}" for a, j in self.edges if a == i]
                node = Node(self.tmp, f"n{i}", peers, self.insecure, self.node_args)
                self.nodes.append(node)
                node.wait_ready()
            for i, node in enumerate(self.nodes):
                degree = sum(1 for a, b in self.edges if i in (a, b))
                node.request({"op": "peers", "wait_min": degree, "timeout": 20}, 25)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for child in self.children:
            if child.is_alive():
                child.kill()
            child.join(5)
        for node in self.nodes:
            try:
                node.stop()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def rss_mb(self) -> float:
        return max(n.vm_hwm_kb() for n in self.nodes) / 1024


# ---------------------------------------------------------------- measuring apps

def subscriber_main(paths: list[str], n: int, deadline: float, latency: bool,
                    ready: Any, result: Any, progress: Any) -> None:
    """Subscribe on every socket in ``paths``; count each seq per socket; report."""
    socks = []
    sel = selectors.DefaultSelector()
    counts = [bytearray(n) for _ in paths]
    state = []
    for k, path in enumerate(paths):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.connect(path)
        check_server(s, path)
        s.sendall(b'{"op":"subscribe","topics":["' + TOPIC + b'"]}\n')
        buf = b""
        while b"\n" not in buf:
            buf += s.recv(65536)
        if b'"ok":true' not in buf.split(b"\n", 1)[0]:
            raise BenchError(f"subscribe failed: {buf!r}")
        s.setblocking(False)
        socks.append(s)
        st = {"k": k, "rest": buf.split(b"\n", 1)[1], "got": 0, "dups": 0, "dropped": 0,
              "last": 0, "first": 0}
        state.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    ready.send(True)
    lat: list[int] = []
    done = 0
    dropped_re = re.compile(rb'"event":"dropped","count":(\d+)')
    last_data = time.monotonic()
    while done < len(paths) and time.monotonic() < deadline:
        if time.monotonic() - last_data > IDLE_S:
            break  # nothing more is coming: lost messages are reported
        for key, _ in sel.select(0.2):
            last_data = time.monotonic()
            st = key.data
            try:
                chunk = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            if not chunk:
                sel.unregister(key.fileobj)
                done += 1
                continue
            data = st["rest"] + chunk
            cut = data.rfind(b"\n") + 1
            st["rest"] = data[cut:]
            data = data[:cut]
            cnt = counts[st["k"]]
            before = st["got"]
            for seq_b, t_b in EVENT_RE.findall(data):
                seq = int(seq_b)
                if cnt[seq]:
                    st["dups"] += 1
                else:
                    st["got"] += 1
                cnt[seq] = 1
                if latency:
                    lat.append(now - int(t_b))
            if b'"dropped"' in data:
                st["dropped"] += sum(int(c) for c in dropped_re.findall(data))
            if st["got"] != before:
                progress[st["k"]] = st["got"] + st["dropped"]
                st["last"] = now
                if not st["first"]:
                    st["first"] = now
                if st["got"] == n:
                    sel.unregister(key.fileobj)
                    done += 1
    for s in socks:
        s.close()
    result.send({"per_node": [{k: v for k, v in st.items() if k not in ("rest",)}
                              for st in state], "lat_ns": lat})


def start_subscriber(cluster: Cluster, idx: list[int], n: int, timeout: float,
                     latency: bool = False) -> tuple[Any, Any]:
    ready_r, ready_w = MP.Pipe(False)
    res_r, res_w = MP.Pipe(False)
    progress = MP.Array("q", len(idx), lock=False)
    proc = MP.Process(target=subscriber_main, daemon=True,
                      args=([str(cluster.nodes[i].socket) for i in idx], n,
                            time.monotonic() + timeout, latency, ready_w, res_w, progress))
    proc.start()
    cluster.children.append(proc)
    if not ready_r.poll(15):
        raise BenchError("subscriber did not start")
    ready_r.recv()
    return proc, res_r, progress


def collect(proc: Any, res: Any, timeout: float) -> dict[str, Any]:
    if not res.poll(timeout):
        raise BenchError("subscriber gave no result")
    out: dict[str, Any] = res.recv()
    proc.join(5)
    return out


class Publisher:
    """Raw-socket publisher on one node's socket; a thread counts the replies."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect(str(path))
        check_server(self.sock, path)
        self.replies = 0
        self.errors = 0
        self.first_error = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self.replies += chunk.count(b"\n")
            bad = chunk.count(b'"ok":false')
            if bad:
                self.errors += bad
                self.first_error = self.first_error or chunk[:300]

    def wait_replies(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.replies < n and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.replies < n:
            raise BenchError(f"only {self.replies}/{n} publish replies")
        if self.errors:
            raise BenchError(f"{self.errors} publish errors, e.g. {self.first_error!r}")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.reader.join(5)


def check_exact(out: dict[str, Any], n: int, what: str, problems: list[str]) -> None:
    for i, st in enumerate(out["per_node"]):
        if st["got"] != n or st["dups"] or st["dropped"]:
            problems.append(f"{what}: subscriber {i} got {st['got']}/{n} distinct, "
                            f"{st['dups']} duplicates, {st['dropped']} dropped events")


def throughput(cluster: Cluster, pub: int, subs: list[int], n: int, timeout: float,
               problems: list[str], what: str) -> float:
    proc, res, progress = start_subscriber(cluster, subs, n, timeout)
    requests = [payload_request(seq, 0) for seq in range(n)]
    batch = 256
    publisher = Publisher(cluster.nodes[pub].socket)
    try:
        deadline = time.monotonic() + timeout
        t0 = time.monotonic_ns()
        for i in range(0, n, batch):
            # flow control: at most WINDOW messages published but not yet received by
            # the slowest subscriber, so that the node's per-client event queue (8 MiB,
            # about 36,000 events) never overflows; the node drops, never waits
            while i - min(progress) > WINDOW and time.monotonic() < deadline:
                time.sleep(0.0002)
            publisher.sock.sendall(b"".join(requests[i:i + batch]))
        publisher.wait_replies(n, timeout)
        out = collect(proc, res, timeout)
    finally:
        publisher.close()
    check_exact(out, n, what, problems)
    last = max(st["last"] for st in out["per_node"])
    if not last:
        return 0.0
    return n / ((last - t0) / 1e9)


def latency(cluster: Cluster, n: int, rate: float, problems: list[str],
            what: str) -> tuple[float, float]:
    proc, res, _ = start_subscriber(cluster, [1], n, n / rate + 20, latency=True)
    publisher = Publisher(cluster.nodes[0].socket)
    try:
        period = 1e9 / rate
        start = time.monotonic_ns() + 10_000_000
        for seq in range(n):
            due = start + seq * period
            now = time.monotonic_ns()
            if due > now:
                # Sleep, never spin: a spinning publisher takes a whole core from the
                # nodes on a 2-core machine and shows up as milliseconds of latency.
                time.sleep((due - now) / 1e9)
            publisher.sock.sendall(payload_request(seq, time.monotonic_ns()))
        publisher.wait_replies(n, 20)
        out = collect(proc, res, 30)
    finally:
        publisher.close()
    check_exact(out, n, what, problems)
    lat = sorted(out["lat_ns"])
    if not lat:
        return 0.0, 0.0

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6

    return pct(0.50), pct(0.99)


# ---------------------------------------------------------------- raw trio reference

FRAME = struct.Struct(">I")


def raw_receiver(n: int, port_w: Any, res_w: Any) -> None:
    import trio

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port_w.send(listeners[0].socket.getsockname()[1])
        stream = await listeners[0].accept()
        got = 0
        buf = bytearray()
        t_first = 0
        unpack = FRAME.unpack_from
        while got < n:
            data = await stream.receive_some(256 * 1024)
            if not data:
                break
            if not t_first:
                t_first = time.monotonic_ns()
            buf += data
            pos = 0
            end = len(buf)
            while end - pos >= 4:
                (size,) = unpack(buf, pos)
                if end - pos - 4 < size:
                    break
                frame = buf[pos + 4:pos + 4 + size]  # noqa: F841 - a real parser slices
                pos += 4 + size
                got += 1
            del buf[:pos]
        res_w.send((got, time.monotonic_ns()))
        await stream.aclose()

    trio.run(main)


def raw_sender(port: int, n: int, batch: int, t0_w: Any) -> None:
    import trio

    async def main() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        frames = [FRAME.pack(PAYLOAD_SIZE) + b"%010d" % i + b"y" * (PAYLOAD_SIZE - 10)
                  for i in range(n)]
        t0_w.send(time.monotonic_ns())
        for i in range(0, n, batch):
            await stream.send_all(b"".join(frames[i:i + batch]))
        await stream.aclose()

    trio.run(main)


def raw_trio(n: int, timeout: float) -> float:
    port_r, port_w = MP.Pipe(False)
    res_r, res_w = MP.Pipe(False)
    t0_r, t0_w = MP.Pipe(False)
    recv = MP.Process(target=raw_receiver, args=(n, port_w, res_w), daemon=True)
    procs = [recv]
    try:
        recv.start()
        if not port_r.poll(10):
            raise BenchError("raw receiver did not start")
        send = MP.Process(target=raw_sender, args=(port_r.recv(), n, 256, t0_w), daemon=True)
        procs.append(send)
        send.start()
        if not t0_r.poll(timeout) or not res_r.poll(timeout):
            raise BenchError("raw trio reference timed out")
        t0 = t0_r.recv()
        got, t1 = res_r.recv()
        if got != n:
            raise BenchError(f"raw trio: {got}/{n} frames")
        return n / ((t1 - t0) / 1e9)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


# ---------------------------------------------------------------- raw relay latency floor

def raw_relay(listen: str, out: str, ready_w: Any) -> None:
    """A trio process that accepts one connection (``listen``: a Unix socket path, or
    "tcp" for 127.0.0.1:0) and copies what it reads to ``out`` (a path or a port)."""
    import trio

    async def main() -> None:
        if listen == "tcp":
            listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
            ready_w.send(listener.socket.getsockname()[1])
        else:
            sock = trio.socket.socket(socket.AF_UNIX)
            await sock.bind(listen)
            sock.listen()
            listener = trio.SocketListener(sock)
            ready_w.send(listen)
        inp = await listener.accept()
        dest = (await trio.open_tcp_stream("127.0.0.1", int(out)) if out.isdigit()
                else await trio.open_unix_socket(out))
        while data := await inp.receive_some(256 * 1024):
            await dest.send_all(data)
        await dest.aclose()

    trio.run(main)


def raw_relay_latency(n: int, rate: float, timeout: float) -> tuple[float, float]:
    """The floor of the hop1 latency path without p2pnode: publisher → relay A (Unix
    socket in, TCP out) → relay B (TCP in, Unix socket out) → subscriber, each relay a
    trio process that copies bytes as they come; one 16-byte message per 1/rate s."""
    tmp = Path(tempfile.mkdtemp(prefix="p2pb-relay-"))
    sub_path, a_path = str(tmp / "sub.sock"), str(tmp / "a.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sub_path)
    server.listen(1)
    procs = []
    try:
        b_r, b_w = MP.Pipe(False)
        a_r, a_w = MP.Pipe(False)
        procs.append(MP.Process(target=raw_relay, args=("tcp", sub_path, b_w), daemon=True))
        procs[-1].start()
        if not b_r.poll(10):
            raise BenchError("relay B did not start")
        procs.append(MP.Process(target=raw_relay, args=(a_path, str(b_r.recv()), a_w),
                                daemon=True))
        procs[-1].start()
        if not a_r.poll(10):
            raise BenchError("relay A did not start")
        a_r.recv()
        pub = socket.socket(socket.AF_UNIX)
        pub.connect(a_path)
        server.settimeout(timeout)
        sub, _ = server.accept()
        sub.settimeout(timeout)
        lat = []
        period = 1 / rate
        start = time.monotonic() + 0.01
        buf = b""
        for seq in range(n):
            wait = start + seq * period - time.monotonic()  # read the clock once
            if wait > 0:
                time.sleep(wait)
            pub.sendall(struct.pack(">QQ", seq, time.monotonic_ns()))
            while len(buf) < 16:
                buf += sub.recv(65536)
            while len(buf) >= 16:
                _, sent = struct.unpack_from(">QQ", buf)
                lat.append(time.monotonic_ns() - sent)
                buf = buf[16:]
        pub.close()
        sub.close()
    finally:
        server.close()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        shutil.rmtree(tmp, ignore_errors=True)
    lat.sort()
    return lat[len(lat) // 2] / 1e6, lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1e6


# ---------------------------------------------------------------- scenarios

def mesh_edges(n: int) -> list[tuple[int, int]]:
    """Degree 3 for even n >= 6: a ring plus chords i -- i + n/2 (higher index dials)."""
    half = n // 2
    edges = []
    for i in range(n):
        j = (i + 1) % n
        edges.append((i, j))
    for i in range(half):
        edges.append((i, i + half))
    return [(max(a, b), min(a, b)) for a, b in edges]


def run_security(insecure: bool, args: argparse.Namespace) -> dict[str, Any]:
    problems: list[str] = []
    out: dict[str, Any] = {}
    rss = 0.0
    n = args.messages
    with Cluster(2, [(1, 0)], insecure) as c:
        sec = c.nodes[0].request({"op": "status"}).get("security", {})
        out["security"] = {"tls": sec.get("links") == "tls1.3",
                           "signed": bool(sec.get("signed_batches")),
                           "members_only": bool(sec.get("members_only"))}
        out["security_detail"] = sec
        tag = "insecure" if insecure else "secure"
        # warm-up, then the measured run
        throughput(c, 0, [1], min(n, 2000), args.timeout, problems, f"{tag} warm-up")
        rates = []
        for _ in range(args.repeat):
            rates.append(throughput(c, 0, [1], n, args.timeout, problems, f"{tag} hop1"))
        out["hop1_msgs_per_s"] = round(sorted(rates)[len(rates) // 2])
        out["hop1_runs"] = [round(r) for r in rates]
        p50, p99 = latency(c, args.latency_messages, 1000.0, problems, f"{tag} latency")
        out["hop1_latency_p50_ms"] = round(p50, 3)
        out["hop1_latency_p99_ms"] = round(p99, 3)
        rss = max(rss, c.rss_mb())
    with Cluster(10, mesh_edges(10), insecure) as c:
        mn = args.mesh_messages
        throughput(c, 0, list(range(10)), min(mn, 1000), args.timeout, problems,
                   f"{tag} mesh warm-up")
        out["mesh10_msgs_per_s"] = round(throughput(c, 0, list(range(10)), mn, args.timeout,
                                                    problems, f"{tag} mesh10"))
        rss = max(rss, c.rss_mb())
    out["rss_mb_max"] = round(rss, 1)
    out["problems"] = problems
    return out


def clients_report(args: argparse.Namespace) -> dict[str, Any]:
    """What apps get through the shipped clients, beside the hand-tuned path, the lone
    request round trip beside a trio echo server, and NATS where installed
    (``scripts/client_bench.py`` on its own pair of nodes, TLS on)."""
    import client_bench  # scripts/client_bench.py, which imports this module

    kinds = ["reference"] + [k for k in args.clients.split(",") if k]
    if "nats" in kinds and not client_bench.nats_available():
        kinds.remove("nats")
    opts = argparse.Namespace(messages=max(1000, args.messages // 2), wait_messages=0,
                              repeat=args.repeat, latency=True, timeout=args.timeout,
                              latency_messages=args.latency_messages,
                              rtt_requests=200 if args.quick else 2000)
    return dict(client_bench.measure(kinds, opts))


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--security", choices=["on", "off", "both"], default="on")
    ap.add_argument("--insecure", action="store_true", help="same as --security off")
    ap.add_argument("--messages", type=int, default=200_000, help="hop1 messages per run")
    ap.add_argument("--mesh-messages", type=int, default=None,
                    help="mesh10 messages (default messages/4)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds of the 1,000 msgs/s latency run (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="hop1 runs; the median is kept")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each wait")
    ap.add_argument("--clients", default="trio,asyncio,blocking,nats",
                    help="shipped clients to measure in the same run (scripts/client_bench.py;"
                         " nats: the NATS reference, if installed); empty: none")
    ap.add_argument("--quick", action="store_true", help="small sizes, for tests")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.insecure:
        args.security = "off"
    if args.quick:
        args.messages = min(args.messages, 5000)
        args.duration = min(args.duration, 0.5)
        args.repeat = 1
        args.timeout = min(args.timeout, 20.0)
    if args.mesh_messages is None:
        args.mesh_messages = max(1000, args.messages // 4)
    args.latency_messages = max(100, int(args.duration * 1000))
    signal.signal(signal.SIGTERM, _terminate)  # so that the clean-up runs
    for name in ("messages", "mesh_messages", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    raw = raw_trio(max(args.messages, 100_000) if not args.quick else 50_000, args.timeout)
    floor = raw_relay_latency(args.latency_messages, 1000.0, args.timeout)
    modes = {"on": [False], "off": [True], "both": [False, True]}[args.security]
    results: dict[str, Any] = {}
    for insecure in modes:
        r = run_security(insecure, args)
        r["raw_trio_msgs_per_s"] = round(raw)
        r["raw_relay_latency_p50_ms"] = round(floor[0], 3)
        r["raw_relay_latency_p99_ms"] = round(floor[1], 3)
        r["ratio_to_raw"] = round(r["hop1_msgs_per_s"] / raw, 4)
        results["off" if insecure else "on"] = r
    first = results["on" if "on" in results else "off"]
    report: dict[str, Any] = dict(first)
    report["clients"] = clients_report(args)
    if "on" in results and "off" in results:
        report["insecure"] = results["off"]
    report["params"] = {"messages": args.messages, "mesh_messages": args.mesh_messages,
                        "latency_messages": args.latency_messages, "repeat": args.repeat,
                        "payload_bytes": PAYLOAD_SIZE, "cpus": os.cpu_count()}
    problems = [p for r in results.values() for p in r["problems"]]
    report["ok"] = not problems
    if args.json:
        print(json.dumps(report))
    else:
        for key, r in results.items():
            print(f"security {key}: " + ", ".join(
                f"{k}={v}" for k, v in r.items() if k not in ("security_detail", "problems")))
        for kind, row in report["clients"].items():
            if isinstance(row, dict):
                print(f"client {kind}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
        c = report["clients"]
        print(f"lone publish round trip {c['request_rtt_us']} us, trio echo "
              f"{c['echo_rtt_us']} us ({c['request_to_echo']}x)")
        for p in problems:
            print("PROBLEM:", p)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
