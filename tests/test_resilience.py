"""Link health in memory and virtual time: keepalive, failure detection, reconnection,
degree management and backpressure (issue: link health and resilience)."""

from __future__ import annotations

import random
from collections import deque

import trio

from p2pnode import PROTOCOL_VERSION
from p2pnode.discovery.mdns import DiscoveredPeer
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    count_deliveries,
    link_count,
    make_identity,
    memory_config,
    open_raw_link,
    random_connected_edges,
    start_memory_mesh,
    wait_linked,
    wait_until,
)


def connected(nodes: list[Node]) -> bool:
    """Whether the live nodes' links form one connected graph."""
    by_id = {n.node_id: n for n in nodes}
    start = nodes[0]
    seen = {start.node_id}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        assert node.links is not None
        for peer in node.links.links:
            if peer in by_id and peer not in seen:
                seen.add(peer)
                todo.append(by_id[peer])
    return len(seen) == len(nodes)


async def test_frozen_peer_is_detected_and_relinked_after_thaw(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    edges = [(0, 1), (2, 1)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 3, network=net)
            await wait_linked(nodes, edges)
            cfg = nodes[0].config
            net.sim.freeze(2)  # node 1 listens on mem:2: it stops reading and writing
            frozen_at = trio.current_time()
            await wait_until(lambda: link_count(nodes[0]) == 0 and link_count(nodes[2]) == 0)
            detected = trio.current_time() - frozen_at
            assert cfg.link_timeout < detected <= cfg.link_timeout + cfg.ping_interval + 0.1
            for n in (nodes[0], nodes[2]):
                assert n.links is not None
                assert n.links.stats.closed["timeout"] == 1
            net.sim.thaw(2)
            await wait_linked(nodes, edges)
            seen = count_deliveries(nodes[2])
            nodes[0].publish("t", b"after the thaw")
            await wait_until(lambda: len(seen) == 1)
            nursery.cancel_scope.cancel()


async def test_cut_link_is_detected_both_sides_and_heals(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    edges = [(0, 1)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 2, network=net)
            await wait_linked(nodes, edges)
            net.sim.cut_path(1, 2)
            await wait_until(lambda: link_count(nodes[0]) == link_count(nodes[1]) == 0)
            net.sim.restore_path(1, 2)
            await wait_linked(nodes, edges)
            nursery.cancel_scope.cancel()


async def test_crash_in_a_10_node_mesh(autojump_clock: trio.abc.Clock) -> None:
    """A node crashes: its peers notice at once (its connections end), every live node
    keeps getting every message, and the restarted node rejoins and gets new ones."""
    net = MemoryNetwork()
    edges = random_connected_edges(10, 4, seed=10)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 10, network=net, seed=10)
            await wait_linked(nodes, edges)
            victim = 3
            neighbours = [i for a, b in edges for i in (a, b)
                          if victim in (a, b) and i != victim]
            nodes[victim].kill()
            await wait_until(lambda: all(
                nodes[victim].node_id not in nodes[i].links.links  # type: ignore[union-attr]
                for i in neighbours))
            live = [n for i, n in enumerate(nodes) if i != victim]
            assert connected(live), "the test graph must stay connected without the victim"
            seen = [count_deliveries(n) for n in live]
            for n in live:
                n.publish("t", b"while one is down")
            await wait_until(lambda: all(len(s) == len(live) for s in seen))
            assert all(set(s.values()) == {1} for s in seen)
            # Restart it with the same id and address; its links come back.
            peers = tuple(("mem", j + 1) for a, j in edges if a == victim)
            again = Node(memory_config(victim, peers=peers), transport=net.transport(),
                         identity=nodes[victim].identity, api=False)
            await nursery.start(again.run)
            nodes[victim] = again
            await wait_linked(nodes, edges)
            got = count_deliveries(again)
            nodes[0].publish("t", b"welcome back")
            await wait_until(lambda: len(got) == 1)
            nursery.cancel_scope.cancel()


async def test_30_nodes_discovering_each_other_keep_degree_in_range(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    n = 30
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            rng = random.Random(30)
            nodes = []
            for i in range(n):
                node = Node(memory_config(i), transport=net.transport(),
                            identity=make_identity(rng), api=False)
                await nursery.start(node.run)
                nodes.append(node)
            # Everyone discovers everyone (as mDNS would on one LAN).
            for node in nodes:
                for other in nodes:
                    if other is not node:
                        node.discovering.found(DiscoveredPeer(
                            node_id=other.node_hex, name=other.config.name,
                            addrs=(("mem", other.config.listen_port),), version=PROTOCOL_VERSION,
                            network=other.network_tag))
            await trio.sleep(60)
            cfg = nodes[0].config
            counts = [link_count(node) for node in nodes]
            assert min(counts) >= cfg.degree_low, counts
            assert max(counts) <= cfg.degree_high, counts
            assert connected(nodes)
            total_links = sum(counts) // 2
            assert total_links < n * (n - 1) // 2 / 4  # far from a full mesh
            # It stays that way: no churn once settled.
            opened = sum(node.links.stats.opened for node in nodes)  # type: ignore[union-attr]
            await trio.sleep(60)
            assert sum(node.links.stats.opened for node in nodes) == opened  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_stuck_peer_is_dropped_and_does_not_slow_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Publishing at full speed to a healthy peer and a peer that stopped reading: the
    healthy one gets everything within 20% of the time it takes without the stuck one;
    the stuck one's queue stays bounded and its link is closed as slow_peer."""

    async def run(with_stuck: bool) -> tuple[float, Node]:
        net = MemoryNetwork()
        net.sim.latency = lambda: 0.0005
        net.sim.bandwidth = 12.5e6  # 100 Mbit/s
        edges = [(1, 0)]
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 2, network=net,
                                            link_queue_bytes=1 << 20)
            await wait_linked(nodes, edges)
            if with_stuck:
                # a peer that links, then never reads again
                stuck = await open_raw_link(net, nodes[0], b"\xff" * 16, "stuck")
                await wait_until(lambda: link_count(nodes[0]) == 2)
            seen = count_deliveries(nodes[1])
            start = trio.current_time()
            total = 100_000
            for k in range(total // 100):
                for j in range(100):
                    nodes[0].publish("t", b"%099d" % (k * 100 + j))
                await nodes[0].wait_links_writable()
                if nodes[0].links is not None:
                    assert all(len(link.out) <= link.out.limit
                               for link in nodes[0].links.links.values())
            await wait_until(lambda: len(seen) == total)
            took = trio.current_time() - start
            # The stuck peer's link is closed within a few seconds.
            await wait_until(lambda: link_count(nodes[0]) == 1)
            if with_stuck:
                await stuck.aclose()
            nursery.cancel_scope.cancel()
            return took, nodes[0]

    with trio.fail_after(600):
        healthy_only, _ = await run(False)
        with_stuck, hub = await run(True)
    assert with_stuck <= healthy_only * 1.2, (healthy_only, with_stuck)
    assert hub.links is not None
    assert hub.links.stats.closed["slow_peer"] + hub.links.stats.closed["timeout"] == 1, (
        hub.links.stats.closed)
    assert hub.links.stats.queue_drops > 0


async def test_publisher_gets_backpressure_not_drops(autojump_clock: trio.abc.Clock) -> None:
    """A slow (but moving) link makes the publisher wait instead of losing messages."""
    net = MemoryNetwork()
    net.sim.capacity = 16 * 1024
    net.sim.latency = lambda: 0.02
    edges = [(1, 0)]
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 2, network=net,
                                            link_queue_bytes=64 * 1024)
            await wait_linked(nodes, edges)
            seen = count_deliveries(nodes[1])
            total = 5_000
            for k in range(total // 50):
                for j in range(50):
                    nodes[0].publish("t", b"%099d" % (k * 50 + j))
                await nodes[0].wait_links_writable()
            await wait_until(lambda: len(seen) == total)
            assert nodes[0].links is not None
            assert nodes[0].links.stats.queue_drops == 0
            nursery.cancel_scope.cancel()
