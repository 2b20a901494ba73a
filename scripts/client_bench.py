#!/usr/bin/env python3
"""What apps get through the shipped Python clients, one hop with TLS (issue 14).

    client_bench.py [--messages N] [--repeat R] [--kinds trio,asyncio,...] [--json]

Two ``p2pnode run`` nodes on loopback (``scripts/bench.py``'s ``Cluster``: TLS,
signed batches), B dialling A. For each kind of client, a publisher process
publishes 100-byte payloads on A's socket as fast as it can, and a subscriber
process of the same kind receives them on B's; the figure is messages / (time of
the last message received - time the publisher started), and every message must
arrive exactly once. Kinds:

- ``trio``, ``asyncio``, ``blocking``: ``p2pnode.client`` as the docs show it,
  pipelined ``publish`` then ``flush``;
- ``trio-wait``: ``await client.publish(..., wait=True)``, one round trip per message
  (what the trio client did before it pipelined);
- ``reference``: ``scripts/bench.py``'s hand-tuned raw-socket publisher and regex
  subscriber, in the same run (the node's ceiling);
- ``nats``: nats-server (started here on 127.0.0.1, a free port, stopped at the end)
  with nats-py (asyncio) on both sides, when both are installed (``pip install
  'p2pnode[bench]'``, ``apt-get install nats-server``).

Like bench.py, the publisher keeps at most ``WINDOW`` messages ahead of the
subscriber (a shared counter), so that no queue overflows: the node drops events for
a subscriber that does not keep up, it never waits for one. Latency: ``--latency``
adds p50/p99 at 1,000 messages/s for each kind. Loopback only; run it inside
``unshare -n sh -c 'ip link set lo up && ...'`` for a private network.

The nodes keep their message store (docs/store.md) with ``--sync normal`` unless
``--store none`` or ``--sync`` say otherwise. ``--store both`` runs a second pair of
nodes without a store, its runs interleaved with the first pair's, and adds for each
kind ``no_store_msgs_per_s`` and ``store_to_no_store`` (the cost of the store), and the
lone publish's round trip without a store (``no_store_request_rtt_us``). Every kind
but NATS also gets ``node_cpu_us_per_msg``: the CPU time both nodes used during its
runs (every thread), per message (less sensitive to a busy machine than the rates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # scripts/bench.py: the cluster and the hand-tuned path

from p2pnode.client import BlockingClient, open_asyncio_client, open_client

MP = mp.get_context("fork")
TOPIC = "bench"
WINDOW = 16_000  # messages published but not yet received (as bench.py)
STEP = 256  # the publisher looks at the subscriber's progress every STEP messages
KINDS = ("reference", "trio", "asyncio", "blocking", "trio-wait", "nats")


def payload(seq: int) -> str:
    head = f"{seq:010d} {time.monotonic_ns():019d} "
    return head + "x" * (bench.PAYLOAD_SIZE - len(head))


class Tally:
    """What a subscriber saw: each seq once, the time of the last new one."""

    def __init__(self, n: int, progress: Any) -> None:
        self.seen = bytearray(n)
        self.got = self.dups = 0
        self.last = 0
        self.lat: list[int] = []
        self.progress = progress

    def add(self, data: str | bytes, latency: bool) -> None:
        now = time.monotonic_ns()
        seq = int(data[:10])
        if self.seen[seq]:
            self.dups += 1
            return
        self.seen[seq] = 1
        self.got += 1
        self.last = now
        if latency:
            self.lat.append(now - int(data[11:30]))
        if self.got % STEP == 0:
            self.progress.value = self.got

    def result(self) -> dict[str, Any]:
        self.progress.value = self.got
        return {"got": self.got, "dups": self.dups, "last": self.last, "lat": self.lat}


# ---------------------------------------------------------------- subscribers

def sub_main(kind: str, where: str, n: int, latency: bool, ready: Any, res: Any,
             progress: Any, deadline: float) -> None:
    tally = Tally(n, progress)
    try:
        if kind in ("trio", "trio-wait"):
            trio.run(trio_sub, where, tally, latency, ready, deadline)
        elif kind == "asyncio":
            asyncio.run(asyncio_sub(where, tally, latency, ready, deadline))
        elif kind == "blocking":
            blocking_sub(where, tally, latency, ready, deadline)
        else:
            asyncio.run(nats_sub(where, tally, latency, ready, deadline))
        res.send(tally.result())
    except BaseException as exc:
        res.send({"error": repr(exc), **tally.result()})


async def trio_sub(path: str, tally: Tally, latency: bool, ready: Any, deadline: float) -> None:
    async with open_client(path) as client:
        await client.subscribe([TOPIC])
        ready.send(True)
        with trio.move_on_at(trio.current_time() + deadline - time.monotonic()):
            async for event in client.events():
                tally.add(event["data"], latency)
                if tally.got == len(tally.seen):
                    break


async def asyncio_sub(path: str, tally: Tally, latency: bool, ready: Any,
                      deadline: float) -> None:
    async with open_asyncio_client(path) as client:
        await client.subscribe([TOPIC])
        ready.send(True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline - time.monotonic()):
                async for event in client.events():
                    tally.add(event["data"], latency)
                    if tally.got == len(tally.seen):
                        break


def blocking_sub(path: str, tally: Tally, latency: bool, ready: Any, deadline: float) -> None:
    with BlockingClient(path, timeout=max(1.0, deadline - time.monotonic())) as client:
        client.subscribe([TOPIC])
        ready.send(True)
        for event in client.events():
            tally.add(event["data"], latency)
            if tally.got == len(tally.seen):
                break


async def nats_sub(url: str, tally: Tally, latency: bool, ready: Any, deadline: float) -> None:
    import nats

    nc = await nats.connect(url)
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        tally.add(msg.data, latency)
        if tally.got == len(tally.seen):
            done.set()

    await nc.subscribe(TOPIC, cb=on_msg, pending_msgs_limit=1 << 20,
                       pending_bytes_limit=1 << 30)
    await nc.flush()
    ready.send(True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline - time.monotonic()):
            await done.wait()
    await nc.close()


# ---------------------------------------------------------------- publishers

def pub_main(kind: str, where: str, n: int, rate: float, progress: Any, res: Any) -> None:
    try:
        if kind in ("trio", "trio-wait"):
            trio.run(trio_pub, where, n, rate, progress, kind == "trio-wait")
        elif kind == "asyncio":
            asyncio.run(asyncio_pub(where, n, rate, progress))
        elif kind == "blocking":
            blocking_pub(where, n, rate, progress)
        else:
            asyncio.run(nats_pub(where, n, rate, progress))
        res.send({})
    except BaseException as exc:
        res.send({"error": repr(exc)})


def ahead(seq: int, progress: Any) -> bool:
    return seq - int(progress.value) > WINDOW


def pause_for(seq: int, rate: float, start: float) -> float:
    """Seconds to wait before message ``seq`` at ``rate`` (0: as fast as possible)."""
    return max(0.0, start + seq / rate - time.monotonic()) if rate else 0.0


async def trio_pub(path: str, n: int, rate: float, progress: Any, wait: bool) -> None:
    async with open_client(path) as client:
        start = time.monotonic()
        for seq in range(n):
            if rate:
                await trio.sleep(pause_for(seq, rate, start))
            elif seq % STEP == 0:
                while ahead(seq, progress):  # noqa: ASYNC110 - another process's counter
                    await trio.sleep(0.0002)
            if wait:
                await client.publish(TOPIC, payload(seq), wait=True)
            else:
                await client.publish(TOPIC, payload(seq))
        await client.flush()


async def asyncio_pub(path: str, n: int, rate: float, progress: Any) -> None:
    async with open_asyncio_client(path) as client:
        start = time.monotonic()
        for seq in range(n):
            if rate:
                await asyncio.sleep(pause_for(seq, rate, start))
            elif seq % STEP == 0:
                while ahead(seq, progress):  # noqa: ASYNC110 - another process's counter
                    await asyncio.sleep(0.0002)
            await client.publish(TOPIC, payload(seq))
        await client.flush()


def blocking_pub(path: str, n: int, rate: float, progress: Any) -> None:
    with BlockingClient(path) as client:
        start = time.monotonic()
        for seq in range(n):
            if rate:
                time.sleep(pause_for(seq, rate, start))
            elif seq % STEP == 0:
                while ahead(seq, progress):
                    time.sleep(0.0002)
            client.publish(TOPIC, payload(seq))
        client.flush()


async def nats_pub(url: str, n: int, rate: float, progress: Any) -> None:
    import nats

    nc = await nats.connect(url)
    start = time.monotonic()
    for seq in range(n):
        if rate:
            await asyncio.sleep(pause_for(seq, rate, start))
        elif seq % STEP == 0:
            while ahead(seq, progress):  # noqa: ASYNC110 - another process's counter
                await asyncio.sleep(0.0002)
        await nc.publish(TOPIC, payload(seq).encode())
    await nc.flush()
    await nc.close()


# ---------------------------------------------------------------- one measurement

def run_once(kind: str, pub_at: str, sub_at: str, n: int, rate: float, timeout: float,
             ) -> dict[str, Any]:
    """One publisher and one subscriber of ``kind``; returns msgs_per_s (or latency)."""
    progress = MP.Value("q", 0, lock=False)
    ready_r, ready_w = MP.Pipe(False)
    sres_r, sres_w = MP.Pipe(False)
    pres_r, pres_w = MP.Pipe(False)
    deadline = time.monotonic() + timeout
    sub = MP.Process(target=sub_main, daemon=True, args=(kind, sub_at, n, bool(rate), ready_w,
                                                         sres_w, progress, deadline))
    sub.start()
    pub = None
    try:
        if not ready_r.poll(15):
            raise bench.BenchError(f"{kind}: the subscriber did not start")
        ready_r.recv()
        t0 = time.monotonic_ns()
        pub = MP.Process(target=pub_main, daemon=True,
                         args=(kind, pub_at, n, rate, progress, pres_w))
        pub.start()
        if not sres_r.poll(timeout + 5):
            raise bench.BenchError(f"{kind}: the subscriber gave no result")
        out = sres_r.recv()
        if not pres_r.poll(10):
            raise bench.BenchError(f"{kind}: the publisher gave no result")
        perr = pres_r.recv().get("error")
    finally:
        for proc in (pub, sub):
            if proc is not None:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
    problem = out.get("error") or perr
    if out["got"] != n or out["dups"] or problem:
        raise bench.BenchError(f"{kind}: got {out['got']}/{n}, {out['dups']} duplicates"
                               + (f"; {problem}" if problem else ""))
    if rate:
        lat = sorted(out["lat"])
        return {"p50_ms": lat[len(lat) // 2] / 1e6,
                "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1e6}
    return {"msgs_per_s": n / ((out["last"] - t0) / 1e9)}


def reference_once(cluster: bench.Cluster, n: int, timeout: float) -> dict[str, Any]:
    problems: list[str] = []
    rate = bench.throughput(cluster, 0, [1], n, timeout, problems, "reference")
    if problems:
        raise bench.BenchError("; ".join(problems))
    return {"msgs_per_s": rate}


# ---------------------------------------------------------------- NATS

def nats_available() -> bool:
    try:
        import nats  # noqa: F401
    except ImportError:
        return False
    return shutil.which("nats-server") is not None


@contextlib.contextmanager
def nats_server() -> Any:
    """nats-server on 127.0.0.1, a free port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="p2pnats-"))
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "log", "wb"),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise bench.BenchError("nats-server did not start")
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- a lone request

ECHO_SERVER = r"""
import sys, trio
async def handle(stream):
    async for data in stream:
        await stream.send_all(data)
async def main():
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(sys.argv[1])
    sock.listen()
    print("ready", flush=True)
    await trio.serve_listeners(handle, [trio.SocketListener(sock)])
trio.run(main)
"""
LONE_PUBLISH = b'{"op":"publish","topic":"rtt","data":"x"}\n'


def lone_rtt_us(path: str, line: bytes, n: int, timeout: float) -> float:
    """Median microseconds from sending ``line`` alone (0.5 ms after the previous
    answer) to reading the whole answer line, over ``n`` tries, with a blocking socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        times = []
        for _ in range(n):
            time.sleep(0.0005)  # the server is idle when the request comes
            t = time.perf_counter_ns()
            s.sendall(line)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise bench.BenchError(f"{path}: connection closed during the RTT run")
                buf += chunk
            times.append(time.perf_counter_ns() - t)
    return sorted(times)[n // 2] / 1000


@contextlib.contextmanager
def echo_server() -> Any:
    """A trivial trio echo server on a Unix socket: the floor of a lone round trip."""
    tmp = Path(tempfile.mkdtemp(prefix="p2pecho-"))
    path = str(tmp / "echo.sock")
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, path],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise bench.BenchError("the echo server did not start")
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def measure_rtt(node_socket: str, n: int, repeat: int, timeout: float) -> dict[str, Any]:
    """``request_rtt_us``: a lone publish (that waits for its reply) on a node with a
    peer; ``echo_rtt_us``: the same bytes through the echo server, interleaved;
    medians of ``repeat`` runs of ``n``."""
    req, echo = [], []
    with echo_server() as echo_path:
        for _ in range(repeat):
            echo.append(lone_rtt_us(echo_path, LONE_PUBLISH, n, timeout))
            req.append(lone_rtt_us(node_socket, LONE_PUBLISH, n, timeout))
    r, e = sorted(req)[repeat // 2], sorted(echo)[repeat // 2]
    return {"request_rtt_us": round(r, 1), "echo_rtt_us": round(e, 1),
            "request_to_echo": round(r / e, 2), "request_rtt_runs": [round(x) for x in req],
            "echo_rtt_runs": [round(x) for x in echo]}


# ---------------------------------------------------------------- main

def store_setups(args: argparse.Namespace) -> dict[str, list[str]]:
    """The pairs of nodes to measure: their prefix in the report, their extra flags."""
    store = getattr(args, "store", "sqlite")
    with_store = ["--sync", getattr(args, "sync", "normal")]
    if store == "both":
        return {"": with_store, "no_store_": ["--store", "none"]}
    return {"": with_store if store == "sqlite" else ["--store", "none"]}


def nodes_cpu_s(cluster: bench.Cluster) -> float:
    """CPU seconds (user and system, every thread) the cluster's nodes used so far."""
    total = 0.0
    for node in cluster.nodes:
        with open(f"/proc/{node.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(kinds: list[str], args: argparse.Namespace) -> dict[str, Any]:
    setups = store_setups(args)
    runs: dict[str, dict[str, list[float]]] = {p: {k: [] for k in kinds} for p in setups}
    cpu: dict[str, dict[str, list[float]]] = {p: {k: [0.0, 0] for k in kinds} for p in setups}
    lat: dict[str, dict[str, float]] = {}
    rtt: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        clusters = {p: stack.enter_context(bench.Cluster(2, [(1, 0)], insecure=False,
                                                         node_args=flags))
                    for p, flags in setups.items()}
        url = stack.enter_context(nats_server()) if "nats" in kinds else ""

        def one(prefix: str, kind: str, rate: float, n: int) -> dict[str, Any]:
            cluster = clusters[prefix]
            if kind == "reference":
                return reference_once(cluster, n, args.timeout)
            a, b = (str(node.socket) for node in cluster.nodes)
            where = (url, url) if kind == "nats" else (a, b)
            return run_once(kind, *where, n, rate, args.timeout)

        for prefix in setups:
            one(prefix, "trio", 0, 2000)  # warm-up
        for _ in range(args.repeat):  # interleaved, so that a noisy moment hits all kinds
            for kind in kinds:
                n = args.messages if kind != "trio-wait" else args.wait_messages
                for prefix in setups:
                    if prefix and kind == "nats":
                        continue  # NATS has no store of ours: measured once
                    before = nodes_cpu_s(clusters[prefix])
                    runs[prefix][kind].append(one(prefix, kind, 0, n)["msgs_per_s"])
                    cpu[prefix][kind][0] += nodes_cpu_s(clusters[prefix]) - before
                    cpu[prefix][kind][1] += n
        if args.latency:
            for kind in kinds:
                if kind not in ("reference", "trio-wait"):
                    lat[kind] = one("", kind, 1000.0, args.latency_messages)
        for prefix, cluster in clusters.items():
            if args.rtt_requests:
                found = measure_rtt(str(cluster.nodes[0].socket), args.rtt_requests,
                                    args.repeat, args.timeout)
                rtt.update({prefix + k: v for k, v in found.items()
                            if not prefix or k.startswith("request_rtt")})
    out = report(kinds, runs, lat, rtt)
    for prefix, by_kind in cpu.items():  # both nodes' CPU per message (not for NATS)
        for kind, (seconds, msgs) in by_kind.items():
            if msgs and kind != "nats":
                out[kind][prefix + "node_cpu_us_per_msg"] = round(seconds / msgs * 1e6, 2)
    return out


def report(kinds: list[str], runs: dict[str, dict[str, list[float]]],
           lat: dict[str, dict[str, float]], rtt: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios to the reference and, with ``--store both``, to no store."""
    med = {p: {k: sorted(v)[len(v) // 2] for k, v in r.items() if v} for p, r in runs.items()}
    ref = med[""].get("reference")
    out: dict[str, Any] = {}
    for kind in kinds:
        row: dict[str, Any] = {"msgs_per_s": round(med[""][kind]),
                               "runs": [round(r) for r in runs[""][kind]]}
        if ref:
            row["ratio_to_reference"] = round(med[""][kind] / ref, 3)
        for prefix in med:
            if prefix and kind in med[prefix]:
                row[prefix + "msgs_per_s"] = round(med[prefix][kind])
                row[prefix + "runs"] = [round(r) for r in runs[prefix][kind]]
                row["store_to_no_store"] = round(med[""][kind] / med[prefix][kind], 3)
        if kind in lat:
            row.update({k: round(v, 3) for k, v in lat[kind].items()})
        out[kind] = row
    out.update(rtt)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="per pipelined run")
    ap.add_argument("--wait-messages", type=int, default=5_000, help="per trio-wait run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each kind (median kept)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"comma-separated, of {', '.join(KINDS)} (nats only if installed)")
    ap.add_argument("--latency", action="store_true", help="also p50/p99 at 1,000 msgs/s")
    ap.add_argument("--latency-messages", type=int, default=3000)
    ap.add_argument("--rtt-requests", type=int, default=2000,
                    help="lone requests per RTT run (request_rtt_us, echo_rtt_us; 0: none)")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each run (s)")
    ap.add_argument("--store", choices=["sqlite", "none", "both"], default="sqlite",
                    help="the nodes' message store: on (sqlite, the default), none, or both "
                         "(a second pair without, interleaved: the store's cost)")
    ap.add_argument("--sync", choices=["off", "normal", "full"], default="normal",
                    help="the nodes' --sync with the store on (default normal)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown kinds: {', '.join(bad)}")
    if "nats" in kinds and not nats_available():
        print("client_bench: nats-server or nats-py missing: no NATS reference",
              file=sys.stderr)
        kinds.remove("nats")
    for name in ("messages", "wait_messages", "repeat", "latency_messages"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rtt_requests < 0:
        ap.error("--rtt-requests must be at least 0")
    signal.signal(signal.SIGTERM, bench._terminate)
    try:
        out = measure(kinds, args)
    except bench.BenchError as exc:
        print(f"client_bench: {exc}", file=sys.stderr)
        return 1
    out["params"] = {"messages": args.messages, "wait_messages": args.wait_messages,
                     "repeat": args.repeat, "payload_bytes": bench.PAYLOAD_SIZE,
                     "store": args.store, "sync": args.sync, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out))
    else:
        for kind in kinds:
            print(f"{kind:10} " + ", ".join(f"{k}={v}" for k, v in out[kind].items()))
        if "request_rtt_us" in out:
            print(f"lone publish round trip {out['request_rtt_us']} us, trio echo "
                  f"{out['echo_rtt_us']} us ({out['request_to_echo']}x)")
        if "no_store_request_rtt_us" in out:
            print(f"lone publish round trip without a store {out['no_store_request_rtt_us']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
