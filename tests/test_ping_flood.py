"""Issue 12, defect 2: a member that sends Pings and never reads must not grow a node's
memory. Every Pong counts against the link's queue limit, Pings are rate-limited
(``peer_pings_per_s``), a flood closes the link (``ping_flood``), and a peer that does
not read is dropped (``slow_peer``) 3-4 s after the node's writes to it stall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio
import trio.testing

from p2pnode.identity import NetworkKey
from p2pnode.net.link import PeerLink
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, start_memory_mesh
from p2pnode.wire.messages import Ping, encode_message

from .conftest import loopback_config, running_nodes
from .hostile import HostilePeer

QUEUE = 64 * 1024  # the victim's link_queue_bytes: small, so that a flood overruns it fast


class Watch:
    """Samples the victim's link to the hostile peer every 10 ms (virtual time): the
    largest queue seen, and when the writer last made progress."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.most_queued = 0
        self.last_progress = trio.current_time()
        self.closed_at: float | None = None

    async def run(self) -> None:
        sent = self.link.out.sent_bytes
        while not self.link.closed.is_set():
            self.most_queued = max(self.most_queued, len(self.link.out))
            if self.link.out.sent_bytes != sent:
                sent = self.link.out.sent_bytes
                self.last_progress = trio.current_time()
            await trio.sleep(0.01)
        self.closed_at = trio.current_time()


async def ping(peer: HostilePeer, per_send: int, every: float, duration: float) -> None:
    """Send ``per_send`` Pings every ``every`` seconds for ``duration`` seconds, or until
    the node hangs up; never read."""
    frames = b"".join(encode_message(Ping(float(k))) for k in range(per_send))
    with trio.move_on_after(duration):
        while True:
            try:
                await peer.send_raw(frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(every)


async def attack(node: Node, peer: HostilePeer, per_send: int, every: float,
                 duration: float) -> Watch:
    assert node.links is not None
    watch = Watch(node.links.links[peer.node_id])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        nursery.start_soon(ping, peer, per_send, every, duration)
    return watch


async def test_a_ping_flood_from_a_peer_that_never_reads_is_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    """200 Pings every 10 ms (20,000/s), never reading: on the old code the Pongs piled
    up over the queue limit for as long as the flood lasted."""
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            (node,) = await start_memory_mesh(nursery, [], 1, network=net,
                                              link_queue_bytes=QUEUE)
            peer = await HostilePeer.connect_memory(net, node)
            start = trio.current_time()
            watch = await attack(node, peer, 200, 0.01, duration=10.0)
            assert watch.closed_at is not None, "the link survived 10 s of flood"
            assert watch.closed_at - start < 4.0
            assert watch.most_queued <= QUEUE
            assert node.links is not None
            assert node.links.stats.closed == {"ping_flood": 1}
            assert node.status_info().links.closed == {"ping_flood": 1}
            await peer.aclose()
            nursery.cancel_scope.cancel()


async def test_a_peer_that_pings_within_the_limit_but_never_reads_is_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    """5 Pings a second (under the limit), never reading: once the node's writes to it
    stall, it is dropped within slow_peer_timeout + ping_interval, and the queue never
    holds more than its limit. On the old code the Pongs grew the queue for ever."""
    net = MemoryNetwork()
    net.sim.capacity = 2048  # the peer's unread bytes fill its side within seconds
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            (node,) = await start_memory_mesh(nursery, [], 1, network=net,
                                              link_queue_bytes=4096)
            peer = await HostilePeer.connect_memory(net, node)
            watch = await attack(node, peer, 1, 0.2, duration=90.0)
            assert watch.closed_at is not None, "the link survived 90 s"
            cfg = node.config
            assert watch.closed_at - watch.last_progress <= (
                cfg.slow_peer_timeout + cfg.ping_interval + 0.1)
            assert watch.most_queued <= 4096
            assert node.links is not None
            assert node.links.stats.closed == {"slow_peer": 1}
            await peer.aclose()
            nursery.cancel_scope.cancel()


async def test_a_ping_flood_over_tls_is_cut_off(short_tmp: Path) -> None:
    """The same flood over real TCP and TLS on loopback."""
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            assert a.listen_addr is not None
            peer = await HostilePeer.connect_tls(*a.listen_addr, NetworkKey.open())
            frames = b"".join(encode_message(Ping(float(k))) for k in range(200))
            assert a.links is not None
            link = a.links.links[peer.node_id]
            with trio.move_on_after(5):  # a bound for the old code, where it never ends
                while not link.closed.is_set():
                    try:
                        await peer.send_raw(frames)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    assert len(link.out) <= a.config.link_queue_bytes
                await link.closed.wait()
            assert link.close_reason == "ping_flood"
            await peer.aclose()


def test_the_measuring_script_reports_a_bounded_victim() -> None:
    """scripts/ping_flood.py (the figures in docs/security.md): a victim process, two
    hostile members flooding over TLS for a second, then the report."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "ping_flood.py"
    proc = subprocess.run([sys.executable, str(script), "--peers", "2", "--seconds", "1",
                           "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["closed"].get("ping_flood", 0) >= report["links_dropped"] > 0
    assert report["drop_after_s_max"] < 4.0
    assert report["rss_max_mib"] - report["rss_start_mib"] < 30
