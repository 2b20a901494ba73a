"""A node off the origin's tree (views that differ, after a crash: docs/interest.md)
pushes a routed batch by shortest paths. When its sender was off the tree too, the
batch is an off-tree push passed on: it goes on only toward the members this node is
closer to than the sender, not toward every member again (which made every node it
reached do the same: most of the copies of the 200-node crash simulation)."""

from __future__ import annotations

from p2pnode.gossip.interest import Interests
from p2pnode.gossip.interestmode import InterestRouting
from p2pnode.gossip.routes import Routes

from .test_routes import lists_of

ORIGIN, A, B, M1, M2, W, Y, Z = (name.encode().ljust(16, b".")
                            for name in ("O", "A", "B", "M1", "M2", "W", "Y", "Z"))
#: The tree from ORIGIN to M1 and M2 is ORIGIN-A-M1 and ORIGIN-B-M2; Y, Z and W are off it.
EDGES = [(ORIGIN, A), (A, M1), (ORIGIN, B), (B, M2), (A, Y), (Y, Z), (Z, M2), (Z, W), (W, M1)]


def routing(me: bytes) -> InterestRouting:
    lists = lists_of(EDGES)
    routes = Routes(me)
    routes.set_graph(lists)
    routes.set_own_links(lists[me])
    interests = Interests()
    for member in (M1, M2):
        interests.set(member, ["t"])
    out = InterestRouting(me)
    out.routes, out.interests = routes, interests
    return out


def test_the_tree_and_who_is_off_it() -> None:
    r = routing(Z)
    assert r.routes is not None
    routes = r.routes
    assert isinstance(routes, Routes)
    wanted = frozenset({M1, M2})
    assert routes.tree(ORIGIN, wanted) == {A: ORIGIN, M1: A, B: ORIGIN, M2: B}
    assert routes.next_hops(ORIGIN, "t", wanted, 0) is None  # Z is off the tree
    assert routes.on_tree(ORIGIN, "t", wanted, 0, M2) is True
    assert routes.on_tree(ORIGIN, "t", wanted, 0, Y) is False
    assert routes.closer([M1, M2], Y) == [M2]  # Z-M2: 1 link, Y-Z-M2: 2; M1: 2 and 2
    assert routes.closer([M1, M2], M2) == [M1]


def test_an_off_tree_push_passed_on_goes_only_toward_the_members_it_was_sent_for() -> None:
    r = routing(Z)
    # From Y, itself off the tree: only toward M2 (Z is closer to it than Y), not toward
    # M1 by W as well (Y is as close to M1 as Z: that branch is Y's to take).
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], Y) or ([], [])
    assert eager == [M2]
    assert lazy == []
    assert r.stats.off_tree == 1


def test_from_a_sender_on_the_tree_an_off_tree_node_goes_toward_every_member() -> None:
    r = routing(Z)
    # M2 (on the tree, its view differing from Z's) pushed it here: Z cannot tell what
    # it was meant to reach, so it goes toward every member but the sender.
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], M2) or ([], [])
    assert eager == [W]
    assert lazy == []
