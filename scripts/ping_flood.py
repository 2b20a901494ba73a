#!/usr/bin/env python3
"""Measure what a Ping flood from members that never read costs a node (issue 12).

Starts a victim node (``p2pnode run``, its own process, on 127.0.0.1 only, no mDNS),
then plays PEERS hostile members over real TCP + TLS (tests/hostile.py): each links,
sends Pings as fast as it can (or at --rate per second) and never reads; when the
victim drops it, it links again, until SECONDS have passed. Samples the victim's
resident memory (VmRSS) every 0.5 s and reports it, with how long the victim took to
drop each hostile link and why (its status, ``links.closed``).

Usage: python scripts/ping_flood.py [--peers 1] [--seconds 30] [--rate 0] [--json]
Set P2PNODE_VICTIM_PATH to a source tree to run the victim from there (e.g. an older
commit unpacked with ``git archive``), for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pnode.client import open_client  # noqa: E402
from p2pnode.identity import NetworkKey  # noqa: E402
from p2pnode.wire import Ping, encode_message  # noqa: E402
from tests.hostile import HostilePeer, Refused  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def hostile(addr: tuple[str, int], rate: float, until: float,
                  drops: list[float]) -> None:
    """Link, Ping without reading until dropped, link again; until ``until``."""
    chunk = 200 if rate == 0 else 1
    frames = b"".join(encode_message(Ping(float(k))) for k in range(chunk))
    with trio.move_on_at(until):
        while True:
            try:
                peer = await HostilePeer.connect_tls(*addr, NetworkKey.open())
            except (Refused, OSError, trio.BrokenResourceError):
                await trio.sleep(0.05)
                continue
            start = trio.current_time()
            try:
                while True:
                    await peer.send_raw(frames)
                    if rate:
                        await trio.sleep(1 / rate)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                drops.append(trio.current_time() - start)
            finally:
                await peer.aclose()


async def wait_status(sock: Path, victim: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The victim's status, once its socket answers (it may exist before it listens)."""
    while True:
        if victim.poll() is not None:
            raise RuntimeError(f"the victim node exited with status {victim.returncode}")
        try:
            async with await open_client(sock) as client:
                return await client.status()
        except OSError:
            await trio.sleep(0.05)


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sock = tmp / "victim.sock"
    env = dict(os.environ)
    if os.environ.get("P2PNODE_VICTIM_PATH"):
        env["PYTHONPATH"] = os.environ["P2PNODE_VICTIM_PATH"]
    victim = subprocess.Popen(  # noqa: ASYNC220 - one start; terminate() and wait() below
        [sys.executable, "-m", "p2pnode.cli", "run", "--listen", "127.0.0.1:0", "--no-mdns",
         "--name", "victim", "--data-dir", str(tmp / "data"), "--socket", str(sock),
         "--log-level", "warning"], env=env, cwd=tmp, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(20):
            listen = (await wait_status(sock, victim))["listen"]
        host, port = listen.rsplit(":", 1)
        addr = (host, int(port))
        await trio.sleep(1)
        samples = [rss_mib(victim.pid)]
        drops: list[float] = []
        until = trio.current_time() + args.seconds
        async with trio.open_nursery() as nursery:
            for _ in range(args.peers):
                nursery.start_soon(hostile, addr, args.rate, until, drops)
            while trio.current_time() < until:
                await trio.sleep(0.5)
                samples.append(rss_mib(victim.pid))
        async with await open_client(sock) as client:
            closed = (await client.status())["links"]["closed"]
        await trio.sleep(1)
        samples.append(rss_mib(victim.pid))
    finally:
        victim.terminate()
        victim.wait(10)
    return {
        "peers": args.peers, "seconds": args.seconds, "rate": args.rate or "max",
        "rss_start_mib": round(samples[0], 1), "rss_max_mib": round(max(samples), 1),
        "rss_end_mib": round(samples[-1], 1),
        "links_dropped": len(drops), "closed": closed,
        "drop_after_s_median": round(statistics.median(drops), 3) if drops else None,
        "drop_after_s_max": round(max(drops), 3) if drops else None,
    }


async def bounded(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with trio.fail_after(args.seconds + 60):
        return await measure(args, tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1, help="hostile members (1-16)")
    parser.add_argument("--seconds", type=float, default=30.0, help="attack length (1-120)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="Pings per second per peer (0: as fast as possible)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 1 <= args.peers <= 16 or not 1 <= args.seconds <= 120 or args.rate < 0:
        parser.error("need 1 <= --peers <= 16, 1 <= --seconds <= 120, --rate >= 0")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p2pflood-") as tmp:
        result = trio.run(bounded, args, Path(tmp))
    result["wall_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
