"""Routes for interest routing (gossip/routes.py): the Takahashi-Matsuyama trees over the
confirmed links, the same from every node's view, their cache, and ``toward``."""

from __future__ import annotations

import random
import statistics
import sys
from collections import deque
from pathlib import Path

import pytest

from p2pnode.gossip.routes import Routes, steiner_tree
from p2pnode.testing import random_connected_edges
from p2pnode.testing.memory import random_regular_edges


def node_ids(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def link_lists(ids: list[bytes], edges: list[tuple[int, int]]) -> dict[bytes, set[bytes]]:
    lists: dict[bytes, set[bytes]] = {node: set() for node in ids}
    for a, b in edges:
        lists[ids[a]].add(ids[b])
        lists[ids[b]].add(ids[a])
    return lists


def lists_of(edges: list[tuple[bytes, bytes]]) -> dict[bytes, set[bytes]]:
    """Each node's link list, from edges between node ids."""
    lists: dict[bytes, set[bytes]] = {}
    for a, b in edges:
        lists.setdefault(a, set()).add(b)
        lists.setdefault(b, set()).add(a)
    return lists


def spread(views: dict[bytes, Routes], origin: bytes, topic: str,
           interested: frozenset[bytes]) -> tuple[set[bytes], int, dict[bytes, bytes]]:
    """Forward a batch from ``origin``: each node that gets it pushes it to its own
    ``next_hops``. The nodes reached, the copies sent, and who sent each its copy."""
    reached, copies, sender = {origin}, 0, {}
    queue = deque([origin])
    while queue:
        node = queue.popleft()
        hops = views[node].next_hops(origin, topic, interested, 1)
        assert hops is not None, "a node the tree reached is not on it in its own view"
        for child in hops:
            copies += 1
            assert child not in reached, "a node got two copies"
            reached.add(child)
            sender[child] = node
            queue.append(child)
    return reached, copies, sender


def reachable(lists: dict[bytes, set[bytes]], origin: bytes) -> set[bytes]:
    seen = frontier = {origin}
    while frontier:
        frontier = {peer for node in frontier for peer in lists[node]} - seen
        seen = seen | frontier
    return seen


@pytest.mark.parametrize(("n", "degree", "seed"), [(60, 3, 1), (150, 4, 2), (200, 6, 3)])
def test_every_node_computes_its_part_of_the_same_tree(n: int, degree: int, seed: int) -> None:
    ids = node_ids(n, seed)
    edges = random_connected_edges(n, degree, seed)
    # Cut five nodes off (their links to the rest dropped): an island.
    island = set(ids[-5:])
    edges = [(a, b) for a, b in edges if (ids[a] in island) == (ids[b] in island)]
    lists = link_lists(ids, edges)
    rng = random.Random(seed)
    views = {}
    for me in ids:  # each view gets the lists in another order
        order = rng.sample(ids, n)
        views[me] = Routes(me)
        views[me].set_graph({node: rng.sample(sorted(lists[node]), len(lists[node]))
                             for node in order})
    for round_ in range(8):
        origin = rng.choice(ids[:-5])
        interested = frozenset(rng.sample(ids, 12)) | {ids[-1]}  # one on the island
        topic = f"t{round_}"
        reached, copies, sender = spread(views, origin, topic, interested)
        want = interested & reachable(lists, origin)
        assert want <= reached
        assert ids[-1] not in reached
        assert copies == len(reached) - 1  # each node reached once: a tree
        # Each copy went over a real link, and every leaf is an interested node.
        assert all(child in lists[parent] for child, parent in sender.items())
        leaves = reached - set(sender.values())
        assert leaves <= interested | {origin}
        # The nodes reached are the tree any node computes.
        tree = views[ids[0]].tree(origin, interested)
        assert tree == sender
        # Nodes off the tree (and on the island) fall back.
        off = next(node for node in ids if node not in reached)
        assert views[off].next_hops(origin, topic, interested, 1) is None


def test_one_sided_links_do_not_count() -> None:
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    routes = Routes(a)
    routes.set_graph({a: [b, c], b: [], c: [a]})  # b does not list a
    assert routes.edges() == {(a, c)}
    assert routes.toward(b) is None
    assert routes.toward(c) == c
    assert routes.next_hops(a, "t", frozenset({b, c}), 0) == (c,)
    # b is in the graph, but not on a's tree: it falls back.
    assert Routes(b).next_hops(a, "t", frozenset({b}), 0) is None
    # A node does not link to itself.
    routes.set_graph({a: [a, c], c: [a]})
    assert routes.edges() == {(a, c)}


def test_own_links_replace_the_own_list_at_once() -> None:
    me, b, c = b"m" * 32, b"b" * 32, b"c" * 32
    routes = Routes(me)
    routes.set_graph({me: [b], b: [me], c: [me]})
    assert routes.edges() == {(b, me)}
    version = routes.version
    routes.set_own_links([c])  # the link to b closed, one to c opened
    assert routes.version > version
    assert routes.edges() == {(c, me)}  # c's list already names me
    assert routes.next_hops(me, "t", frozenset({b, c}), 0) == (c,)
    # Its own list, as the mesh view has it, changes nothing: its own links win.
    version = routes.version
    routes.set_list(me, [b])
    routes.set_list(me, None)
    assert routes.version == version
    assert routes.edges() == {(c, me)}
    routes.set_own_links([c])
    assert routes.next_hops(me, "t", frozenset({b, c}), 0) == (c,)


def test_trees_are_cached_until_the_graph_or_the_interests_change() -> None:
    ids = node_ids(30, 5)
    lists = link_lists(ids, random_connected_edges(30, 3, 5))
    routes = Routes(ids[0])
    routes.set_graph(lists)
    interested = frozenset(ids[10:15])
    first = routes.next_hops(ids[0], "t", interested, 1)
    assert routes.next_hops(ids[0], "t", interested, 1) == first
    assert routes.computed == 1
    routes.next_hops(ids[0], "t", interested, 2)  # another topic's interests changed
    assert routes.computed == 1  # ... not this one's: the same tree
    routes.next_hops(ids[0], "t", interested | {ids[20]}, 3)  # this one's changed
    assert routes.computed == 2
    interested |= {ids[20]}
    version = routes.version
    routes.set_graph(lists)  # the same lists again: no change
    routes.set_list(ids[3], lists[ids[3]])
    assert routes.version == version
    routes.next_hops(ids[0], "t", interested, 3)
    assert routes.computed == 2
    routes.set_list(ids[3], None)  # a node forgotten: the graph changed
    assert routes.version == version + 1
    routes.next_hops(ids[0], "t", interested, 3)
    assert routes.computed == 3
    routes.set_list(ids[3], None)
    assert routes.version == version + 1


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    ids = node_ids(20, 6)
    routes = Routes(ids[0], max_cache=3)
    routes.set_graph(link_lists(ids, random_connected_edges(20, 3, 6)))
    interested = frozenset(ids[5:9])
    for topic in ("a", "b", "c"):
        routes.next_hops(ids[0], topic, interested, 0)
    routes.next_hops(ids[0], "a", interested, 0)  # "a" used again: "b" is the oldest
    routes.next_hops(ids[0], "d", interested, 0)
    assert routes.cached == 3
    assert routes.computed == 4
    routes.next_hops(ids[0], "a", interested, 0)
    assert routes.computed == 4
    routes.next_hops(ids[0], "b", interested, 0)
    assert routes.computed == 5
    with pytest.raises(ValueError, match="max_cache"):
        Routes(ids[0], max_cache=0)


def test_none_when_the_origin_or_this_node_is_unknown() -> None:
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    graph = {a: [b], b: [a]}
    routes = Routes(a)
    routes.set_graph(graph)
    assert routes.next_hops(c, "t", frozenset({a, b}), 0) is None  # origin unknown
    assert routes.next_hops(a, "u", frozenset({b, c}), 0) == (b,)  # c is not in the graph
    assert routes.tree(c, frozenset({a})) == {}
    stranger = Routes(c)
    stranger.set_graph(graph)
    assert stranger.next_hops(a, "t", frozenset({b}), 0) is None  # this node unknown
    assert stranger.toward(a) is None
    # On the tree: the origin with nobody interested, and a leaf, get ().
    assert routes.next_hops(a, "t", frozenset(), 0) == ()
    leaf = Routes(b)
    leaf.set_graph(graph)
    assert leaf.next_hops(a, "t", frozenset({b}), 0) == ()
    assert leaf.toward(b) is None  # itself


def test_toward_takes_a_shortest_path_with_the_lowest_first_hop() -> None:
    # me - x1 - x2 - t, and me - y - t (shorter), and me - z - t (as short, z > y).
    me, x1, x2, y, z, t, far = (bytes([k]) * 32 for k in (0, 1, 2, 3, 9, 5, 6))
    edges = [(me, x1), (x1, x2), (x2, t), (me, y), (y, t), (me, z), (z, t), (t, far)]
    lists = lists_of(edges)
    routes = Routes(me)
    routes.set_graph(lists)
    assert routes.toward(t) == y
    assert routes.toward(far) == y
    assert routes.toward(x2) == x1
    routes.set_list(y, [me])  # y drops t: its link is no longer confirmed
    assert routes.toward(far) == z


def test_steiner_tree_attaches_the_nearest_first() -> None:
    # A ring 0-1-2-3-4-5-0 (by index), root 0, terminals 2 and 4: both 2 hops away,
    # 2 goes first (the lower index), by 1. Then 4 is 2 hops from the tree either way
    # (by 3 or by 5): it keeps the path the first search found, by 5.
    adj = [[1, 5], [0, 2], [1, 3], [2, 4], [3, 5], [0, 4]]
    tree = steiner_tree(adj, 0, [4, 2])
    assert tree == {1: 0, 2: 1, 5: 0, 4: 5}
    assert steiner_tree(adj, 0, [0]) == {}


def test_tree_size_on_a_random_regular_graph() -> None:
    """About 2.4 nodes reached per interested node (docs/interest.md): at most 2.6."""
    n, interested_per_topic = 1000, 20
    ids = node_ids(n, 8)
    routes = Routes(ids[0])
    routes.set_graph(link_lists(ids, random_regular_edges(n, 6, seed=8)))
    rng = random.Random(8)
    ratios = []
    for _ in range(20):
        interested = frozenset(rng.sample(ids, interested_per_topic))
        tree = routes.tree(rng.choice(ids), interested)
        ratios.append((len(tree) + 1) / interested_per_topic)
    assert statistics.mean(ratios) <= 2.6


def test_the_route_trees_script_reports_its_figures() -> None:
    """scripts/route_trees.py (the figures of docs/interest.md), in a small run."""
    scripts = str(Path(__file__).resolve().parent.parent / "scripts")
    sys.path.insert(0, scripts)
    try:
        import route_trees
    finally:
        sys.path.remove(scripts)
    report = route_trees.measure(nodes=200, degree=6, topics=10, fraction=0.1, seed=3)
    assert report["topics"] == 10
    assert 1 <= report["tm_per_interested"] <= report["spt_per_interested"] <= 5
    assert report["tree_ms_median"] > 0
    assert report["cache_hit_us_median"] > 0
