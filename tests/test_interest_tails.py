"""The last batch of a stream, lost between two nodes' trees just after a crash, comes
back when the views catch up (``gossip/tails.py``, docs/interest.md: "A subscriber
between two trees"); and a peer that announces made-up batches costs only itself."""

from __future__ import annotations

from collections import Counter

import pytest

from p2pnode.gossip import interestmode
from p2pnode.gossip.interest import Interests
from p2pnode.gossip.interestmode import InterestStats
from p2pnode.gossip.routes import Routes
from p2pnode.gossip.tails import NOTICE_BURST, NOTICE_RATE, TAIL_AGE, TAIL_EVERY, Tail, Tails
from p2pnode.wire.messages import Announce, GossipMessage, IHave

from .gossip_sim import Sim
from .test_interest_router import delivered_to, receivers, routed

ORG, D, A, X, S = range(5)  # origin, the node that crashes, subscribers A and S, a relay
#: O - D - S and O - A - X - S (O: ORG). With D, the tree from O to A and S is O-A, O-D-S;
#: without D it is O-A-X-S.
EDGES = [(ORG, D), (D, S), (ORG, A), (A, X), (X, S)]


def lists(sim: Sim, edges: list[tuple[int, int]]) -> dict[bytes, set[bytes]]:
    out: dict[bytes, set[bytes]] = {node_id: set() for node_id in sim.ids}
    for a, b in edges:
        out[sim.ids[a]].add(sim.ids[b])
        out[sim.ids[b]].add(sim.ids[a])
    return out


def views_sim() -> Sim:
    """The five nodes, each with its own view of the graph (``Routes``), all with D."""
    sim = Sim(5, EDGES, mode="interest", graft_timeout=0.1, order_hold=1.0)
    interests = Interests()
    for member in (A, S):
        interests.set(sim.ids[member], ["t"])
    graph = lists(sim, EDGES)
    for i, router in enumerate(sim.routers):
        routes = Routes(sim.ids[i])
        routes.set_graph(graph)
        routes.set_own_links(graph[sim.ids[i]])
        assert router.interest is not None
        router.interest.routes, router.interest.interests = routes, interests
    return sim


def routes_of(sim: Sim, node: int) -> Routes:
    routing = sim.routers[node].interest
    assert routing is not None
    assert isinstance(routing.routes, Routes)
    return routing.routes


def stats(sim: Sim, node: int) -> InterestStats:
    routing = sim.routers[node].interest
    assert routing is not None
    return routing.stats


def crash_d(sim: Sim, *, seen_by: tuple[int, ...]) -> None:
    """D crashes: its links break; the nodes of ``seen_by`` take it out of their view."""
    sim.unlink(ORG, D)
    sim.unlink(D, S)
    routes_of(sim, ORG).set_own_links(lists(sim, EDGES)[sim.ids[ORG]] - {sim.ids[D]})
    routes_of(sim, S).set_own_links(lists(sim, EDGES)[sim.ids[S]] - {sim.ids[D]})
    for node in seen_by:
        routes_of(sim, node).set_list(sim.ids[D], None)


def test_a_subscriber_between_two_trees_gets_the_batch_the_copy_names_it_for() -> None:
    sim = views_sim()
    want = frozenset({sim.ids[A], sim.ids[S]})
    crash_d(sim, seen_by=(ORG, S))  # A and X do not know yet
    batch, body = routed(sim, ORG, 1, "t")
    sim.publish(ORG, batch, body)
    sim.run(max_time=5.0)
    # O's copy to A names S (O's tree goes O-A-X-S). A's tree puts S behind D, on
    # another branch, which O's tree does not use: A takes it toward S by X at once.
    assert routes_of(sim, A).next_hops(sim.ids[ORG], "t", want, 0) == ()
    assert delivered_to(sim, batch.id) == {A, S}
    assert stats(sim, A).astray == 1
    assert {node: sim.received[(node, batch.id)] for node in (A, X, S)} == {A: 1, X: 1, S: 1}
    assert sim.kinds["Fetch"] == 0
    assert stats(sim, A).tails == 0  # nothing to repair


def test_a_subscriber_between_two_trees_gets_the_last_batch_when_the_views_agree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Copies that name nobody (a sender of before, or more members below a child than
    # a copy names): the tail notices bring it once the views agree.
    monkeypatch.setattr(interestmode, "MAX_MEANT", 0)
    sim = views_sim()
    want = frozenset({sim.ids[A], sim.ids[S]})
    # O and S see the crash at once (their links to D broke); A and X not yet.
    crash_d(sim, seen_by=(ORG, S))
    assert routes_of(sim, ORG).next_hops(sim.ids[ORG], "t", want, 0) == (sim.ids[A],)
    assert routes_of(sim, A).next_hops(sim.ids[ORG], "t", want, 0) == ()  # S is D's
    batch, body = routed(sim, ORG, 1, "t")
    sim.publish(ORG, batch, body)  # the last batch of the stream: no later one shows a gap
    sim.run(max_time=5.0)
    # O pushed to A (its tree goes O-A-X-S), A to nobody (S is behind D in its view).
    assert delivered_to(sim, batch.id) == {A}
    assert receivers(sim, batch.id) == {A}
    assert all(r.next_deadline() is None for r in sim.routers)  # nothing would repair it
    # A and X learn of the crash (the new link lists reach them): A's tree changes, and
    # A tells its new child X of its stream's last batch; X lacks it and does not want
    # the topic: it passes the notice on to S, which lacks it and Fetches it by X.
    changed = sim.now
    for node in (A, X):
        routes_of(sim, node).set_list(sim.ids[D], None)
    sim.run(max_time=5.0)
    assert delivered_to(sim, batch.id) == {A, S}
    # Within the bound: a look (at most TAIL_EVERY after the change), the notice over
    # two links, the Fetch's delay (graft_timeout), the Fetch and its answer over two.
    assert sim.now - changed <= TAIL_EVERY + 0.1 + 8 * sim.step
    assert stats(sim, A).tails == 1
    assert stats(sim, X).tails == 1  # the notice passed on
    assert sim.kinds["Fetch"] == 2  # S asked X, X asked on toward the origin (A)
    # One copy each: only the nodes on the way to the subscriber that lacked it.
    assert {node: sim.received[(node, batch.id)] for node in (A, X, S)} == {A: 1, X: 1, S: 1}
    # Told once: a further change tells nobody again.
    routes_of(sim, A).set_own_links({sim.ids[ORG], sim.ids[X]})
    routes_of(sim, A).set_list(sim.ids[X], set())
    sim.run(max_time=1.0)
    assert stats(sim, A).tails == 1


def test_only_the_newest_batch_of_a_stream_is_its_tail() -> None:
    sim = views_sim()
    ids = sim.ids

    def tail(k: int, time: float) -> Tail:
        return Tail(ids[ORG] + bytes(15) + bytes([k]), (1, k), time, (ids[A],), 1, time)

    tails = Tails(max_streams=2)
    tails.note((ids[ORG], "t"), tail(2, 0.0))
    tails.note((ids[ORG], "t"), tail(1, 0.1))  # an earlier one, filled late
    (stream, newest), = tails.recent(0.2)
    assert stream == (ids[ORG], "t")
    assert newest.position == (1, 2)
    tails.note((ids[ORG], "u"), tail(1, 0.3))
    tails.note((ids[ORG], "v"), tail(1, 0.4))
    assert len(tails) == 2  # bounded: the least recently passed on went first
    assert [s for s, _ in tails.recent(0.5)] == [(ids[ORG], "v"), (ids[ORG], "u")]
    assert tails.recent(0.4 + TAIL_AGE + 0.1) == []


def test_a_peer_announcing_made_up_batches_costs_only_itself() -> None:
    """A liar L linked to N announces made-up batches (with an age, as a tail
    announcement does; and as repairs), as fast as it can: N grafts them from L only,
    a bounded number at a time, and sends nothing to its other peers; an honest
    announcement still comes."""
    n, liar, honest, other = 0, 1, 2, 3
    sim = Sim(4, [(n, liar), (n, honest), (n, other)], mode="interest",
              graft_timeout=0.1, max_missing=400)
    router = sim.routers[n]
    sim.run(max_time=1.0)  # the digests
    to: Counter[int] = Counter()  # messages N sends, per peer
    send = sim.send

    def counted(node: int, peer: int, msg: GossipMessage) -> None:
        if node == n:
            to[peer] += 1
        send(node, peer, msg)

    sim.send = counted  # type: ignore[method-assign]
    start = sim.now
    for second in range(100):  # 10 s: 1,000 made-up keys every 0.1 s
        keys = [sim.ids[liar][:16] + (1000 * second + i).to_bytes(16, "big")
                for i in range(1000)]
        for part in range(0, 750, 250):  # as repairs, and with an age (a catch-up's)
            age = 5 if part % 500 else None
            sim.send(liar, n, IHave([Announce(k, 1, age) for k in keys[part:part + 250]],
                                    repair=age is None))
        # ... and as tail notices: N wants every topic here, so it Fetches them.
        sim.send(liar, n, IHave([Announce(k, 1, 5, "t", 1, i + 1)
                                 for i, k in enumerate(keys[750:])]))
        sim.run(max_time=start + 0.1 * (second + 1) - sim.now)
        sim.now = start + 0.1 * (second + 1)
        assert len(router.missing) <= 400 // 4  # a quarter of max_missing per announcer
    elapsed = sim.now - start
    grafts = router.stats.grafts_sent
    # Each made-up announced key is grafted from L once (a catch-up's at once, a repair's after a
    # wait) and waits graft_timeout before it is given up: at most max_missing / 4 keys
    # per graft_timeout.
    assert 0 < grafts <= (400 // 4) * (elapsed / 0.1 + 1)
    assert to[honest] == to[other] == 0  # grafts and Fetches went to L only
    fetches = router.fetches
    fetched = fetches.stats.asked - fetches.stats.retried  # each number's first ask
    assert 0 < fetched <= NOTICE_BURST + NOTICE_RATE * elapsed  # per peer
    assert fetches.stats.retried <= fetched * fetches.retries  # unanswered: asked again
    assert router.interest is not None
    assert router.interest.stats.tails == 0  # passed on to nobody (no tree here)
    # The honest peer's announcement of a real batch is still taken.
    batch, body = sim.make(honest, 1)
    router_h = sim.routers[honest]
    router_h.keep_new(batch, body, sim.now)
    sim.send(honest, n, IHave([Announce(batch.origin + batch.id, 1)], repair=True))
    sim.run(max_time=2.0)
    assert batch.id in {d.batch.id for d in sim.delivered[n]}
