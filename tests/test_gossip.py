"""SeenCache and FloodRouter, alone and in small pure simulations (no I/O, no own clock)."""

from __future__ import annotations

import random
from collections import Counter, deque

import pytest

from p2pnode.errors import LocalError
from p2pnode.gossip.router import Action, Deliver, FloodRouter, Forward
from p2pnode.gossip.seen import SeenCache
from p2pnode.wire.messages import Gossip


def nid(i: int) -> bytes:
    return (i + 1).to_bytes(16, "big")


def mid(i: int) -> bytes:
    return b"\xee" * 8 + i.to_bytes(8, "big")


SELF, P1, P2, P3 = nid(0), nid(1), nid(2), nid(3)


def msg(i: int, origin: bytes = P1, *, hops: int = 0, to: bytes | None = None) -> Gossip:
    return Gossip(mid(i), origin, "topic", f"payload {i}".encode(), hops, to=to)


def router(
    node_id: bytes = SELF, *, max_hops: int = 16, peers: tuple[bytes, ...] = ()
) -> FloodRouter:
    r = FloodRouter(node_id, max_hops=max_hops, seen_max_entries=1000, seen_ttl=60.0)
    for p in peers:
        r.peer_up(p)
    return r


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


# -- FloodRouter -------------------------------------------------------------------------


def test_publish_delivers_locally_and_forwards_with_hops_1() -> None:
    r = router(peers=(P1, P2, P3))
    m = msg(1, SELF)
    actions = r.publish(m, 0.0)
    assert actions == [Deliver(m), Forward(Gossip(m.id, SELF, m.topic, m.data, 1), (P1, P2, P3))]
    assert (r.stats.published, r.stats.delivered, r.stats.forwarded) == (1, 1, 3)


def test_publish_without_peers_only_delivers() -> None:
    r = router()
    m = msg(1, SELF)
    assert r.publish(m, 0.0) == [Deliver(m)]
    assert r.stats.forwarded == 0


def test_on_gossip_forwards_to_all_but_the_sender() -> None:
    r = router(peers=(P1, P2, P3))
    m = msg(1, P1, hops=2)
    actions = r.on_gossip(m, P2, 0.0)
    assert actions == [Deliver(m), Forward(Gossip(m.id, P1, m.topic, m.data, 3), (P1, P3))]
    assert (r.stats.received, r.stats.delivered, r.stats.forwarded) == (1, 1, 2)


def test_on_gossip_from_the_only_peer_is_not_forwarded() -> None:
    r = router(peers=(P1,))
    m = msg(1)
    assert r.on_gossip(m, P1, 0.0) == [Deliver(m)]
    assert r.stats.forwarded == 0


def test_duplicates_are_dropped_and_counted() -> None:
    r = router(peers=(P1, P2))
    assert r.on_gossip(msg(1), P1, 0.0)
    assert r.on_gossip(msg(1), P2, 0.1) == []
    assert r.on_gossip(msg(1, hops=5), P1, 0.2) == []
    assert (r.stats.received, r.stats.duplicates, r.stats.delivered) == (3, 2, 1)


def test_at_max_hops_delivered_but_not_forwarded() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    m = msg(1, hops=3)
    assert r.on_gossip(m, P1, 0.0) == [Deliver(m)]
    assert r.stats.hop_limited == 1
    assert r.stats.forwarded == 0


def test_below_max_hops_forwarded_up_to_the_limit() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    actions = r.on_gossip(msg(1, hops=2), P1, 0.0)
    forwards = [a for a in actions if isinstance(a, Forward)]
    assert [f.msg.hops for f in forwards] == [3]


def test_over_max_hops_not_delivered() -> None:
    r = router(max_hops=3, peers=(P1, P2))
    assert r.on_gossip(msg(1, hops=4), P1, 0.0) == []
    assert r.stats.hop_limited == 1
    assert r.stats.delivered == 0


def test_direct_message_is_forwarded_but_not_delivered_elsewhere() -> None:
    r = router(peers=(P1, P2))
    m = msg(1, P1, hops=1, to=P3)
    actions = r.on_gossip(m, P1, 0.0)
    assert actions == [Forward(Gossip(m.id, P1, m.topic, m.data, 2, to=P3), (P2,))]
    assert r.stats.delivered == 0


def test_direct_message_delivered_at_the_target_which_does_not_forward() -> None:
    r = router(peers=(P1, P2, P3))
    m = msg(1, P1, hops=1, to=SELF)
    assert r.on_gossip(m, P1, 0.0) == [Deliver(m)]
    assert r.stats.forwarded == 0


def test_publish_direct() -> None:
    r = router(peers=(P1, P2))
    m = msg(1, SELF, to=P2)
    assert r.publish(m, 0.0) == [Forward(Gossip(m.id, SELF, m.topic, m.data, 1, to=P2), (P1, P2))]
    assert r.stats.delivered == 0
    to_self = msg(2, SELF, to=SELF)
    assert r.publish(to_self, 0.0) == [Deliver(to_self)]


def test_own_messages_coming_back_are_duplicates() -> None:
    r = router(peers=(P1, P2))
    m = msg(1, SELF)
    r.publish(m, 0.0)
    assert r.on_gossip(Gossip(m.id, SELF, m.topic, m.data, 2), P1, 0.1) == []
    # Even an id this run never published: the origin is this node.
    assert r.on_gossip(msg(2, SELF, hops=1), P1, 0.2) == []
    assert r.stats.duplicates == 2
    assert r.stats.delivered == 1


def test_peer_up_and_down() -> None:
    r = router()
    r.peer_up(P2)
    r.peer_up(P1)
    r.peer_up(P2)  # idempotent, keeps its place
    assert r.peers == (P2, P1)
    r.peer_down(P2)
    r.peer_down(P3)  # unknown: no error
    assert r.peers == (P1,)
    actions = r.publish(msg(1, SELF), 0.0)
    assert isinstance(actions[-1], Forward)
    assert actions[-1].peers == (P1,)
    r.peer_down(P1)
    assert r.publish(msg(2, SELF), 0.0) == [Deliver(msg(2, SELF))]


# -- Simulation ---------------------------------------------------------------------------


Edges = list[tuple[int, int]]


def line(n: int) -> Edges:
    return [(i, i + 1) for i in range(n - 1)]


def ring(n: int) -> Edges:
    return [*line(n), (n - 1, 0)]


def random_connected(n: int, extra: int, seed: int) -> Edges:
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    edges = {tuple(sorted((order[i], order[rng.randrange(i)]))) for i in range(1, n)}
    while len(edges) < n - 1 + extra:
        a, b = rng.sample(range(n), 2)
        edges.add(tuple(sorted((a, b))))
    return sorted((a, b) for a, b in edges)


def distances(n: int, edges: Edges, start: int) -> dict[int, int]:
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    dist = {start: 0}
    todo = deque([start])
    while todo:
        x = todo.popleft()
        for y in adj[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                todo.append(y)
    return dist


class Sim:
    """N routers joined by ``edges``; links deliver in FIFO order, one step per message."""

    def __init__(self, n: int, edges: Edges, *, max_hops: int = 16) -> None:
        self.routers = [
            FloodRouter(nid(i), max_hops=max_hops, seen_max_entries=10_000, seen_ttl=1e9)
            for i in range(n)
        ]
        self.index = {nid(i): i for i in range(n)}
        for a, b in edges:
            self.routers[a].peer_up(nid(b))
            self.routers[b].peer_up(nid(a))
        self.queue: deque[tuple[int, bytes, Gossip]] = deque()
        self.delivered: dict[int, list[Gossip]] = {i: [] for i in range(n)}
        self.sent: Counter[tuple[int, int, bytes]] = Counter()
        self.now = 0.0

    def apply(self, node: int, actions: list[Action], hops_in: int) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                self.delivered[node].append(action.msg)
                continue
            assert action.msg.hops == hops_in + 1
            for peer in action.peers:
                self.sent[(node, self.index[peer], action.msg.id)] += 1
                self.queue.append((self.index[peer], nid(node), action.msg))

    def publish(self, node: int, m: Gossip) -> None:
        self.apply(node, self.routers[node].publish(m, self.now), m.hops)

    def run(self) -> None:
        steps = 0
        while self.queue:
            steps += 1
            assert steps < 100_000, "the flood does not end"
            self.now += 0.001
            node, sender, m = self.queue.popleft()
            self.apply(node, self.routers[node].on_gossip(m, sender, self.now), m.hops)

    def delivered_ids(self, node: int) -> list[bytes]:
        return [m.id for m in self.delivered[node]]


def origin_msg(sim: Sim, node: int, k: int, to: int | None = None) -> Gossip:
    return Gossip(
        nid(node)[:8] + k.to_bytes(8, "big"), nid(node), "t", b"%d/%d" % (node, k), 0,
        to=None if to is None else nid(to),
    )


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
    published: list[tuple[int, Gossip]] = []
    for k in range(10):
        node = rng.randrange(n)
        m = origin_msg(sim, node, k)
        published.append((node, m))
        sim.publish(node, m)
        if k % 3 == 0:
            sim.run()  # some floods run alone, others overlap
    sim.run()
    ids = sorted(m.id for _, m in published)
    for node in range(n):
        assert sorted(sim.delivered_ids(node)) == ids, f"node {node}"
    # Each node sends each message at most once over each link.
    assert max(sim.sent.values()) == 1
    # FIFO links: the first copy to arrive took a shortest path.
    for origin, m in published:
        dist = distances(n, edges, origin)
        for node in range(n):
            (got,) = [d for d in sim.delivered[node] if d.id == m.id]
            assert got.hops == (dist[node] if node != origin else 0)


def test_hop_limit_on_a_line_of_five() -> None:
    sim = Sim(5, line(5), max_hops=2)
    m = origin_msg(sim, 0, 1)
    sim.publish(0, m)
    sim.run()
    assert [len(sim.delivered_ids(i)) for i in range(5)] == [1, 1, 1, 0, 0]
    assert sum(r.stats.hop_limited for r in sim.routers) == 1  # node 2 stops it
    # From the middle, every node is within 2 hops.
    m2 = origin_msg(sim, 2, 2)
    sim.publish(2, m2)
    sim.run()
    assert all(m2.id in sim.delivered_ids(i) for i in range(5))


def test_direct_message_in_a_ring_is_delivered_only_at_the_target() -> None:
    sim = Sim(6, ring(6))
    m = origin_msg(sim, 0, 1, to=3)
    sim.publish(0, m)
    sim.run()
    assert [len(sim.delivered_ids(i)) for i in range(6)] == [0, 0, 0, 1, 0, 0]
    assert sim.routers[3].stats.forwarded == 0
