"""SeenCache and the router in flood mode, alone and in small pure simulations (no I/O,
no own clock).

Batches are real: signed by seeded identities (``make_identity``) and checked with a
``Verifier``, as the node does.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from p2pnode.errors import LocalError
from p2pnode.gossip.router import Deliver, Forward, Router, Send
from p2pnode.gossip.seen import SeenCache
from p2pnode.gossip.signing import Verifier, sign_batch
from p2pnode.identity import NodeIdentity
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Batch, BatchBody, Digest, Item

from .gossip_sim import (
    MAX_PAYLOAD,
    CountingVerifier,
    Edges,
    Sim,
    distances,
    line,
    make_router,
    random_connected,
    ring,
)

IDENTITIES = [make_identity(random.Random(seed)) for seed in range(4)]
ME, I1, I2, I3 = IDENTITIES
SELF, P1, P2, P3 = (i.node_id for i in IDENTITIES)


def mid(i: int) -> bytes:
    return b"\xee" * 8 + i.to_bytes(8, "big")


def items(i: int, count: int = 1) -> list[Item]:
    return [Item(mid(1000 * i + k), "topic", f"payload {i}.{k}".encode()) for k in range(count)]


def signed(
    i: int, origin: NodeIdentity = I1, *, hops: int = 0, to: bytes | None = None, count: int = 1
) -> Batch:
    """Batch ``i`` of ``origin`` (``count`` messages), as it arrives after ``hops`` links."""
    batch = sign_batch(origin, mid(i), to, items(i, count))
    return msgspec.structs.replace(batch, hops=hops) if hops else batch


def body(batch: Batch) -> BatchBody:
    return Verifier(MAX_PAYLOAD).verify(batch)


def with_body(batch: Batch) -> tuple[Batch, BatchBody]:
    return batch, body(batch)


def hopped(batch: Batch, hops: int) -> Batch:
    return msgspec.structs.replace(batch, hops=hops)


def router(
    node_id: bytes = SELF, *, max_hops: int = 16, peers: tuple[bytes, ...] = ()
) -> Router:
    return make_router(node_id, max_hops=max_hops, peers=peers)


verify = Verifier(MAX_PAYLOAD).verify


# -- SeenCache ---------------------------------------------------------------------------


def test_seen_new_then_duplicate() -> None:
    c = SeenCache(10, 5.0)
    assert c.add(b"a", 0.0) is True
    assert c.add(b"a", 1.0) is False
    assert c.add(b"b", 1.0) is True
    assert len(c) == 2
    assert b"a" in c
    assert b"z" not in c
    assert c.evicted == 0


def test_seen_ttl_expiry_with_a_fake_clock() -> None:
    c = SeenCache(10, 10.0)
    c.add(b"a", 0.0)
    c.add(b"b", 5.0)
    assert c.expire(9.999) == 0
    assert len(c) == 2
    assert c.expire(10.0) == 1  # a is exactly ttl old
    assert b"a" not in c
    assert b"b" in c
    assert c.add(b"a", 10.0) is True  # forgotten, so new again
    assert c.expire(100.0) == 2
    assert len(c) == 0
    assert c.evicted == 0  # expiry is not eviction


def test_seen_add_expires_old_entries() -> None:
    c = SeenCache(10, 10.0)
    c.add(b"a", 0.0)
    c.add(b"b", 1.0)
    assert c.add(b"c", 10.5) is True
    assert b"a" not in c
    assert b"b" in c
    assert len(c) == 2


def test_seen_id_older_than_ttl_is_new_again() -> None:
    c = SeenCache(10, 10.0)
    c.add(b"a", 0.0)
    assert c.add(b"a", 20.0) is True


def test_seen_max_entries_evicts_the_oldest() -> None:
    c = SeenCache(3, 100.0)
    for i, key in enumerate([b"a", b"b", b"c"]):
        assert c.add(key, float(i))
    assert c.evicted == 0
    assert c.add(b"d", 3.0) is True
    assert c.evicted == 1
    assert b"a" not in c
    assert all(k in c for k in (b"b", b"c", b"d"))
    assert c.add(b"b", 4.0) is False  # a duplicate evicts nothing
    assert c.evicted == 1
    assert c.add(b"a", 5.0) is True  # a was forgotten
    assert c.evicted == 2
    assert b"b" not in c
    assert len(c) == 3


def test_seen_expiry_frees_room_before_eviction() -> None:
    c = SeenCache(2, 10.0)
    c.add(b"a", 0.0)
    c.add(b"b", 1.0)
    assert c.add(b"c", 10.0) is True  # a expired: no eviction needed
    assert c.evicted == 0
    assert b"b" in c


@pytest.mark.parametrize(("entries", "ttl"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_seen_rejects_bad_bounds(entries: int, ttl: float) -> None:
    with pytest.raises(LocalError):
        SeenCache(entries, ttl)


def test_seen_asks_without_recording() -> None:
    c = SeenCache(10, 10.0)
    assert c.seen(b"a", 0.0) is False
    assert b"a" not in c  # asking does not record
    assert len(c) == 0
    c.add(b"a", 0.0)
    assert c.seen(b"a", 9.0) is True
    assert c.seen(b"a", 10.0) is False  # exactly ttl old: expired
    assert len(c) == 0



# -- the router, flood mode -------------------------------------------------------------


def test_publish_forwards_with_hops_1_and_delivers_nothing() -> None:
    # The node delivers its own messages before it signs them; the router only sends.
    r = router(peers=(P1, P2, P3))
    b = signed(1, ME, count=3)
    assert r.publish(b, body(b), 0.0) == [Forward(hopped(b, 1), (P1, P2, P3))]
    assert (r.stats.delivered, r.stats.forwarded) == (0, 3)
    assert r.on_batch(hopped(b, 2), P1, 0.1, verify) == []  # remembered as seen
    assert r.stats.duplicates == 1


def test_publish_without_peers_sends_nothing() -> None:
    r = router()
    assert r.publish(*with_body(signed(1, ME)), 0.0) == []
    assert r.stats.forwarded == 0


def test_publish_with_max_hops_0_sends_nothing() -> None:
    r = router(max_hops=0, peers=(P1,))
    assert r.publish(*with_body(signed(1, ME)), 0.0) == []
    assert r.stats.forwarded == 0


def test_on_batch_delivers_and_forwards_to_all_but_the_sender() -> None:
    r = router(peers=(P1, P2, P3))
    b = signed(1, I1, hops=2, count=3)
    actions = r.on_batch(b, P2, 0.0, verify)
    assert actions == [Deliver(b, body(b)), Forward(hopped(b, 3), (P1, P3))]
    deliver = actions[0]
    assert isinstance(deliver, Deliver)
    assert deliver.body == BatchBody(b.id, P1, None, items(1, 3))
    # delivered counts messages, forwarded counts batch copies
    assert (r.stats.received, r.stats.delivered, r.stats.forwarded) == (1, 3, 2)
    assert r.stats.rejected == 0


def test_on_batch_from_the_only_peer_is_not_forwarded() -> None:
    r = router(peers=(P1,))
    b = signed(1)
    assert r.on_batch(b, P1, 0.0, verify) == [Deliver(b, body(b))]
    assert r.stats.forwarded == 0


def test_duplicates_are_dropped_and_counted_before_verification() -> None:
    r = router(peers=(P1, P2))
    v = CountingVerifier()
    assert r.on_batch(signed(1), P1, 0.0, v)
    assert v.calls == 1
    assert r.on_batch(signed(1), P2, 0.1, v) == []
    assert r.on_batch(signed(1, hops=5), P1, 0.2, v) == []
    assert v.calls == 1  # a copy already seen costs no signature check
    assert (r.stats.received, r.stats.duplicates, r.stats.delivered) == (3, 2, 1)


def test_duplicate_is_new_again_after_the_ttl() -> None:
    r = make_router(SELF, seen_ttl=10.0, history_age=10.0, peers=(P1,))
    b = signed(1)
    assert r.on_batch(b, P1, 0.0, verify)
    assert r.on_batch(b, P1, 9.9, verify) == []
    assert r.on_batch(b, P1, 10.0, verify) == [Deliver(b, body(b))]


def test_at_max_hops_delivered_but_not_forwarded() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    b = signed(1, hops=3)
    assert r.on_batch(b, P1, 0.0, verify) == [Deliver(b, body(b))]
    assert r.stats.hop_limited == 1
    assert r.stats.forwarded == 0


def test_below_max_hops_forwarded_up_to_the_limit() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    actions = r.on_batch(signed(1, hops=2), P1, 0.0, verify)
    forwards = [a for a in actions if isinstance(a, Forward)]
    assert [f.batch.hops for f in forwards] == [3]


def test_over_max_hops_not_delivered_nor_verified() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    v = CountingVerifier()
    assert r.on_batch(signed(1, hops=4), P1, 0.0, v) == []
    assert r.stats.hop_limited == 1
    assert r.stats.delivered == 0
    assert v.calls == 0


def test_forwarded_batch_keeps_body_and_signature() -> None:
    # Only hops changes on the way, so the next node can still verify it.
    r = router(peers=(P1, P2))
    b = signed(1, hops=1)
    forward = r.on_batch(b, P1, 0.0, verify)[-1]
    assert isinstance(forward, Forward)
    out = forward.batch
    assert out == hopped(b, 2)  # id, origin, key, body and sig unchanged
    assert verify(out) == body(b)


def test_direct_message_is_forwarded_but_not_delivered_elsewhere() -> None:
    r = router(peers=(P1, P2))
    b = signed(1, I1, hops=1, to=P3)
    assert r.on_batch(b, P1, 0.0, verify) == [Forward(hopped(b, 2), (P2,))]
    assert r.stats.delivered == 0


def test_direct_message_delivered_at_the_target_which_does_not_forward() -> None:
    r = router(peers=(P1, P2, P3))
    b = signed(1, I1, hops=1, to=SELF, count=2)
    assert r.on_batch(b, P1, 0.0, verify) == [Deliver(b, body(b))]
    assert r.stats.forwarded == 0
    assert r.stats.delivered == 2


def test_the_target_is_taken_from_the_signed_body() -> None:
    # Batch carries no target outside its body, so a forwarder cannot redirect it.
    b = signed(1, I1, hops=1, to=P3)
    assert body(b).to == P3
    r3 = router(P3, peers=(P1, P2))
    assert r3.on_batch(b, P1, 0.0, verify) == [Deliver(b, body(b))]


def test_publish_direct() -> None:
    r = router(peers=(P1, P2))
    b = signed(1, ME, to=P2)
    assert r.publish(b, body(b), 0.0) == [Forward(hopped(b, 1), (P1, P2))]
    assert r.stats.delivered == 0


def test_own_batches_coming_back_are_duplicates() -> None:
    r = router(peers=(P1, P2))
    v = CountingVerifier()
    b = signed(1, ME)
    r.publish(b, body(b), 0.0)
    assert r.on_batch(hopped(b, 2), P1, 0.1, v) == []
    # Even an id this run never published: the origin is this node.
    assert r.on_batch(signed(2, ME, hops=1), P1, 0.2, v) == []
    assert r.stats.duplicates == 2
    assert r.stats.delivered == 0
    assert v.calls == 0


def test_peer_up_and_down() -> None:
    r = router()
    assert r.peer_up(P2, 0.0) == [Send(P2, [Digest([])])]  # nothing in history yet
    r.peer_up(P1, 0.0)
    r.peer_up(P2, 0.0)  # idempotent, keeps its place
    assert r.peers == (P2, P1)
    r.peer_down(P2)
    r.peer_down(P3)  # unknown: no error
    assert r.peers == (P1,)
    actions = r.publish(*with_body(signed(1, ME)), 0.0)
    assert isinstance(actions[-1], Forward)
    assert actions[-1].peers == (P1,)
    r.peer_down(P1)
    assert r.publish(*with_body(signed(2, ME)), 0.0) == []


# -- Simulation ---------------------------------------------------------------------------


TOPOLOGIES = [
    pytest.param(6, line(6), id="line6"),
    pytest.param(7, ring(7), id="ring7"),
    pytest.param(8, ring(8), id="ring8"),
    *(
        pytest.param(20, random_connected(20, 15, seed), id=f"random20-seed{seed}")
        for seed in range(4)
    ),
]


@pytest.mark.parametrize(("n", "edges"), TOPOLOGIES)
def test_flood_delivers_every_message_exactly_once(n: int, edges: Edges) -> None:
    sim = Sim(n, edges)
    rng = random.Random(1234)
    published: list[tuple[int, Batch]] = []
    for k in range(10):
        node = rng.randrange(n)
        b, bb = sim.make(node, k, count=rng.randint(1, 3))
        published.append((node, b))
        sim.publish(node, b, bb)
        if k % 3 == 0:
            sim.run()  # some floods run alone, others overlap
    sim.run()
    for node in range(n):
        # The origin delivers its own messages itself (before signing), not the router.
        want = sorted(
            item.id for origin, b in published if origin != node for item in body(b).items
        )
        assert sorted(sim.delivered_ids(node)) == want, f"node {node}"
        # Each batch is verified once per node, however many copies arrive.
        from_others = sum(1 for origin, _ in published if origin != node)
        assert sim.verifiers[node].calls == from_others, f"node {node}"
    assert sum(r.stats.rejected for r in sim.routers) == 0
    # Each node sends each batch at most once over each link.
    assert max(sim.sent.values()) == 1
    # FIFO links: the first copy to arrive took a shortest path.
    for origin, b in published:
        dist = distances(n, edges, origin)
        for node in range(n):
            if node == origin:
                continue
            (got,) = [d for d in sim.delivered[node] if d.batch.id == b.id]
            assert got.batch.hops == dist[node]
            assert got.batch.origin == sim.ids[origin]


def test_hop_limit_on_a_line_of_five() -> None:
    sim = Sim(5, line(5), max_hops=2)
    b, bb = sim.make(0, 1)
    sim.publish(0, b, bb)
    sim.run()
    assert [len(sim.delivered_ids(i)) for i in range(5)] == [0, 1, 1, 0, 0]
    assert sum(r.stats.hop_limited for r in sim.routers) == 1  # node 2 stops it
    # From the middle, every other node is within 2 hops.
    b2, bb2 = sim.make(2, 2)
    sim.publish(2, b2, bb2)
    sim.run()
    (item,) = body(b2).items
    assert all(item.id in sim.delivered_ids(i) for i in range(5) if i != 2)


def test_direct_message_in_a_ring_is_delivered_only_at_the_target() -> None:
    sim = Sim(6, ring(6))
    b, bb = sim.make(0, 1, count=2, to=3)
    sim.publish(0, b, bb)
    sim.run()
    assert [len(sim.delivered_ids(i)) for i in range(6)] == [0, 0, 0, 2, 0, 0]
    assert sim.routers[3].stats.forwarded == 0


def test_a_forged_batch_in_the_flood_is_stopped_at_the_first_node() -> None:
    # A batch whose body was changed after signing is rejected by the first node that
    # gets it and goes no further; the genuine batch still floods everywhere.
    sim = Sim(6, ring(6))
    genuine, genuine_body = sim.make(0, 1)
    forged_body = BatchBody(genuine.id, genuine.origin, None, [Item(mid(9), "t", b"evil")])
    forged = msgspec.structs.replace(
        genuine, hops=1, body=msgspec.msgpack.encode(forged_body)
    )
    sim.queue.append((1, 0, forged))
    sim.run()
    assert [r.stats.rejected for r in sim.routers] == [0, 1, 0, 0, 0, 0]
    assert sim.disconnected == [(1, 0, "bad_signature")]  # the router's verdict
    assert all(not sim.delivered[i] for i in range(6))
    sim.publish(0, genuine, genuine_body)
    sim.run()
    assert all(len(sim.delivered_ids(i)) == 1 for i in range(1, 6))

