"""A small mDNS peer for tests/test_mdns_bridge.py, and the helpers that run it.

As a script, run ONLY inside a private network namespace (``PeerProcess`` does that).

Runs ``MdnsDiscovery`` with real zeroconf and prints one JSON object per line on stdout:
``ready``, ``found`` (with the peer), ``lost`` (with the node id), ``threads`` (zeroconf
threads still alive after shutdown; must be empty). ``--mode leave``: after finding
``--expect``, waits for a line on stdin, then shuts down (sending goodbyes).
``--mode stay``: after finding ``--expect``, waits until it is lost, then shuts down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from p2pnode.discovery.mdns import DiscoveredPeer, MdnsDiscovery

REPO = Path(__file__).resolve().parent.parent


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(args: argparse.Namespace) -> None:
    found = trio.Event()
    lost = trio.Event()

    def on_found(peer: DiscoveredPeer) -> None:
        emit("found", node_id=peer.node_id, name=peer.name, addrs=peer.addrs,
             version=peer.version, network=peer.network)
        if peer.node_id == args.expect:
            found.set()

    def on_lost(node_id: str) -> None:
        emit("lost", node_id=node_id)
        if node_id == args.expect:
            lost.set()

    disco = MdnsDiscovery(
        node_id=args.id, name=args.name, port=args.port, version=1, network="test",
        interfaces=tuple(args.iface), on_found=on_found, on_lost=on_lost,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(disco.run)
        emit("ready")
        await found.wait()
        if args.mode == "leave":
            await trio.to_thread.run_sync(sys.stdin.readline)
        else:
            await lost.wait()
        nursery.cancel_scope.cancel()
    left = [
        t.name for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("Trio thread")
    ]
    emit("threads", left=left, stats=disco.stats)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    return None


class PeerProcess:
    """One ``tests/mdns_peer.py`` process inside a namespace, read line by line."""

    def __init__(self, netns: str, args: list[str]) -> None:
        env = os.environ | {"PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._partial = b""

    def wait_for(self, event: str, deadline: float) -> dict[str, Any]:
        """Return the first not yet taken ``event`` line; fail at ``deadline``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                *lines, self._partial = self._partial.split(b"\n")
                self.events += [json.loads(line) for line in lines]
                for seen in self.events:
                    if seen["event"] == event:
                        self.events.remove(seen)
                        return seen
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"timed out waiting for {event!r}: {self.events}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"peer exited before {event!r}: rc={self.proc.wait()}")
                self._partial += chunk

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def two_namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth pair: 10.213.0.1/24 and 10.213.0.2/24."""
    tag = f"p2pt-{uuid.uuid4().hex[:8]}"
    a, b = f"{tag}-a", f"{tag}-b"
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        setup = [
            ["ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
             "netns", b],
            ["ip", "-n", a, "addr", "add", "10.213.0.1/24", "dev", "veth0"],
            ["ip", "-n", b, "addr", "add", "10.213.0.2/24", "dev", "veth0"],
        ]
        for ns in (a, b):
            setup += [["ip", "-n", ns, "link", "set", "lo", "up"],
                      ["ip", "-n", ns, "link", "set", "veth0", "multicast", "on", "up"]]
        for cmd in setup:
            subprocess.run(cmd, check=True, capture_output=True)
        yield a, b
    finally:
        for ns in (a, b):  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=7420)
    parser.add_argument("--iface", action="append", default=[])
    parser.add_argument("--expect", required=True)
    parser.add_argument("--mode", choices=["leave", "stay"], required=True)
    trio.run(main, parser.parse_args())
