"""A node off the origin's tree (views that differ, after a crash: docs/interest.md)
pushes a routed batch by shortest paths, but only toward the members its copy was
pushed for: those the copy names (``Batch.meant``: each push names the members below
that child, or those the sender's shortest paths lead to through that peer), or when
it names none, those whose shortest path from the sender starts with the link to this
node (``Routes.via``). Before, such a node went toward every member (which made every
node it reached do the same), then toward every member it was closer to than the
sender, then toward every member ``Routes.via`` gave: each still let nodes add members
their sender had sent another way (docs/performance.md, crashes at 400 and 1,000
nodes)."""

from __future__ import annotations

import msgspec

from p2pnode.gossip.actions import Forward
from p2pnode.gossip.interest import Interests
from p2pnode.gossip.interestmode import InterestRouting, pushes
from p2pnode.gossip.routes import Routes
from p2pnode.gossip.signing import Verifier, make_batch
from p2pnode.wire.messages import MEANT_PREFIX, Batch, Item

from .gossip_sim import SIM_IDENTITIES, make_router
from .test_routes import lists_of

ORIGIN, A, B, M1, M2, M3, N, S, W, Y, Z = (
    name.encode().ljust(16, b".")
    for name in ("O", "A", "B", "M1", "M2", "M3", "N", "S", "W", "Y", "Z"))
#: The tree from ORIGIN to M1 and M2 is ORIGIN-A-M1 and ORIGIN-B-M2; Y, Z and W are off it.
EDGES = [(ORIGIN, A), (A, M1), (ORIGIN, B), (B, M2), (A, Y), (Y, Z), (Z, M2), (Z, W), (W, M1)]
#: The tree from ORIGIN to M1 and M3 is ORIGIN-A-M1 and A-S-N-M3 (N before Z: lower id);
#: Z is off it, as close to M3 as N is.
TIED = [(ORIGIN, A), (A, M1), (A, S), (S, N), (S, Z), (N, M3), (Z, M3)]


def routing(me: bytes, edges: list[tuple[bytes, bytes]] = EDGES,
            members: tuple[bytes, ...] = (M1, M2)) -> InterestRouting:
    lists = lists_of(edges)
    routes = Routes(me)
    routes.set_graph(lists)
    routes.set_own_links(lists[me])
    interests = Interests()
    for member in members:
        interests.set(member, ["t"])
    out = InterestRouting(me)
    out.routes, out.interests = routes, interests
    return out


def batch() -> Batch:
    return Batch(b"b" * 16, ORIGIN, 0, b"k" * 32, b"body", b"s" * 64)


def routes_of(r: InterestRouting) -> Routes:
    assert isinstance(r.routes, Routes)
    return r.routes


def test_the_tree_and_whom_a_sender_reaches_through_this_node() -> None:
    routes = routes_of(routing(Z))
    wanted = frozenset({M1, M2})
    assert routes.tree(ORIGIN, wanted) == {A: ORIGIN, M1: A, B: ORIGIN, M2: B}
    assert routes.next_hops(ORIGIN, "t", wanted, 0) is None  # Z is off the tree
    # From Y: to M2 by Y-Z-M2 (2 links; Y-A-O-B-M2 is 4), to M1 by Y-A-M1.
    assert routes.via([M1, M2], Y) == [M2]
    # From M2: to M1 by M2-Z-W-M1 (3 links; M2-B-O-A-M1 is 4); M2 itself is no path.
    assert routes.via([M1, M2], M2) == [M1]
    # A sender this node does not know: every member it can reach.
    assert routes.via([M1, M2], b"?" * 16) == [M1, M2]


def test_an_off_tree_push_goes_on_only_toward_the_members_it_was_sent_for() -> None:
    r = routing(Z)
    # From Y, itself off the tree: only toward M2 (Y's way to M2 is through Z), not
    # toward M1 by W as well (Y's way to M1 is through A: that branch is Y's to take).
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], Y) or ([], [])
    assert eager == [M2]
    assert lazy == []
    assert r.stats.off_tree == 1


def test_from_a_sender_on_the_tree_an_off_tree_node_goes_toward_what_it_was_sent_for() -> None:
    r = routing(Z)
    # M2 (on the tree, its view differing from Z's) pushed it here: M2's shortest way
    # to M1 goes through Z, so Z takes it on toward M1 (by W).
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], M2) or ([], [])
    assert eager == [W]
    assert lazy == []


def test_a_member_the_sender_reaches_another_way_only_gets_an_announcement() -> None:
    r = routing(Z, TIED, (M1, M3))
    routes = routes_of(r)
    assert routes.tree(ORIGIN, frozenset({M1, M3})) == {A: ORIGIN, M1: A, S: A, N: S, M3: N}
    # Z is one link from M3 and S two, but S's shortest way to M3 starts with N (the
    # lower id of the two): the copy S pushes by N is M3's. Z announces it to its peer
    # M3 (which grafts it if that copy does not come) and pushes it nowhere.
    assert routes.via([M1, M3], S) == []
    eager, lazy = r.targets(ORIGIN, "t", [S, M3], S) or ([], [])
    assert eager == []
    assert lazy == [M3]
    assert r.stats.off_tree == 1


def test_each_push_along_the_tree_says_whom_it_is_for() -> None:
    r = routing(ORIGIN)
    eager, _ = r.targets(ORIGIN, "t", [A, B], None) or ([], [])
    assert eager == [A, B]
    assert r.meant == {A: [M1[:MEANT_PREFIX]], B: [M2[:MEANT_PREFIX]]}
    forwards = pushes(r, batch(), 1, (A, B))
    assert [(f.peers, f.batch.meant, f.batch.hops) for f in forwards] == [
        ((A,), [M1[:MEANT_PREFIX]], 1), ((B,), [M2[:MEANT_PREFIX]], 1)]


def test_off_the_tree_a_push_goes_toward_the_members_it_says_it_is_for() -> None:
    r = routing(Z)
    # Y's copy says it is for M1: Z takes it toward M1 (by W), though as Z sees the
    # mesh Y's own way to M1 is not through Z, and says so to W.
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], Y, [M1[:MEANT_PREFIX]]) or ([], [])
    assert eager == [W]
    assert lazy == [M2]  # a linked member not pushed to: announced
    assert r.meant == {W: [M1[:MEANT_PREFIX]]}


def test_a_copy_cannot_send_a_node_toward_members_that_do_not_want_the_topic() -> None:
    r = routing(Z)
    # A lying sender names W and Y, which want nothing: Z pushes to nobody (the names
    # only ever narrow the members that want the topic).
    named = [W[:MEANT_PREFIX], Y[:MEANT_PREFIX]]
    eager, lazy = r.targets(ORIGIN, "t", [Y, M2, W], Y, named) or ([], [])
    assert eager == []
    assert lazy == [M2]
    assert r.meant == {}


def test_a_received_copy_s_names_are_not_kept_nor_passed_on_as_they_came() -> None:
    origin, me, peer = SIM_IDENTITIES[0], SIM_IDENTITIES[1].node_id, SIM_IDENTITIES[2].node_id
    router = make_router(me, mode="tree", peers=(origin.node_id, peer))
    signed, _ = make_batch(origin, b"i" * 16, None, [Item(b"m" * 16, "t", b"x")], epoch=1,
                           seq=1)
    came = msgspec.structs.replace(signed, meant=[M1[:MEANT_PREFIX]])
    actions = router.on_batch(came, origin.node_id, 0.0, Verifier(1024).verify)
    kept = router.history.get(signed.origin + signed.id)
    assert kept is not None
    assert kept.batch.meant == []  # what a Graft or a Fetch gets
    sent = [a for a in actions if type(a) is Forward]
    assert sent
    assert all(f.batch.meant == [] for f in sent)  # not this node's to say


#: EDGES and a link Y-M2: the tree still reaches M2 by B (O-B-M2), but A's shortest way
#: to M2 is A-Y-M2.
SHORTCUT = [*EDGES, (Y, M2)]


def test_on_the_tree_a_named_member_of_another_branch_is_taken_toward_too() -> None:
    r = routing(A, SHORTCUT)
    # The origin's copy names M1 (below A) and M2, which A's tree puts below B: the
    # origin's view must differ (B's link gone), so A takes it toward M2 as well, by
    # its shortest way (A-Y-M2), saying whom each push is for.
    named = [M1[:MEANT_PREFIX], M2[:MEANT_PREFIX]]
    eager, lazy = r.targets(ORIGIN, "t", [ORIGIN, M1, Y], ORIGIN, named) or ([], [])
    assert eager == [M1, Y]
    assert lazy == []
    assert r.meant == {M1: [M1[:MEANT_PREFIX]], Y: [M2[:MEANT_PREFIX]]}
    assert r.stats.astray == 1
    # Named as the tree has it: nothing more.
    r = routing(A, SHORTCUT)
    eager, _ = r.targets(ORIGIN, "t", [ORIGIN, M1, Y], ORIGIN, named[:1]) or ([], [])
    assert eager == [M1]
    assert r.stats.astray == 0


def test_on_the_tree_a_liar_s_names_add_only_members_that_want_the_topic() -> None:
    r = routing(A, SHORTCUT)
    # Names of W and Y (they want nothing) and made-up ones: nothing more.
    named = [W[:MEANT_PREFIX], Y[:MEANT_PREFIX], b"?" * MEANT_PREFIX]
    eager, _ = r.targets(ORIGIN, "t", [ORIGIN, M1, Y], ORIGIN, named) or ([], [])
    assert eager == [M1]
    assert r.stats.astray == 0
    # Never back through the sender: the shortest way that does not go through it.
    both = [M1[:MEANT_PREFIX], M2[:MEANT_PREFIX]]
    r = routing(A)  # A's ways to M2: A-O-B-M2 and A-Y-Z-M2 (3 links each; O before Y)
    eager, _ = r.targets(ORIGIN, "t", [ORIGIN, M1, Y], ORIGIN, both) or ([], [])
    assert eager == [M1, Y]
    assert r.meant[Y] == [M2[:MEANT_PREFIX]]
    # ... and none when every way goes back through it.
    r = routing(A, [(ORIGIN, A), (A, M1), (ORIGIN, B), (B, M2), (A, Y)])
    eager, _ = r.targets(ORIGIN, "t", [ORIGIN, M1, Y], ORIGIN, both) or ([], [])
    assert eager == [M1]
    assert r.stats.astray == 0
