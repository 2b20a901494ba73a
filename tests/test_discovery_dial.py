"""How the node dials what discovery reports: backoff, updates, removal, filtering."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import trio

from p2pnode import PROTOCOL_VERSION
from p2pnode.discovery.mdns import DiscoveredPeer
from p2pnode.identity import NodeIdentity
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    link_count,
    make_identity,
    memory_config,
    wait_until,
)


class DialLog:
    """Records when a memory transport is asked to connect, per port."""

    def __init__(self, node: Node) -> None:
        self.times: dict[int, list[float]] = {}
        original = node.transport.connect

        async def connect(host: str, port: int) -> trio.abc.Stream:
            self.times.setdefault(port, []).append(trio.current_time())
            return await original(host, port)

        node.transport.connect = connect  # type: ignore[method-assign]


LOW, HIGH = sorted((make_identity(random.Random(1)), make_identity(random.Random(2))),
                   key=lambda ident: ident.node_id)


async def start(nursery: trio.Nursery, net: MemoryNetwork, index: int,
                identity: NodeIdentity, **overrides: Any) -> Node:
    node = Node(memory_config(index, **overrides), transport=net.transport(),
                identity=identity, api=False)
    await nursery.start(node.run)
    return node


def peer(node_id: bytes, port: int, **kw: object) -> DiscoveredPeer:
    args: dict[str, object] = {
        "node_id": node_id.hex(), "name": "x", "addrs": (("mem", port),),
        "version": PROTOCOL_VERSION, "network": "open",
    }
    args.update(kw)
    return DiscoveredPeer(**args)  # type: ignore[arg-type]


async def test_unreachable_discovered_peer_is_dialled_with_growing_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, net, 0, LOW, redial_max=10.0)
            log = DialLog(node)
            node.discovering.found(peer(b"\x02" * 16, 50))  # nothing listens on mem:50
            await trio.sleep(60)
            times = log.times[50]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            # Exponential backoff capped at redial_max (10 s here), with jitter x0.5-1.5:
            # far fewer than the 240 dials a fixed 0.25 s retry would make.
            assert 6 <= len(times) <= 16
            assert max(gaps) <= node.config.redial_max * 1.5 + 0.01
            assert gaps[-1] > 4 * gaps[0]
            # Once discovery says the peer is gone, the dialling stops.
            node.discovering.lost((b"\x02" * 16).hex())
            before = len(log.times[50])
            await trio.sleep(60)
            assert len(log.times[50]) == before
            nursery.cancel_scope.cancel()


async def test_discovered_peer_is_linked_and_address_updates_are_followed(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, net, 0, LOW)
            b_id = HIGH.node_id
            a.discovering.found(peer(b_id, 7))  # wrong port at first: nobody there
            await trio.sleep(2)
            assert link_count(a) == 0
            b = await start(nursery, net, 1, HIGH)  # listens on mem:2
            a.discovering.found(peer(b_id, 2))  # an update with the right address
            await wait_until(lambda: link_count(a) == link_count(b) == 1)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "change", [{"version": PROTOCOL_VERSION + 1}, {"network": "other"}]
)
async def test_discovered_peer_of_another_version_or_network_is_ignored(
    autojump_clock: trio.abc.Clock, change: dict[str, object]
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, net, 0, LOW)
            log = DialLog(a)
            await start(nursery, net, 1, HIGH)
            a.discovering.found(peer(HIGH.node_id, 2, **change))
            await trio.sleep(5)
            assert log.times == {}
            assert a.status_info().links.discovered_ignored == 1
            nursery.cancel_scope.cancel()


async def test_both_discover_each_other_one_link(autojump_clock: trio.abc.Clock) -> None:
    """Both sides find each other at once: the lower id dials, the higher waits its grace
    period and then sees it is linked already; one link, no refused duplicates."""
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, net, 0, LOW)
            b = await start(nursery, net, 1, HIGH)
            a.discovering.found(peer(b.node_id, 2))
            b.discovering.found(peer(a.node_id, 1))
            await wait_until(lambda: link_count(a) == link_count(b) == 1)
            await trio.sleep(10)
            assert link_count(a) == link_count(b) == 1
            assert a.links is not None
            assert b.links is not None
            assert a.links.stats.dials == 1
            assert b.links.stats.dials == 0
            nursery.cancel_scope.cancel()
