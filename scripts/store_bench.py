"""Benchmarks of the message store (docs/store.md, docs/performance.md).

``start``: how long a node takes from its start to serving its socket with a large
store (default 1 GiB of real signed batches), beside the same node with an empty
store, measured in the same run. ``replay``: a durable subscriber that reads a
store of N messages from the start, through the shipped trio client: messages/s and
the node's peak RSS while it replays, and the CPU time per message of the node and of
the subscribing app (``store_bench.py replay``).

Run it in a private network namespace (only loopback exists there)::

    unshare -n sh -c 'ip link set lo up && python scripts/store_bench.py start'
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from p2pnode.gossip import make_batch
from p2pnode.identity import NodeIdentity
from p2pnode.ids import MsgIdFactory
from p2pnode.store import STORE_FILE, MessageStore, Row
from p2pnode.wire import Item


def fill(path: Path, *, size: int, payload: int, per_batch: int, origins: int = 4,
         topic: str = "bench/data") -> tuple[int, int]:
    """Write real signed batches of ``per_batch`` messages of ``payload`` bytes into a
    new store at ``path`` until it holds ``size`` bytes. Returns (batches, messages)."""
    store = MessageStore(path, sync="off", max_age=0, max_bytes=0)
    makers = [(NodeIdentity.generate(), MsgIdFactory()) for _ in range(origins)]
    epoch = time.time_ns() // 1000
    batches = messages = 0
    seqs = [0] * origins
    chunk: list[Row] = []
    now = time.time()
    body = b"x" * payload
    while store.bytes < size:
        k = batches % origins
        identity, ids = makers[k]
        seqs[k] += 1
        items = [Item(ids.next(), topic, body) for _ in range(per_batch)]
        batch, _body = make_batch(identity, ids.next(), None, items, epoch=epoch, seq=seqs[k])
        chunk.append(Row(identity.node_id, epoch, seqs[k], batch.id, items[0].id,
                         items[-1].id, now, per_batch, msgspec.msgpack.encode(batch)))
        batches += 1
        messages += per_batch
        if len(chunk) >= 256:
            store.append(chunk)
            chunk = []
    store.append(chunk)
    store.close()
    return batches, messages


def start_node(data_dir: Path, sock: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--no-mdns", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--socket", str(sock), "--log-level", "warning",
         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_serving(sock: Path, proc: subprocess.Popen[bytes], limit: float = 60.0) -> float:
    """Seconds until the node at ``sock`` answers a status request."""
    begun = time.monotonic()
    while time.monotonic() - begun < limit:
        if proc.poll() is not None:
            why = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"the node exited: {why}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall(b'{"op":"status"}\n')
                if s.recv(1):
                    return time.monotonic() - begun
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"no answer on {sock} within {limit} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_start(data_dir: Path, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        sock = data_dir.parent / f"{data_dir.name}.sock"
        proc = start_node(data_dir, sock)
        try:
            out.append(wait_serving(sock, proc))
        finally:
            stop(proc)
    return out


def bench_start(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="p2p-store-") as tmp:
        base = Path(tmp)
        full, empty = base / "full", base / "empty"
        for d in (full, empty):
            d.mkdir(mode=0o700)
        begun = time.monotonic()
        batches, messages = fill(full / STORE_FILE, size=args.size, payload=args.payload,
                                 per_batch=args.per_batch)
        filled = time.monotonic() - begun
        file_bytes = (full / STORE_FILE).stat().st_size
        with_store = time_start(full, args.repeat)
        without = time_start(empty, args.repeat)
    return {
        "store_file_bytes": file_bytes, "batches": batches, "messages": messages,
        "fill_s": round(filled, 1),
        "start_s_large_store": [round(t, 3) for t in with_store],
        "start_s_empty_store": [round(t, 3) for t in without],
        "median_large": round(statistics.median(with_store), 3),
        "median_empty": round(statistics.median(without), 3),
    }


def bench_replay(args: argparse.Namespace) -> dict[str, object]:
    """A durable subscriber reads a store of ``--messages`` messages from its start
    through the shipped trio client (acking every 500); the node's peak RSS meanwhile."""
    import threading

    import trio

    from p2pnode.client import open_client

    with tempfile.TemporaryDirectory(prefix="p2p-replay-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        per_batch = min(1000, args.messages)
        batches, messages = fill(data / STORE_FILE, size=args.messages * (args.payload + 25),
                                 payload=args.payload, per_batch=per_batch)
        store = MessageStore(data / STORE_FILE)
        store.put_durable("bench", ["bench/#"], 0)  # at the start of the store
        store.close()
        sock = Path(tmp) / "node.sock"
        proc = start_node(data, sock)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                try:
                    with open(f"/proc/{proc.pid}/status") as status:
                        for line in status:
                            if line.startswith("VmRSS"):
                                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                except OSError:
                    pass

        async def read_all() -> tuple[int, float]:
            async with await open_client(sock) as client:
                begun = time.monotonic()
                await client.subscribe(["bench/#"], durable="bench")
                got = 0
                async for event in client.events():
                    if event.get("event") != "message":
                        continue
                    got += 1
                    if got % 500 == 0 or got == messages:
                        await client.ack(event)
                    if got >= messages:
                        break
                return got, time.monotonic() - begun

        try:
            wait_serving(sock, proc)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            node_cpu, app_cpu = cpu_seconds(proc.pid), time.process_time()
            got, seconds = trio.run(read_all)
            node_cpu = cpu_seconds(proc.pid) - node_cpu
            app_cpu = time.process_time() - app_cpu
        finally:
            done.set()
            stop(proc)
    return {"messages": messages, "batches": batches, "received": got,
            "seconds": round(seconds, 2), "msgs_per_s": round(got / seconds),
            "node_peak_rss_mib": round(peak[0] / (1 << 20), 1),
            "node_cpu_us_per_msg": round(node_cpu / got * 1e6, 2),
            "app_cpu_us_per_msg": round(app_cpu / got * 1e6, 2)}


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system, every thread) process ``pid`` used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    start = sub.add_parser("start", help="node start time with a large store")
    start.add_argument("--size", type=int, default=1 << 30, help="store bytes (default 1 GiB)")
    start.add_argument("--payload", type=int, default=1000)
    start.add_argument("--per-batch", type=int, default=100)
    start.add_argument("--repeat", type=int, default=3)
    replay = sub.add_parser("replay", help="a durable subscriber reads a whole store")
    replay.add_argument("--messages", type=int, default=1_000_000)
    replay.add_argument("--payload", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench_start(args) if args.what == "start" else bench_replay(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    os.umask(0o077)
    main()
