"""``Routes`` takes a changed link list into the built graph in place (a link that opens
or closes between known nodes), and builds it again only when a node appears or goes:
the same graph, trees and next hops as a graph built from every list."""

from __future__ import annotations

import random

import pytest

from p2pnode.gossip.routes import Routes, _Graph
from p2pnode.testing.memory import random_regular_edges

from .test_routes import link_lists, node_ids


def fresh(routes: Routes) -> _Graph:
    """The graph built from scratch from what ``routes`` was told."""
    lists = dict(routes._lists)
    if routes._own is not None:
        lists[routes.me] = routes._own
    return _Graph(lists)


def test_a_link_that_breaks_between_known_nodes_does_not_build_the_graph_again() -> None:
    ids = node_ids(30, 3)
    lists = link_lists(ids, random_regular_edges(30, 4, 3))
    me = ids[0]
    routes = Routes(me)
    routes.set_graph(lists)
    routes.set_own_links(lists[me])
    assert routes.toward(ids[5]) is not None
    assert routes.built == 1
    a = ids[7]
    b = next(iter(lists[a]))
    version = routes.version
    routes.set_list(a, lists[a] - {b})  # a's link to b closed: a says so first
    assert routes.version > version
    assert (min(a, b), max(a, b)) not in routes.edges()
    routes.set_own_links(set(lists[me]) - {next(iter(lists[me]))})  # and one of mine
    assert routes.built == 1
    assert routes.relinked == 2
    assert routes.graph.adj == fresh(routes).adj
    routes.set_list(b"\xff" * 32, [me])  # a node not in the graph: built again
    assert routes.graph.adj == fresh(routes).adj
    assert routes.built == 2
    routes.set_list(a, None)  # a node forgotten: built again
    assert routes.graph.adj == fresh(routes).adj
    assert routes.built == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_taken_in_place_give_the_graph_and_trees_a_build_gives(seed: int) -> None:
    rng = random.Random(seed)
    n = 60
    ids = node_ids(n, seed)
    lists = link_lists(ids, random_regular_edges(n, 6, seed))
    me = ids[rng.randrange(n)]
    routes = Routes(me)
    routes.set_graph(lists)
    routes.set_own_links(lists[me])
    interested = frozenset(rng.sample(ids, 8))
    for step in range(200):
        node = rng.choice(ids)
        links = set(routes._own if node == me and routes._own is not None
                    else routes._lists.get(node, set()))
        peer = rng.choice(ids)
        links.symmetric_difference_update({peer} - {node})  # a link opens or closes
        if node == me:
            routes.set_own_links(links)
        else:
            routes.set_list(node, links)
        if step % 5 == 0:
            graph = routes.graph  # built, or kept and changed in place
            want = fresh(routes)
            assert graph.ids == want.ids
            assert graph.adj == want.adj
            origin = rng.choice(ids)
            rebuilt = Routes(me)
            rebuilt.set_graph({k: v for k, v in routes._lists.items()})
            if routes._own is not None:
                rebuilt.set_own_links(routes._own)
            assert routes.next_hops(origin, "t", interested, 0) == rebuilt.next_hops(
                origin, "t", interested, 0)
            assert routes.toward(origin) == rebuilt.toward(origin)
    assert routes.relinked > 100
