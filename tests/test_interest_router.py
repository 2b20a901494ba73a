"""The router in interest mode (docs/interest.md), with test stand-ins for the member
interests and the trees: routed batches go only toward the nodes that want their topic;
everything else, and everything while the mesh is not known, goes everywhere."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec
import pytest

from p2pnode.errors import RemoteProtocolError
from p2pnode.gossip.signing import Verifier, make_batch
from p2pnode.wire.messages import (
    Announce,
    Batch,
    BatchBody,
    Fetch,
    IHave,
    Item,
    decode_body,
    decode_message,
    encode_message,
    is_routed,
)

from .gossip_sim import Sim, distances, random_connected

Graph = dict[bytes, list[bytes]]


class FakeInterests:
    """Which node wants which topics (exact names only)."""

    def __init__(self, wants: dict[bytes, set[str]]) -> None:
        self.table = wants
        self.version = 1
        self.grown = 1

    def matching(self, topic: str) -> frozenset[bytes]:
        return frozenset(n for n in self.table if self.wants(n, topic))

    def wants(self, node_id: bytes, topic: str) -> bool:
        topics = self.table.get(node_id, set())
        return topic in topics or "*" in topics  # "*": every topic

    def returned(self) -> dict[bytes, float]:
        return {}  # nobody went and came back

    def caught_up(self, members: Iterable[bytes]) -> None:
        pass


class FakeRoutes:
    """Shortest-path trees from the origin over a fixed graph, cut to the branches that
    lead to a wanting node (ties broken by id): the same tree at every node."""

    def __init__(self, me: bytes, graph: Graph) -> None:
        self.me = me
        self.graph = graph
        self.lost = 0  # the graph never loses a link (``gossip.tails`` reads it)
        self.version = 0  # ... nor changes

    def _parents(self, root: bytes) -> dict[bytes, bytes | None]:
        parents: dict[bytes, bytes | None] = {root: None}
        todo = deque([root])
        while todo:
            x = todo.popleft()
            for y in sorted(self.graph[x]):
                if y not in parents:
                    parents[y] = x
                    todo.append(y)
        return parents

    def next_hops(self, origin: bytes, topic: str, interested: frozenset[bytes],
                  interest_version: int) -> tuple[bytes, ...] | None:
        if origin not in self.graph or self.me not in self.graph:
            return None
        parents = self._parents(origin)
        on_tree: set[bytes] = {origin}
        for node in interested:
            x: bytes | None = node
            while x is not None and x not in on_tree and x in parents:
                on_tree.add(x)
                x = parents[x]
        if self.me not in on_tree:
            return None
        return tuple(sorted(n for n in on_tree if parents.get(n) == self.me))

    def branches(self, origin: bytes, topic: str, interested: frozenset[bytes],
                 interest_version: int) -> dict[bytes, tuple[bytes, ...]]:
        return {}  # pushes say no members: a receiver off the tree works them out

    def toward(self, target: bytes) -> bytes | None:
        parents = self._parents(self.me)
        if target not in parents or target == self.me:
            return None
        x = target
        while parents[x] != self.me:
            x = parents[x]  # type: ignore[assignment]
        return x

    def toward_without(self, targets: Iterable[bytes], avoid: bytes) -> dict[bytes, bytes]:
        return {t: hop for t in targets if (hop := self.toward(t)) not in (None, avoid)}


def routed_sim(n: int, edges: list[tuple[int, int]], wants: dict[int, set[str]]) -> Sim:
    sim = Sim(n, edges, mode="interest")
    graph: Graph = {i: [] for i in sim.ids}
    for a, b in edges:
        graph[sim.ids[a]].append(sim.ids[b])
        graph[sim.ids[b]].append(sim.ids[a])
    interests = FakeInterests({sim.ids[i]: topics for i, topics in wants.items()})
    for i, r in enumerate(sim.routers):
        assert r.interest is not None
        r.interest.interests = interests
        r.interest.routes = FakeRoutes(sim.ids[i], graph)
    return sim


def routed(sim: Sim, node: int, k: int, topic: str, *, tprev: int = 0,
           to: int | None = None) -> tuple[Batch, BatchBody]:
    prefix = sim.ids[node][:8]
    sim.seq[node] += 1
    return make_batch(sim.identities[node], prefix + k.to_bytes(8, "big"),
                      None if to is None else sim.ids[to],
                      [Item(prefix + (1000 * k).to_bytes(8, "big"), topic, b"x")],
                      epoch=1, seq=sim.seq[node], tprev=tprev)


def receivers(sim: Sim, batch_id: bytes) -> set[int]:
    return {node for (node, bid), copies in sim.received.items() if bid == batch_id and copies}


def delivered_to(sim: Sim, batch_id: bytes) -> set[int]:
    return {node for node, ds in sim.delivered.items() if any(d.batch.id == batch_id for d in ds)}


LINE = [(i, i + 1) for i in range(7)]  # 0 - 1 - 2 - ... - 7


def test_a_routed_batch_goes_only_toward_the_nodes_that_want_it() -> None:
    sim = routed_sim(8, LINE, {3: {"a"}, 6: {"b"}})
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run()
    # the path 0 -> 3 only: nodes 4..7 hear nothing of it, not even an announcement
    assert receivers(sim, batch.id) == {1, 2, 3}
    assert 3 in delivered_to(sim, batch.id)
    assert sim.kinds["IHave"] == 0


def test_a_topic_nobody_wants_is_sent_to_nobody() -> None:
    sim = routed_sim(8, LINE, {3: {"a"}})
    batch, body = routed(sim, 0, 1, "zzz")
    sim.publish(0, batch, body)
    sim.run()
    assert receivers(sim, batch.id) == set()
    assert sim.routers[0].interest is not None
    assert sim.routers[0].interest.stats.unwanted == 1


def test_the_one_wanting_node_counts_a_leaf_and_its_own_topic_is_sent_to_nobody() -> None:
    sim = routed_sim(8, LINE, {3: {"a"}})
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    own, own_body = routed(sim, 3, 2, "a")  # published where the only subscriber is
    sim.publish(3, own, own_body)
    sim.run()
    assert 3 in delivered_to(sim, batch.id)
    assert receivers(sim, own.id) == set()
    stats = [r.interest.stats for r in sim.routers if r.interest is not None]
    # 0, 1 and 2 sent it on along the tree, 3 is its leaf: it reached its member
    assert [s.routed for s in stats] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert [s.unwanted for s in stats] == [0, 0, 0, 1, 0, 0, 0, 0]  # 3's own batch


def test_every_wanting_node_of_a_random_mesh_gets_it_once_and_few_others_do() -> None:
    n = 30
    edges = random_connected(n, 30, seed=4)
    wants = {i: {"a"} for i in (2, 9, 17, 23, 28)}
    sim = routed_sim(n, edges, wants)
    batch, body = routed(sim, 11, 1, "a")
    sim.publish(11, batch, body)
    sim.run()
    got = receivers(sim, batch.id)
    assert set(wants) <= got | {11}
    assert all(sim.received[(i, batch.id)] == 1 for i in got)  # one copy each
    assert len(got) < n // 2  # the rest of the mesh never sees it


def test_a_wanting_neighbour_off_the_tree_is_told_and_grafts_when_the_push_is_lost() -> None:
    # 0 - 1 - 2 and 0 - 3 - 2: the tree to 2 goes by 1 (lower id first); 3 wants it too
    sim = routed_sim(4, [(0, 1), (1, 2), (0, 3), (2, 3)], {2: {"a"}, 3: {"a"}})
    sim.drop.add((1, 2))  # the tree's push from 1 to 2 is lost
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run()
    assert 2 in delivered_to(sim, batch.id)  # announced by 3 (it wants "a"), grafted
    assert sim.kinds["Graft"] >= 1


def test_without_interests_or_routes_a_routed_batch_goes_everywhere() -> None:
    sim = Sim(8, LINE, mode="interest")
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run()
    assert receivers(sim, batch.id) == set(range(1, 8))
    assert sim.routers[0].interest is not None
    assert sim.routers[0].interest.stats.unrouted == 1


def test_batches_that_are_not_routed_go_everywhere() -> None:
    sim = routed_sim(8, LINE, {3: {"a"}})
    reserved, rbody = routed(sim, 0, 1, "$mesh")  # a reserved topic: never routed
    direct, dbody = routed(sim, 0, 2, "a", tprev=1, to=5)  # to one node
    for b, bd in ((reserved, rbody), (direct, dbody)):
        assert not is_routed(bd)
        sim.publish(0, b, bd)
    sim.run()
    assert receivers(sim, reserved.id) == set(range(1, 8))
    assert receivers(sim, direct.id) == set(range(1, 6))  # the target does not forward it
    assert delivered_to(sim, direct.id) == {5}


def test_a_new_link_is_told_only_of_the_batches_its_peer_wants() -> None:
    sim = routed_sim(3, [(0, 1)], {1: {"a", "b"}, 2: {"b"}})
    a, abody = routed(sim, 0, 1, "a")
    b, bbody = routed(sim, 0, 2, "b", tprev=0)
    sim.publish(0, a, abody)
    sim.publish(0, b, bbody)
    sim.run()
    assert receivers(sim, a.id) == {1}
    assert receivers(sim, b.id) == {1}
    sim.link(1, 2)  # digests: 1 has a and b, 2 wants only b
    sim.run()
    assert delivered_to(sim, b.id) >= {2}
    assert 2 not in receivers(sim, a.id)


def test_gaps_between_the_batches_a_node_wants_are_not_held() -> None:
    # node 2 wants only "a": origin 0's batches on "b" never reach it, and those of "a"
    # are delivered at once, not held for the numbers in between
    sim = routed_sim(3, [(0, 1), (1, 2)], {1: {"b"}, 2: {"a"}})
    first, fbody = routed(sim, 0, 1, "a")
    sim.publish(0, first, fbody)
    other, obody = routed(sim, 0, 2, "b", tprev=0)
    sim.publish(0, other, obody)
    later, lbody = routed(sim, 0, 3, "a", tprev=fbody.seq)
    sim.publish(0, later, lbody)
    sim.run(max_time=0.05)  # well under order_hold
    assert [d.batch.id for d in sim.delivered[2]] == [first.id, later.id]
    assert sim.routers[2].order.stats.gaps == 0


def test_tprev_is_checked_and_old_decoders_skip_it() -> None:
    sim = routed_sim(2, [(0, 1)], {})
    batch, body = routed(sim, 0, 1, "a")
    assert is_routed(body)
    assert body.tprev == 0
    bad = msgspec.msgpack.encode(msgspec.structs.replace(body, tprev=body.seq))
    with pytest.raises(RemoteProtocolError, match="tprev"):
        decode_body(bad, 1024)

    class OldBody(msgspec.Struct, array_like=True):  # protocol 6's BatchBody
        id: bytes
        origin: bytes
        to: bytes | None
        items: list[Item]
        epoch: int = 0
        seq: int = 0
        retain: int = 0

    old = msgspec.msgpack.decode(batch.body, type=OldBody)
    assert old.seq == body.seq
    assert old.items == body.items
    assert Verifier(1024).verify(batch) == body


def gap_at_3(sim: Sim, drop: set[tuple[int, int]]) -> list[bytes]:
    """0 - 1 - 2 - 3, only 3 wanting "a": 0 publishes three batches of "a"; the second
    is lost between 1 and 2 (nobody that wants "a" saw it, so nobody announces it); the
    third shows the gap at 3 (tprev), with ``drop`` the links that lose what crosses
    them from then on. The three batch ids."""
    zero, zbody = routed(sim, 0, 0, "a")
    sim.publish(0, zero, zbody)
    sim.run(max_time=0.01)
    first, fbody = routed(sim, 0, 1, "a", tprev=zbody.seq)
    sim.drop.add((1, 2))
    sim.publish(0, first, fbody)
    sim.run(max_time=0.01)
    sim.drop = drop
    second, sbody = routed(sim, 0, 2, "a", tprev=fbody.seq)
    sim.publish(0, second, sbody)
    return [zero.id, first.id, second.id]


def test_a_gap_nobody_announces_is_fetched_toward_the_origin() -> None:
    # 3 asks 2, 2 lacks it and asks on toward the origin; 1 answers from history.
    sim = routed_sim(4, line_edges_(4), {3: {"a"}})
    ids = gap_at_3(sim, set())
    sim.run(max_time=0.5)  # under order_hold: filled by the fetch, not given up
    assert [d.batch.id for d in sim.delivered[3]] == ids
    assert sim.kinds["Fetch"] == 2  # 3 -> 2, then 2 -> 1
    assert sim.routers[3].streams.stats.gaps == 0
    assert sim.routers[2].fetches.stats.asked_on == 1
    assert sim.routers[1].fetches.stats.answered == 1


def test_a_fetch_lost_on_the_way_is_asked_again_until_answered() -> None:
    # As above, but the first Fetches die on the way (2 -> 1: a node that crashed, or
    # had no way on for a moment): 3 asks again, each time toward the origin as it sees
    # the mesh then, and 2 asks on again; both stop once the batch came.
    sim = routed_sim(4, line_edges_(4), {3: {"a"}})
    ids = gap_at_3(sim, {(2, 1)})  # the asks die at 2's link to 1
    asker = sim.routers[3].fetches
    sim.run(max_time=asker.delay + asker.retry + 0.05)
    assert [d.batch.id for d in sim.delivered[3]] == ids[:1]  # held
    assert asker.stats.asked == 2
    assert asker.stats.retried == 1
    assert sim.routers[2].fetches.stats.asked_on == 2
    sim.drop.clear()
    sim.run(max_time=2 * asker.retry + 0.05)  # within order_hold (1 s): in order
    assert [d.batch.id for d in sim.delivered[3]] == ids
    assert asker.stats.asked == 3
    assert asker.stats.retried == 2
    assert sim.routers[1].fetches.stats.answered == 1
    assert sim.routers[3].streams.stats.gaps == 0
    sim.run(max_time=10.0)
    assert asker.stats.asked == 3  # answered: not asked again
    assert asker.next_deadline() is None


def test_an_ask_that_is_never_answered_is_given_up_after_its_retries() -> None:
    sim = routed_sim(2, line_edges_(2), {1: {"a"}})
    fetches = sim.routers[1].fetches
    wanted = (sim.ids[0], 1, 7)
    fetches.want(wanted, sim.ids[0], 0.0)
    now, sent = 0.0, []
    while (due := fetches.next_deadline()) is not None:
        now = due
        sent += fetches.due(now)
    assert len(sent) == 1 + fetches.retries
    assert now == pytest.approx(fetches.delay + fetches.retry * (2 ** fetches.retries - 1))
    fetches.want(wanted, sim.ids[0], now)  # a later gap may ask again
    assert fetches.next_deadline() == now + fetches.delay


def test_a_fetch_from_a_stranger_or_for_unknown_batches_costs_nothing() -> None:
    sim = routed_sim(3, line_edges_(3), {2: {"a"}})
    me = sim.routers[1]
    fetch = Fetch(sim.ids[0], 1, [5, 6])
    assert me.on_message(fetch, b"x" * 16, 0.0, sim.verifiers[1]) == []  # not linked
    actions = me.on_message(fetch, sim.ids[2], 0.0, sim.verifiers[1])
    # not in history: asked on once toward the origin, and only once
    assert [type(m).__name__ for a in actions for m in a.msgs] == ["Fetch"]  # type: ignore[attr-defined]
    assert me.on_message(fetch, sim.ids[2], 0.1, sim.verifiers[1]) == []


def line_edges_(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


def test_a_node_on_the_way_keeps_the_batch_for_repair_but_neither_delivers_nor_stores_it(
) -> None:
    sim = routed_sim(3, line_edges_(3), {0: set(), 1: set(), 2: {"a"}})
    kept: list[bytes] = []
    sim.routers[1].on_kept = lambda batch, body, age: kept.append(batch.id)
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run()
    assert delivered_to(sim, batch.id) == {2}
    assert kept == []
    assert batch.origin + batch.id in sim.routers[1].history
    assert sim.routers[1].interest is not None
    assert sim.routers[1].interest.stats.relayed == 1


def test_a_member_that_wants_everything_costs_one_branch_of_each_tree() -> None:
    n = 30
    edges = random_connected(n, 30, seed=9)
    wants = {i: {"a"} for i in (3, 14, 25)}
    honest = routed_sim(n, edges, wants)
    batch, body = routed(honest, 7, 1, "a")
    honest.publish(7, batch, body)
    honest.run()
    before = receivers(honest, batch.id)
    greedy = routed_sim(n, edges, {**wants, 19: {"*"}})  # says it wants every topic
    batch2, body2 = routed(greedy, 7, 1, "a")
    greedy.publish(7, batch2, body2)
    greedy.run()
    after = receivers(greedy, batch2.id)
    assert 19 in after
    # what it adds is at most its own way from the tree: no more than its distance
    extra = after - before
    assert len(extra) <= distances(n, edges, 7)[19]
    assert all(greedy.received[(i, batch2.id)] == 1 for i in after)


class Starts:
    """When a node's subscriptions began (``LocalInterest`` stand-in)."""

    def __init__(self, start: float) -> None:
        self.newest = start

    def start(self, topic: str) -> float | None:
        return self.newest


@pytest.mark.parametrize("subscribed_at", [0.5, 2.0])
def test_a_member_that_comes_to_want_a_topic_is_caught_up_from_its_start(
        subscribed_at: float) -> None:
    """Nobody wanted "a" when node 0 published at 1.0; then node 5 does, having
    subscribed at ``subscribed_at``: the batch is announced with its age toward node 5,
    which delivers it only if it was published after that."""
    sim = routed_sim(8, LINE, {})
    sim.now = 1.0
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run()
    assert receivers(sim, batch.id) == set()
    routing = sim.routers[5].interest
    assert routing is not None
    routing.local = Starts(subscribed_at)
    interests = routing.interests
    assert isinstance(interests, FakeInterests)
    interests.table[sim.ids[5]] = {"a"}
    interests.version += 1
    interests.grown += 1
    sim.now = 3.0
    sim.run()
    assert receivers(sim, batch.id) == {1, 2, 3, 4, 5}  # by the way to node 5 only
    caught_up = subscribed_at < 1.0
    assert delivered_to(sim, batch.id) == ({5} if caught_up else set())
    assert routing.stats.early == (0 if caught_up else 1)
    assert sim.routers[0].interest.stats.caught_up == 1  # type: ignore[union-attr]
    sim.run()  # a later change of the interests announces nothing again
    interests.version += 1
    interests.grown += 1
    sim.run()
    assert sim.routers[0].interest.stats.caught_up == 1  # type: ignore[union-attr]


def test_an_announcement_s_age_is_left_out_unless_set_and_old_decoders_skip_it() -> None:
    key = b"k" * 32
    assert encode_message(IHave([Announce(key, 1)])) == encode_message(
        IHave([Announce(key, 1, None)]))

    class OldAnnounce(msgspec.Struct, array_like=True):  # protocol 6's
        key: bytes
        hops: int

    raw = msgspec.msgpack.encode(Announce(key, 3, 1500))
    assert msgspec.msgpack.decode(raw, type=OldAnnounce) == OldAnnounce(key, 3)
    assert len(raw) > len(msgspec.msgpack.encode(Announce(key, 3)))
    decoded = decode_message(msgspec.msgpack.encode(IHave([Announce(key, 3, 1500)])))
    assert isinstance(decoded, IHave)
    assert decoded.batches[0].age == 1500


def test_a_leaf_checks_no_signature_of_a_batch_straight_from_its_origin() -> None:
    # 0 - 1 - 2 and 1 - 3 (TLS links: 1 takes 0's batches on the strength of the link)
    sim = routed_sim(4, [(0, 1), (1, 2), (1, 3)], {1: {"a"}, 2: {"b"}})
    checks: list[bool] = []
    verifier = Verifier(1 << 20)

    def verify(batch: Batch, *, check_signature: bool = True) -> BatchBody:
        checks.append(check_signature)
        return verifier.verify(batch, check_signature=check_signature)

    me = sim.routers[1]
    origin, peer2 = sim.ids[0], sim.ids[2]
    leaf, _ = routed(sim, 0, 1, "a")  # 1 wants "a" and is the tree's only node
    forged, _ = routed(sim, 0, 2, "a")
    forged = msgspec.structs.replace(forged, sig=bytes(64))
    relayed, _ = routed(sim, 0, 3, "b")  # 1 passes "b" on to 2
    bad_relayed, _ = routed(sim, 0, 4, "b")
    bad_relayed = msgspec.structs.replace(bad_relayed, sig=bytes(64))
    for batch in (leaf, forged):  # delivered; nobody else gets it: nothing to check
        actions = me.on_batch(batch, origin, 0.0, verify, authenticated=True)
        assert [type(a).__name__ for a in actions] == ["Deliver"]
    assert checks == [False, False]
    # a batch it passes on is checked first: a forged one goes nowhere, closes the link
    actions = me.on_batch(relayed, origin, 0.0, verify, authenticated=True)
    assert [(type(a).__name__, getattr(a, "peers", None)) for a in actions] == [
        ("Forward", (peer2,))]
    assert checks == [False, False, False, True]
    actions = me.on_batch(bad_relayed, origin, 0.0, verify, authenticated=True)
    assert [type(a).__name__ for a in actions] == ["Disconnect"]
    assert bad_relayed.origin + bad_relayed.id not in me.history


def test_a_relay_may_bring_any_number_of_batches_of_an_origin_already_seen() -> None:
    # 0 - 1 - 2: node 2 gets 0's batches through 1 only. The limit on new origins a
    # peer brings (100/s, 1,024 at once) counts an origin once, streams or not.
    sim = routed_sim(3, [(0, 1), (1, 2)], {2: {"a"}})
    me, verify = sim.routers[2], Verifier(1 << 20).verify
    prev = 0
    for k in range(1, 1_501):
        batch, body = routed(sim, 0, k, "a", tprev=prev)
        prev = body.seq
        me.on_batch(msgspec.structs.replace(batch, hops=2), sim.ids[1], 0.0, verify)
    assert me.stats.new_origin_limited == 0
    assert me.interest is not None
    assert me.interest.stats.wanted == 1_500
