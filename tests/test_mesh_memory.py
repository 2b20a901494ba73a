"""Whole meshes of real nodes over in-memory streams, in virtual time."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio

from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    line_edges,
    link_count,
    make_identity,
    memory_config,
    random_connected_edges,
    ring_edges,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import Refuse

from .hostile import HostilePeer


def record(nodes: list[Node]) -> list[Counter[bytes]]:
    """Attach a delivery counter (msg id -> times delivered) to every node."""
    counters: list[Counter[bytes]] = []
    for node in nodes:
        counter: Counter[bytes] = Counter()
        node.on_deliver.append(lambda msg, c=counter: c.update([msg.id]))
        counters.append(counter)
    return counters


async def publish_all_and_check(nodes: list[Node], per_node: int = 3) -> None:
    counters = record(nodes)
    ids = []
    for node in nodes:
        for k in range(per_node):
            msg_id, _ = node.publish("t", f"{node.config.name}-{k}".encode())
            ids.append(bytes.fromhex(msg_id))
    await wait_until(lambda: all(len(c) == len(ids) for c in counters))
    await trio.testing.wait_all_tasks_blocked()
    for i, counter in enumerate(counters):
        assert set(counter) == set(ids), f"node {i} missed messages"
        assert set(counter.values()) == {1}, f"node {i} got duplicates"


@pytest.mark.parametrize(
    ("name", "n", "edges"),
    [
        ("pair", 2, line_edges(2)),
        ("line5", 5, line_edges(5)),
        ("ring5", 5, ring_edges(5)),
        ("random12", 12, random_connected_edges(12, 4, seed=7)),
    ],
)
async def test_every_node_gets_every_message_once(
    autojump_clock: trio.abc.Clock, name: str, n: int, edges: list[tuple[int, int]]
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, n, seed=n)
            await wait_linked(nodes, edges)
            await publish_all_and_check(nodes)
            nursery.cancel_scope.cancel()


async def test_hop_limit_stops_messages(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            edges = line_edges(5)
            nodes = await start_memory_mesh(nursery, edges, 5, max_hops=2)
            await wait_linked(nodes, edges)
            counters = record(nodes)
            hops: dict[int, int] = {}
            for i, node in enumerate(nodes):
                node.on_deliver.append(lambda m, i=i: hops.__setitem__(i, m.hops))
            nodes[0].publish("t", b"x")
            await wait_until(lambda: len(counters[2]) == 1)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)
            assert [len(c) for c in counters] == [1, 1, 1, 0, 0]
            assert hops == {0: 0, 1: 1, 2: 2}
            assert nodes[2].router.stats.hop_limited == 1
            nursery.cancel_scope.cancel()


async def test_simultaneous_dial_gives_one_link(autojump_clock: trio.abc.Clock) -> None:
    """Both nodes dial each other at once; exactly one link survives on both sides,
    and it is the same connection (the same remote address on each end)."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            edges = [(0, 1), (1, 0)]
            nodes = await start_memory_mesh(nursery, edges, 2, seed=3)
            await wait_linked(nodes, edges)
            await trio.sleep(5)  # virtual: let every redial attempt play out
            assert link_count(nodes[0]) == link_count(nodes[1]) == 1
            a = nodes[0].links.links[nodes[1].node_id]  # type: ignore[union-attr]
            b = nodes[1].links.links[nodes[0].node_id]  # type: ignore[union-attr]
            assert {a.direction, b.direction} == {"in", "out"}
            await publish_all_and_check(nodes)
            nursery.cancel_scope.cancel()


async def test_node_never_links_to_itself(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, [(0, 0)], 1)
            await trio.sleep(5)
            assert link_count(nodes[0]) == 0
            stats = nodes[0].links.stats  # type: ignore[union-attr]
            assert stats.dials == 1  # it saw itself once and stopped dialling
            nursery.cancel_scope.cancel()


async def test_direct_message_reaches_only_its_target(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            edges = ring_edges(5)
            nodes = await start_memory_mesh(nursery, edges, 5)
            await wait_linked(nodes, edges)
            counters = record(nodes)
            nodes[0].publish("t", b"secret", to=nodes[3].node_id)
            await wait_until(lambda: len(counters[3]) == 1)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)
            assert [len(c) for c in counters] == [0, 0, 0, 1, 0]
            nursery.cancel_scope.cancel()


async def test_version_mismatch_is_refused_both_ways(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node of another protocol version cannot link, whoever dials."""
    import p2pnode.node.node as node_module

    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # n0 and n2 speak version 1; n1 speaks 99. n0 dials n1, n1 dials n2.
            old = await start_memory_mesh(nursery, [(0, 1)], 1, network=net, seed=1)
            monkeypatch.setattr(node_module, "PROTOCOL_VERSION", 99)
            cfg = memory_config(1, peers=(("mem", 3),))
            new = Node(cfg, transport=net.transport(), identity=make_identity(random.Random(101)),
                       api=False)
            await nursery.start(new.run)
            monkeypatch.undo()
            other = Node(memory_config(2), transport=net.transport(),
                         identity=make_identity(random.Random(102)),
                         api=False)
            await nursery.start(other.run)
            await wait_until(lambda: new.links.stats.refused["version_mismatch"] >= 2)  # type: ignore[union-attr]
            assert link_count(old[0]) == link_count(new) == link_count(other) == 0
            assert old[0].links.stats.refused["version_mismatch"] >= 1  # type: ignore[union-attr]
            assert other.links.stats.refused["version_mismatch"] >= 1  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_a_late_refusal_is_counted(autojump_clock: trio.abc.Clock) -> None:
    """The node (the lower id) accepts; the peer refuses after that (a late refusal,
    as when both check at once and the peer is full): the link closes as
    ``refused_by_peer:CODE``, and the refusal counts in ``refused_by_peer``."""
    net = MemoryNetwork()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (node,) = await start_memory_mesh(nursery, [], 1, network=net)
            links = node.links
            assert links is not None
            async with await HostilePeer.connect_memory(net, node, node_id=b"\xff" * 16) as peer:
                link = links.links[peer.node_id]  # open on the node's side: it accepted
                await peer.send_message(Refuse("too_many_links", "full"))
                with trio.fail_after(1):  # well before keepalive (link_timeout) would close it
                    await link.closed.wait()
            assert link.close_reason == "refused_by_peer:too_many_links"
            await wait_until(lambda: sum(links.stats.refused_by_peer.values()) > 0)
            assert links.stats.refused_by_peer == {"too_many_links": 1}
            nursery.cancel_scope.cancel()


async def test_link_loss_and_redial(autojump_clock: trio.abc.Clock) -> None:
    """A node that leaves is dropped at once (Bye); the dialler relinks when it returns."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            edges = [(0, 1)]
            nodes = await start_memory_mesh(nursery, edges, 2, network=net)
            await wait_linked(nodes, edges)
            await nodes[1].stop()
            await wait_until(lambda: link_count(nodes[0]) == 0)
            assert nodes[0].links.stats.closed["peer_left"] == 1  # type: ignore[union-attr]
            again = Node(memory_config(1), transport=net.transport(), identity=nodes[1].identity,
                         api=False)
            await nursery.start(again.run)
            await wait_until(lambda: link_count(again) == 1 and link_count(nodes[0]) == 1)
            await publish_all_and_check([nodes[0], again])
            nursery.cancel_scope.cancel()
