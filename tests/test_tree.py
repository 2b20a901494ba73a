"""Broadcast trees, history and per-origin order in the router: pure simulations (no
I/O) where the test owns the clock. tests/gossip_sim.py has the simulator."""

from __future__ import annotations

import random

import pytest

from p2pnode.gossip import order
from p2pnode.gossip.history import History
from p2pnode.gossip.order import OrderBuffer
from p2pnode.gossip.router import Deliver, Forward, Send
from p2pnode.wire.messages import (
    Announce,
    Batch,
    BatchBody,
    Digest,
    DigestEntry,
    Graft,
    IHave,
    Prune,
    encode_message,
)

from .gossip_sim import Edges, Sim, distances, make_router, random_connected, ring

TOPOLOGIES = [
    pytest.param(8, ring(8), id="ring8"),
    *(pytest.param(20, random_connected(20, 25, seed), id=f"random20-seed{seed}")
      for seed in range(3)),
]


def no_verify(batch: Batch) -> BatchBody:
    raise AssertionError("nothing to verify here")


def publish_all(sim: Sim, node: int, count: int, start: int = 0) -> list[tuple[Batch, BatchBody]]:
    sim.run()  # links that just opened exchange their digests first
    out = []
    for k in range(start, start + count):
        b, body = sim.make(node, k)
        sim.publish(node, b, body)
        sim.run()
        out.append((b, body))
    return out


def copies_of(sim: Sim, batch: Batch) -> list[int]:
    return [sim.received[(i, batch.id)] for i in range(len(sim.routers))]


# -- tree formation and Prune -------------------------------------------------------------


@pytest.mark.parametrize(("n", "edges"), TOPOLOGIES)
def test_first_batch_floods_then_the_tree_carries_one_copy_per_node(n: int, edges: Edges) -> None:
    sim = Sim(n, edges, mode="tree")
    sent = publish_all(sim, 0, 5)
    first, later = sent[0][0], [b for b, _ in sent[1:]]
    # The first batch goes over every link (more than one copy somewhere) and the
    # duplicates are answered with Prune ...
    if len(edges) > n - 1:
        assert sum(copies_of(sim, first)) > n - 1
        assert sim.kinds["Prune"] > 0
    # ... from then on each other node receives exactly one copy, over a spanning tree.
    for b in later:
        assert copies_of(sim, b) == [0] + [1] * (n - 1)
    for i in range(1, n):
        assert len(sim.delivered_ids(i)) == 5
        assert sim.routers[i].stats.rejected == 0
    # The tree is made of first arrivals: on FIFO links, shortest paths.
    dist = distances(n, edges, 0)
    for i in range(1, n):
        assert [d.batch.hops for d in sim.delivered[i]] == [dist[i]] * 5
    # The links not in the tree carry announcements instead.
    if len(edges) > n - 1:
        assert sum(r.stats.ihave_sent for r in sim.routers) > 0
    assert sum(r.stats.grafts_sent for r in sim.routers) == 0


def test_trees_are_per_origin() -> None:
    # On a ring each origin's tree leaves out a different link: the one opposite it.
    sim = Sim(6, ring(6), mode="tree")
    for origin in (0, 3):
        sent = publish_all(sim, origin, 3, start=10 * origin)
        for b, _ in sent[1:]:
            assert copies_of(sim, b) == [0 if i == origin else 1 for i in range(6)]
    me = sim.routers[1]
    # Node 1 pushes origin 0's batches on to node 2 but origin 3's back to node 0.
    assert sim.ids[2] not in me.lazy_peers(sim.ids[0])
    assert sim.ids[0] not in me.lazy_peers(sim.ids[3])


def test_flood_mode_never_prunes() -> None:
    sim = Sim(8, [*ring(8), (0, 4), (2, 6)], mode="flood")
    sent = publish_all(sim, 0, 4)
    assert sim.kinds["Prune"] == 0
    assert sim.kinds["IHave"] == 0
    for b, _ in sent:
        assert sum(copies_of(sim, b)) == sum(copies_of(sim, sent[0][0]))


def test_prune_makes_a_link_lazy_for_that_origin_only() -> None:
    sim = Sim(3, [(0, 1), (1, 2)], mode="tree")
    publish_all(sim, 0, 1)
    r, origin = sim.routers[1], sim.ids[0]
    assert r.on_message(Prune([origin]), sim.ids[2], 1.0, no_verify) == []
    assert r.lazy_peers(origin) == {sim.ids[2]}
    assert r.lazy_peers(sim.ids[2]) == set()
    assert r.stats.prunes_received == 1
    # Origins it never saw get no tree state (a peer cannot fill the table with them).
    r.on_message(Prune([b"\x09" * 16]), sim.ids[2], 1.0, no_verify)
    assert b"\x09" * 16 not in r.trees


# -- Graft after a lost eager link, and a node that dies ----------------------------------


def test_a_batch_lost_on_an_eager_link_is_grafted_from_an_announcer() -> None:
    sim = Sim(8, [*ring(8), (0, 4), (2, 6), (1, 5)], mode="tree", graft_timeout=0.1)
    (_, _), (second, _) = publish_all(sim, 0, 2)  # the tree has formed
    # From now on, everything node 3's tree parent (for origin 0) sends it is lost.
    parent = next(i for i in range(8) if sim.sent[(i, 3, second.id)])
    sim.drop.add((parent, 3))
    (lost, _), = publish_all(sim, 0, 1, start=5)
    assert (parent, 3, lost.id) in sim.sent  # pushed, and lost
    assert lost.id in {d.batch.id for d in sim.delivered[3]}  # it came anyway
    assert sim.routers[3].stats.grafts_sent == 1
    assert sum(r.stats.grafts_received for r in sim.routers) == 1
    for i in range(1, 8):
        assert len(sim.delivered_ids(i)) == 3, i
    # The graft made the announcer's link eager for origin 0: the next batch needs none.
    publish_all(sim, 0, 1, start=6)
    assert sim.routers[3].stats.grafts_sent == 1
    assert len(sim.delivered_ids(3)) == 4


def test_a_crashed_inner_node_is_routed_around() -> None:
    n = 12
    edges = random_connected(n, 14, seed=5)
    sim = Sim(n, edges, mode="tree")
    (_, _), (second, _) = publish_all(sim, 0, 2)
    # The node that forwards origin 0's batches to the most others dies silently: its
    # links lose everything (as they would until a timeout notices).
    fanout = {i: sum(1 for j in range(n) if sim.sent[(i, j, second.id)]) for i in range(n)}
    victim = max(range(1, n), key=lambda i: fanout[i])
    assert fanout[victim] >= 2
    for j in range(n):
        sim.drop |= {(victim, j), (j, victim)}
    publish_all(sim, 0, 3, start=10)
    reachable = distances(n, [(a, b) for a, b in edges if victim not in (a, b)], 0)
    assert len(reachable) == n - 1  # the rest of the mesh is still connected
    for i in range(1, n):
        if i != victim:
            assert len(sim.delivered_ids(i)) == 5, i
    assert sum(r.stats.grafts_sent for r in sim.routers) >= 1


# -- repair after a partition, and history -------------------------------------------------


def test_partition_heals_and_both_sides_get_what_they_missed() -> None:
    n = 10
    left, right = range(0, 5), range(5, 10)
    inside = [(a, b) for a in left for b in left if a < b and (b - a) in (1, 2)]
    inside += [(a + 5, b + 5) for a, b in inside]
    cross = [(0, 5), (2, 7), (4, 9)]
    sim = Sim(n, inside + cross, mode="tree")
    publish_all(sim, 0, 2)
    publish_all(sim, 6, 2, start=100)
    for a, b in cross:
        sim.unlink(a, b)
    during = publish_all(sim, 1, 3, start=200) + publish_all(sim, 8, 3, start=300)
    for i in right:
        assert not {b.id for b, _ in during[:3]} & {d.batch.id for d in sim.delivered[i]}
    heal_at = sim.now
    dups_before = sum(r.stats.duplicates for r in sim.routers)
    for a, b in cross:
        sim.link(a, b)
    sim.run()
    # Repairs spread by announcement, and each node asks once: hardly any extra copy.
    extra = sum(r.stats.duplicates for r in sim.routers) - dups_before
    assert extra <= 3, extra
    own = {0: 2, 6: 2, 1: 3, 8: 3}  # messages each node published itself
    for i in range(n):
        others = 10 - own.get(i, 0)
        assert len(sim.delivered_ids(i)) == others, i
        assert len(set(sim.delivered_ids(i))) == others  # exactly once
    assert sum(r.stats.repaired for r in sim.routers) > 0
    assert sim.now - heal_at < 5.0


def test_digest_lists_history_and_a_peer_is_told_what_it_lacks() -> None:
    sim = Sim(3, [(0, 1)], mode="tree")
    sent = publish_all(sim, 0, 4)
    # Node 2 had no link; when one opens to node 1, node 1 announces all four batches.
    sim.link(1, 2)
    sim.run()
    assert sim.routers[1].stats.repaired == 4  # announced as what node 2 lacked
    assert [d.batch.id for d in sim.delivered[2]] == [b.id for b, _ in sent]
    assert sim.routers[2].stats.grafts_sent == 4
    # A digest that covers everything gets no answer.
    r1 = sim.routers[1]
    full = Digest(r1.history.digest(max_bytes=10_000))
    assert full.entries == [DigestEntry(sim.ids[0], 1, [1, 4])]
    assert r1.on_message(full, sim.ids[2], sim.now, no_verify) == []


def test_graft_of_a_batch_no_longer_in_history_is_counted() -> None:
    me, a = b"\x01" * 16, b"\x02" * 16
    r = make_router(me, mode="tree", peers=(a,))
    assert r.on_message(Graft([b"\x05" * 32]), a, 0.0, no_verify) == []
    assert r.stats.graft_misses == 1


def test_an_announced_batch_that_never_comes_is_given_up() -> None:
    me, a, b = (bytes([i]) * 16 for i in (1, 2, 3))
    r = make_router(me, mode="tree", peers=(a, b), graft_timeout=0.1)
    key = b"\x07" * 32
    r.on_message(IHave([Announce(key, 2)]), a, 0.0, no_verify)
    r.on_message(IHave([Announce(key, 3)]), b, 0.01, no_verify)
    assert r.next_deadline() == pytest.approx(0.1)
    assert r.tick(0.1) == [Send(a, [Graft([key])])]
    assert r.tick(0.2) == [Send(b, [Graft([key])])]  # the next announcer
    assert r.tick(0.31) == []
    assert r.stats.missing_given_up == 1
    assert r.next_deadline() is None


# -- per-origin order ---------------------------------------------------------------------


def test_order_holds_a_batch_until_the_gap_is_filled() -> None:
    o: OrderBuffer[str] = OrderBuffer(hold=1.0)
    o1 = b"\x01" * 16
    assert o.add(o1, 1, 1, "a", 0.0) == (True, ["a"])
    assert o.add(o1, 1, 3, "c", 0.1) == (True, [])  # 2 is missing: hold 3
    assert o.next_deadline() == pytest.approx(1.1)
    assert o.add(o1, 1, 2, "b", 0.5) == (True, ["b", "c"])
    assert o.next_deadline() is None
    assert o.add(o1, 1, 2, "b", 0.6) == (False, [])  # a replay
    assert o.stats.stale == 1


def test_order_gives_up_a_gap_after_the_hold_and_takes_it_late() -> None:
    o: OrderBuffer[str] = OrderBuffer(hold=1.0)
    o1 = b"\x01" * 16
    o.add(o1, 1, 1, "a", 0.0)
    o.add(o1, 1, 4, "d", 0.0)
    o.add(o1, 1, 5, "e", 0.2)
    assert o.tick(0.9) == []
    assert o.tick(1.0) == ["d", "e"]
    assert o.stats.gaps == 2
    assert o.stats.recent_gaps == [(o1, 1, 2, 3)]
    assert o.add(o1, 1, 3, "c", 2.0) == (True, ["c"])  # late, but not lost
    assert o.stats.late == 1
    assert o.add(o1, 1, 3, "c", 2.1) == (False, [])


def test_order_new_epoch_and_first_seen_sequence() -> None:
    o: OrderBuffer[str] = OrderBuffer(hold=1.0)
    o1 = b"\x01" * 16
    assert o.add(o1, 5, 10, "j", 0.0) == (True, ["j"])  # a late joiner starts where it is
    assert o.add(o1, 5, 9, "i", 0.1) == (True, ["i"])  # older history is still delivered
    assert o.add(o1, 5, 12, "l", 0.2) == (True, [])
    # The origin restarted (run 6) before 11 came: its new run waits behind the gap,
    # which gets another second (the restarted origin repairs it from its store).
    assert o.add(o1, 6, 1, "A", 0.3) == (True, [])
    assert o.is_held(o1, 6, 1)
    assert o.held_now() == {o1: frozenset({(5, 12), (6, 1)})}
    assert o.tick(1.25) == []  # 12's deadline (1.2) was pushed to 1.3
    assert o.add(o1, 5, 11, "k", 1.26) == (True, ["k", "l", "A"])  # in the origin's order
    assert o.add(o1, 6, 2, "B", 1.27) == (True, ["B"])
    assert o.add(o1, 6, 0, "x", 1.28) == (True, ["x"])  # unnumbered
    assert o.held_count == 0
    assert o.stats.gaps == 0


def test_order_a_restart_whose_gap_never_fills_goes_on_after_the_hold() -> None:
    o: OrderBuffer[str] = OrderBuffer(hold=1.0)
    o1 = b"\x01" * 16
    assert o.add(o1, 5, 1, "a", 0.0) == (True, ["a"])
    assert o.add(o1, 5, 3, "c", 0.1) == (True, [])
    assert o.add(o1, 6, 1, "A", 0.5) == (True, [])
    assert o.add(o1, 6, 1, "A", 0.55) == (True, [])  # the same batch again: once
    assert o.add(o1, 6, 2, "B", 0.6) == (True, [])
    assert o.next_deadline() == 1.5
    assert o.tick(1.4) == []
    assert o.tick(1.5) == ["c", "A", "B"]
    assert o.held_count == 0
    assert (o.stats.gaps, o.stats.recent_gaps[-1][1:]) == (1, (5, 2, 2))
    assert o.add(o1, 5, 2, "b", 1.6) == (True, ["b"])  # late, but not lost
    assert o.add(o1, 5, 2, "b", 1.7) == (False, [])  # once
    assert o.add(o1, 6, 3, "C", 1.8) == (True, ["C"])


def test_order_a_gap_being_filled_is_not_given_up() -> None:
    """Batches 5-9 wait for 1-4, which come one by one, each within the hold of the
    one before (a long repair): nothing is given up; once they stop coming, the hold
    runs out."""
    o: OrderBuffer[int] = OrderBuffer(hold=1.0)
    o1 = b"\x01" * 16
    o.add(o1, 1, 1, 1, 0.0)
    for seq in range(6, 10):
        assert o.add(o1, 1, seq, seq, 0.0) == (True, [])
    assert o.add(o1, 1, 2, 2, 0.9) == (True, [2])
    assert o.tick(1.5) == []
    assert o.add(o1, 1, 3, 3, 1.8) == (True, [3])
    assert o.add(o1, 1, 4, 4, 2.7) == (True, [4])
    assert o.next_deadline() == 3.7
    assert o.tick(3.6) == []
    assert o.tick(3.7) == [6, 7, 8, 9]  # 5 never came
    assert o.stats.gaps == 1


def test_order_a_gap_whose_batches_are_being_fetched_waits_for_them() -> None:
    """After a partition heals, the missing batches were announced and are being
    grafted: the gap waits for them (up to LONGEST_HOLD x hold), not just ``hold``;
    once nothing of the origin is being fetched, the hold is as usual."""
    o: OrderBuffer[int] = OrderBuffer(hold=1.0)
    o1, o2 = b"\x01" * 16, b"\x02" * 16
    fetching = {o1}
    o.add(o1, 1, 1, 1, 0.0)
    o.add(o2, 1, 1, 1, 0.0)
    assert o.add(o1, 1, 5, 5, 0.0) == (True, [])
    assert o.add(o2, 1, 5, 5, 0.0) == (True, [])
    assert o.next_deadline(fetching.__contains__) == 1.0  # o2's
    assert o.tick(1.0, fetching.__contains__) == [5]  # o2 gave up; o1 waits
    assert o.next_deadline(fetching.__contains__) == order.LONGEST_HOLD * 1.0
    assert o.tick(5.0, fetching.__contains__) == []
    assert o.add(o1, 1, 2, 2, 5.0) == (True, [2])
    fetching.clear()  # nothing more comes
    assert o.tick(5.9, fetching.__contains__) == []  # 2 came at 5.0: a second more
    assert o.tick(6.0, fetching.__contains__) == [5]


def test_order_a_long_gap_is_held_longer_than_a_lost_batch() -> None:
    """A gap of 16 numbers or more (a partition, a restarted origin) waits up to
    LONGEST_HOLD x hold for its repair; a short one (a lost batch) the hold."""
    o: OrderBuffer[int] = OrderBuffer(hold=1.0)
    o1, o2 = b"\x01" * 16, b"\x02" * 16
    o.add(o1, 1, 1, 1, 0.0)
    o.add(o2, 1, 1, 1, 0.0)
    o.add(o1, 1, 3, 3, 0.0)  # 2 missing
    o.add(o2, 1, 2 + order.LONG_GAP, 99, 0.0)  # 2 .. 17 missing
    assert o.tick(1.0) == [3]
    assert o.tick(order.LONGEST_HOLD - 0.1) == []
    assert o.tick(order.LONGEST_HOLD) == [99]


def test_order_a_known_origins_new_run_begins_at_one() -> None:
    """The origin restarted and published 1-4 before this node got a batch of its new
    run (5): 5 waits for them; a new origin's first batch starts where it is."""
    o: OrderBuffer[str] = OrderBuffer(hold=1.0, max_gaps=8)
    o1, o2 = b"\x01" * 16, b"\x02" * 16
    assert o.add(o1, 5, 7, "old", 0.0) == (True, ["old"])
    assert o.add(o1, 6, 5, "e", 0.1) == (True, [])
    assert o.add(o1, 6, 6, "f", 0.2) == (True, [])
    assert o.add(o1, 6, 2, "b", 0.3) == (True, [])
    assert o.add(o1, 6, 1, "a", 0.3) == (True, ["a", "b"])
    assert o.tick(1.2) == []  # 1 came at 0.3: a second more for 3
    assert o.tick(1.3) == ["e", "f"]  # 3 and 4 never came: given up
    assert o.add(o1, 6, 4, "d", 1.4) == (True, ["d"])  # late, but delivered, once
    assert o.add(o1, 6, 4, "d", 1.5) == (False, [])
    assert o.add(o2, 3, 50, "x", 0.0) == (True, ["x"])  # never seen before: starts at 50
    assert o.add(o1, 7, 20, "far", 2.0) == (True, ["far"])  # past max_gaps: starts there


def test_order_a_new_run_waits_behind_a_gap_within_the_origins_bound() -> None:
    o: OrderBuffer[int] = OrderBuffer(hold=100.0, max_held_per_origin=8)
    o1 = b"\x01" * 16
    o.add(o1, 5, 1, 1, 0.0)
    o.add(o1, 5, 3, 3, 0.0)
    out = []
    for seq in range(1, 10):
        out += o.add(o1, 6, seq, 100 + seq, 0.0)[1]
    # One held and 8 waiting is over the origin's bound: the gap (2) is given up.
    assert out == [3] + [100 + s for s in range(1, 10)]
    assert o.held_count == 0
    assert o.stats.gaps == 1


def test_order_bounds_what_it_holds() -> None:
    o: OrderBuffer[int] = OrderBuffer(hold=100.0, max_held=10, max_origins=2)
    o1, o2, o3 = (bytes([i]) * 16 for i in (1, 2, 3))
    o.add(o1, 1, 1, 1, 0.0)
    out = []
    for seq in range(3, 20):
        out += o.add(o1, 1, seq, seq, 0.0)[1]
    assert o.held_count <= 10
    assert out
    assert out == sorted(out)
    o.add(o2, 1, 1, 1, 0.0)
    o.add(o3, 1, 1, 1, 0.0)  # o1 is forgotten (least recently used): all it held comes out
    assert o.held_count == 0


@pytest.mark.parametrize("seed", range(3))
def test_router_delivers_each_origin_in_order_over_jittery_links(seed: int) -> None:
    # Links that reorder (random delivery order) and lose nothing: every node delivers
    # each origin's batches in sequence order.
    rng = random.Random(seed)
    sim = Sim(6, [*ring(6), (0, 3)], mode="tree")
    made = publish_all(sim, 0, 1)  # (the first batch seen of an origin sets the start)
    made += [sim.make(0, k) for k in range(1, 12)]
    for b, body in made[1:]:
        sim.apply(0, sim.routers[0].publish(b, body, sim.now))
        sim.announce()
    items = list(sim.queue)
    rng.shuffle(items)
    sim.queue.clear()
    sim.queue.extend(items)
    sim.run()
    want = [body.items[0].id for _, body in made]
    for i in range(1, 6):
        assert sim.delivered_ids(i) == want, i
    assert sum(r.order.stats.held for r in sim.routers) > 0  # some did overtake
    assert sum(r.order.stats.gaps for r in sim.routers) == 0


def test_a_gap_filled_by_graft_is_delivered_in_order() -> None:
    sim = Sim(3, [(0, 1), (0, 2), (1, 2)], mode="tree", order_hold=5.0)
    made = [sim.make(0, k) for k in range(3)]
    sim.publish(0, *made[0])
    sim.run()
    # Batch 2 is lost on both links from the origin; batch 3 arrives, and is held.
    sim.drop |= {(0, 1), (0, 2)}
    sim.publish(0, *made[1])
    sim.drop.clear()
    sim.publish(0, *made[2])
    sim.run(max_time=0.05)
    assert len(sim.delivered_ids(1)) == 1  # 3 waits for 2
    # Nobody announced batch 2 (it was lost on every link). When node 1's link to the
    # origin opens again, the digest exchange repairs it: announced, grafted, then 2 and
    # 3 go out in order, well within the hold.
    sim.unlink(0, 1)
    sim.link(0, 1)
    sim.run()
    want = [body.items[0].id for _, body in made]
    assert sim.delivered_ids(1) == want
    assert sim.routers[1].order.stats.gaps == 0
    assert sim.routers[1].stats.grafts_sent == 1


def test_a_partitions_batches_repaired_slowly_after_the_heal_come_in_order() -> None:
    """After a heal, the digest exchange announces what node 1 missed, but grafts wait
    (spread out) longer than the hold: the gap waits for them (they are being fetched),
    and 2-5 come before 6 with nothing given up."""
    sim = Sim(2, [(0, 1)], order_hold=0.5, graft_timeout=0.6, repair_spread=1.0)
    made = [sim.make(0, k) for k in range(6)]
    sim.publish(0, *made[0])
    sim.run()
    sim.unlink(0, 1)
    for k in range(1, 5):
        sim.publish(0, *made[k])
    sim.run()
    sim.link(0, 1)
    sim.publish(0, *made[5])  # live, ahead of the partition's
    sim.run()
    assert sim.delivered_ids(1) == [body.items[0].id for _, body in made]
    assert sim.routers[1].order.stats.gaps == 0


def test_after_a_link_opens_a_gap_is_held_while_its_repair_may_come() -> None:
    """A link opened: what its digest exchange brings may be announced seconds later
    under load; and a node that hears nothing may be cut off. A gap is held meanwhile
    (at most LONGEST_HOLD x hold), then, nothing having come, given up."""
    sim = Sim(3, [(0, 1)], order_hold=0.5)
    made = [sim.make(0, k) for k in range(3)]
    sim.publish(0, *made[0])
    sim.run()
    sim.drop.add((0, 1))
    sim.publish(0, *made[1])  # lost, and nobody tells node 1
    sim.drop.clear()
    sim.now = 10.0
    sim.routers[1].peer_up(sim.ids[2], sim.now)  # another link opens (its digest: never)
    sim.publish(0, *made[2])
    sim.run(max_time=4.0)
    assert len(sim.delivered_ids(1)) == 1  # 3 waits: 0.5 s is long gone
    sim.run(max_time=5.0)
    assert sim.delivered_ids(1) == [made[0][1].items[0].id, made[2][1].items[0].id]
    assert sim.routers[1].order.stats.gaps == 1
    assert 15.0 <= sim.now < 15.1  # the first held came at 10.0: 10 x 0.5 s


def test_a_gap_is_given_up_after_the_hold_while_the_node_hears_from_its_peers() -> None:
    """Traffic keeps coming (the node is not cut off, no link opened): a gap of one
    batch is given up after ``hold``."""
    sim = Sim(2, [(0, 1)], order_hold=0.5, repair_grace=0.0)
    made = [sim.make(0, k) for k in range(12)]
    sim.publish(0, *made[0])
    sim.run()
    sim.now = 10.0
    sim.drop.add((0, 1))
    sim.publish(0, *made[1])  # lost
    sim.drop.clear()
    for k in range(2, 12):  # a batch every 0.1 s
        sim.now = 10.0 + k / 10
        sim.publish(0, *made[k])
        sim.run(max_time=0.09)
        if k == 5:  # the first held came at 10.2: 0.5 s later it is still held
            assert sim.routers[1].order.stats.gaps == 0
    assert sim.routers[1].order.stats.gaps == 1  # given up by 10.7 (0.5 s)
    assert len(sim.delivered_ids(1)) == 11


def test_a_held_batch_is_kept_for_the_store_only_once_delivered() -> None:
    """The store keeps what the node handed its apps, in that order: a batch held for a
    gap is not kept until it is released (a node killed meanwhile fetches it again
    after its restart, and its apps get it then)."""
    sim = Sim(2, [(0, 1)], order_hold=0.5)
    kept: list[int] = []
    sim.routers[1].on_kept = lambda batch, body, age: kept.append(body.seq)
    made = [sim.make(0, k) for k in range(4)]
    sim.publish(0, *made[0])
    sim.run()
    sim.drop.add((0, 1))
    sim.publish(0, *made[1])
    sim.drop.clear()
    sim.publish(0, *made[2])
    sim.publish(0, *made[3])
    sim.run(max_time=0.1)
    assert kept == [1]  # 3 and 4 are held: not delivered, not kept
    sim.run()
    assert kept == [1, 3, 4]  # released after the hold, kept then, in order
    assert len(sim.delivered_ids(1)) == 3


# -- history -------------------------------------------------------------------------------


def batch_of(origin: bytes, k: int, size: int = 10) -> Batch:
    return Batch(k.to_bytes(16, "big"), origin, 0, b"\x00" * 32, b"x" * size, b"\x00" * 64)


def test_history_bounds_count_bytes_and_age() -> None:
    o1 = b"\x01" * 16
    h = History(max_batches=3, max_bytes=10_000, max_age=10.0)
    for k in range(5):
        h.add(batch_of(o1, k), 1, k + 1, float(k), None)
    assert [e.seq for e in h] == [3, 4, 5]
    assert h.evicted == 2
    h.expire(13.5)
    assert [e.seq for e in h] == [5]
    small = History(max_batches=100, max_bytes=1000, max_age=100.0)
    for k in range(10):
        small.add(batch_of(o1, k, size=200), 1, k + 1, 0.0, None)
    assert small.bytes <= 1000
    assert len(small) == 2
    off = History(max_batches=0, max_bytes=0, max_age=1.0)
    off.add(batch_of(o1, 1), 1, 1, 0.0, None)
    assert len(off) == 0


def test_history_digest_ranges_and_missing_from() -> None:
    o1, o2 = b"\x01" * 16, b"\x02" * 16
    h = History(max_batches=100, max_bytes=100_000, max_age=100.0)
    for seq in (1, 2, 3, 5, 6, 9):
        h.add(batch_of(o1, seq), 7, seq, 0.0, None)
    h.add(batch_of(o2, 1), 1, 1, 0.0, None)
    h.add(batch_of(o2, 99), 0, 0, 0.0, None)  # unnumbered: not in digests
    digest = {(d.origin, d.epoch): d.ranges for d in h.digest(max_bytes=10_000)}
    assert digest == {(o1, 7): [1, 3, 5, 6, 9, 9], (o2, 1): [1, 1]}
    peer = [DigestEntry(o1, 7, [2, 5])]
    assert [(e.batch.origin, e.seq) for e in h.missing_from(peer)] == [
        (o1, 1), (o1, 6), (o1, 9), (o2, 1)]
    assert h.digest(max_bytes=100) == [DigestEntry(o2, 1, [1, 1])]  # newest runs first


def test_forward_and_send_actions_are_the_only_output_of_publish() -> None:
    me, a = b"\x01" * 16, b"\x02" * 16
    r = make_router(me, mode="tree", peers=(a,))
    sim = Sim(1, [])
    b, body = sim.make(0, 1)
    actions = r.publish(b, body, 0.0)
    assert len(actions) == 1
    assert isinstance(actions[0], Forward)
    assert not [x for x in actions if isinstance(x, Deliver)]
    assert len(r.history) == 1


# -- hostile or unlucky inputs (from a review) -----------------------------------------------


def test_graft_sends_each_batch_once_and_a_second_digest_gets_no_answer() -> None:
    sim = Sim(2, [(0, 1)], mode="tree")
    (b, _), = publish_all(sim, 0, 1)
    r, peer = sim.routers[0], sim.ids[1]
    key = b.origin + b.id
    (send,) = r.on_message(Graft([key] * 4096), peer, 1.0, no_verify)
    assert isinstance(send, Send)
    assert len(send.msgs) == 1
    # The Digest exchanged when the link opened was answered; another one is not.
    assert r.on_message(Digest([]), peer, 1.0, no_verify) == []


def test_one_announcer_cannot_fill_the_missing_table() -> None:
    me, bad, good = (bytes([i]) * 16 for i in (1, 2, 3))
    r = make_router(me, mode="tree", peers=(bad, good), max_missing=100)
    junk = [Announce(bytes([7]) * 16 + k.to_bytes(16, "big"), 1) for k in range(500)]
    r.on_message(IHave(junk), bad, 0.0, no_verify)
    assert len(r.missing) == 25  # a quarter of the table per announcer
    key = b"\x05" * 32
    r.on_message(IHave([Announce(key, 1)]), good, 0.0, no_verify)
    assert key in r.missing
    # Grafting made-up origins creates no tree state for them.
    r.tick(1.0)
    assert not r.trees


def test_replays_outside_the_window_are_stale_and_history_keeps_one_copy() -> None:
    o: OrderBuffer[str] = OrderBuffer(hold=1.0, window=60.0)
    o1 = b"\x01" * 16
    assert o.add(o1, 2, 10, "j", 0.0) == (True, ["j"])
    assert o.add(o1, 2, 5, "e", 30.0) == (True, ["e"])  # older history, soon after: fine
    assert o.add(o1, 2, 4, "d", 61.0) == (False, [])  # below the start, much later: replay
    assert o.add(o1, 1, 7, "x", 61.0) == (False, [])  # an earlier run, much later: replay
    assert o.stats.stale == 2
    h = History(max_batches=10, max_bytes=10_000, max_age=100.0)
    h.add(batch_of(o1, 1), 1, 1, 0.0, None)
    h.add(batch_of(o1, 1), 1, 1, 5.0, None)
    assert len(h) == 1
    assert h.bytes == len(batch_of(o1, 1).body) + 200


def test_a_busy_origin_cannot_push_out_another_origins_held_batches() -> None:
    o: OrderBuffer[int] = OrderBuffer(hold=10.0, max_held=20, max_held_per_origin=15)
    busy, calm = b"\x01" * 16, b"\x02" * 16
    o.add(calm, 1, 1, 1, 0.0)
    assert o.add(calm, 1, 3, 3, 0.0) == (True, [])  # held for 2
    o.add(busy, 1, 1, 1, 0.0)
    for seq in range(3, 40):
        o.add(busy, 1, seq, seq, 0.0)
    assert o.add(calm, 1, 2, 2, 0.5)[1] == [2, 3]  # calm's gap was never given up
    assert o.stats.late == 0


def test_digest_fits_its_byte_budget() -> None:
    h = History(max_batches=10_000, max_bytes=10 << 20, max_age=100.0)
    for k in range(4000):  # one batch per run: the worst case per range
        h.add(batch_of(bytes([k % 251]) * 15 + bytes([k // 251]), k), k, 1, 0.0, None)
    for budget in (1000, 50_000, 163_840 - 4096):
        encoded = encode_message(Digest(h.digest(max_bytes=budget)))
        assert len(encoded) <= budget


def test_order_hands_out_older_history_and_the_previous_run_once_each() -> None:
    # Replay protection without the seen-cache: each number is handed out once.
    o: OrderBuffer[str] = OrderBuffer(hold=1.0, window=60.0, max_ranges=3)
    o1 = b"\x01" * 16
    assert o.add(o1, 5, 10, "j", 0.0) == (True, ["j"])
    for seq in (7, 8, 3):  # older history, in any order: once each
        assert o.add(o1, 5, seq, "h", 1.0) == (True, ["h"])
        assert o.add(o1, 5, seq, "h", 1.0) == (False, [])
    assert o.add(o1, 5, 9, "i", 1.0) == (True, ["i"])  # joins 7-8 and 10
    assert o.add(o1, 5, 5, "e", 1.0) == (True, ["e"])
    assert o.add(o1, 5, 1, "a", 1.0) == (True, ["a"])  # a fourth range: the lowest merge
    assert o.add(o1, 5, 2, "b", 1.0) == (False, [])  # between merged ranges: counted as out
    assert o.add(o1, 6, 1, "A", 2.0) == (True, ["A"])  # a restart
    assert o.add(o1, 5, 11, "k", 3.0) == (True, ["k"])  # the previous run's last batch
    assert o.add(o1, 5, 11, "k", 3.0) == (False, [])
    assert o.add(o1, 5, 9, "i", 3.0) == (False, [])
    assert o.add(o1, 7, 1, "B", 4.0) == (True, ["B"])  # another restart
    assert o.add(o1, 5, 12, "l", 4.0) == (False, [])  # two runs back: dropped
    assert o.add(o1, 6, 2, "C", 70.0) == (False, [])  # the previous run, after the window


def test_order_charges_runs_to_the_peer_that_brought_them() -> None:
    o: OrderBuffer[int] = OrderBuffer(hold=1.0, max_origins=10, max_origins_per_owner=4)
    honest, mallory = b"\xaa" * 16, b"\xbb" * 16
    origins = [bytes([i]) * 16 for i in range(1, 30)]
    for origin in origins[:3]:
        o.add(origin, 1, 1, 1, 0.0, honest)
    o.add(honest, 1, 1, 1, 0.0, honest)  # straight from its origin: charged to itself
    o.add(origins[0], 1, 2, 2, 0.0, origins[0])  # now straight: charged to the origin
    assert o.owned_by(origins[0]) == 1
    assert o.owned_by(honest) == 3
    for origin in origins[3:]:  # mallory makes up 26 origins
        o.add(origin, 1, 1, 1, 0.0, mallory)
    assert o.owned_by(mallory) == 4  # only its own runs made room
    assert all(o.knows(x) for x in (honest, *origins[:3]))
    assert o.tracked == 8
    assert o.stats.forgotten == 22
    # Another made-up peer fills the table: the owner with the most runs gives one up.
    for origin in origins[5:9]:
        o.add(origin + b"x", 1, 1, 1, 0.0, b"\xcc" * 16)
    assert o.tracked == 10
