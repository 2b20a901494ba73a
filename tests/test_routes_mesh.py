"""A node's ``routes`` (the graph for interest routing) follows the real links: fed by
the link lists of ``$mesh`` and the node's own links (in-memory meshes, virtual time)."""

from __future__ import annotations

import trio
import trio.testing

from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    random_connected_edges,
    start_memory_mesh,
    wait_linked,
    wait_until,
)


def real_links(nodes: list[Node]) -> set[tuple[bytes, bytes]]:
    out = set()
    for node in nodes:
        assert node.links is not None
        for peer in node.links.links:
            a, b = sorted((node.node_id, peer))
            out.add((a, b))
    return out


def routes_match(nodes: list[Node]) -> bool:
    want = real_links(nodes)
    return all(node.routes.edges() == want for node in nodes)


async def test_routes_follow_the_links(autojump_clock: trio.testing.MockClock) -> None:
    edges = random_connected_edges(8, 3, seed=5)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 8, network=MemoryNetwork(),
                                            mesh_interval=30.0, mesh_min_interval=0.5)
            await wait_linked(nodes, edges)
            await wait_until(lambda: routes_match(nodes))
            first = nodes[0]
            assert first.routes.toward(nodes[7].node_id) is not None
            # A node leaves: its links go from every graph at once on its peers (their
            # own links) and soon after on the others (its peers' new lists).
            leaving = nodes[7]
            peers = set(leaving.links.links)  # type: ignore[union-attr]
            await leaving.stop()
            around = [node for node in nodes[:7] if node.node_id in peers]
            await wait_until(lambda: all(leaving.node_id not in n.links.links  # type: ignore[union-attr]
                                         for n in around))
            for node in around:
                assert not any(node.node_id in e and leaving.node_id in e
                               for e in node.routes.edges())
            await wait_until(lambda: routes_match(nodes[:7]))
            assert first.routes.toward(leaving.node_id) is None
            # ... and it is forgotten with its list (three intervals later).
            version = first.routes.version
            assert leaving.node_id in first.routes.graph.index
            await wait_until(lambda: leaving.node_id not in first.mesh.nodes)
            assert trio.current_time() > 90
            assert first.routes.version > version
            assert leaving.node_id not in first.routes.graph.index
            nursery.cancel_scope.cancel()
