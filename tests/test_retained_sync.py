"""The retained sync alone (no I/O): nodes joined by a pure message loop pull what they
lack when links open, ask each topic of one peer at a time, go to the next announcer
when a peer fails or goes away, and refuse what they did not ask for or what is not
signed by its origin.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, deque

from p2pnode.gossip.actions import Action, Disconnect, Send
from p2pnode.gossip.retained import RetainedStore, topic_key
from p2pnode.gossip.retained_sync import RetainedSync
from p2pnode.gossip.signing import Verifier, make_batch
from p2pnode.identity import NodeIdentity
from p2pnode.testing import make_identity
from p2pnode.wire.messages import (
    Batch,
    GossipMessage,
    Item,
    Retained,
    RetainedDigest,
    RetainedKey,
    RetainedWant,
)

NOW = 1_800_000_000.0
VERIFY = Verifier(1 << 20).verify
IDS = [make_identity(random.Random(100 + k)) for k in range(6)]
_ids = itertools.count(1)


def new_id(who: NodeIdentity) -> bytes:
    return who.node_id[:8] + next(_ids).to_bytes(8, "big")


def retained_batch(who: NodeIdentity, stamp: float, *pairs: tuple[str, bytes]) -> Batch:
    items = [Item(new_id(who), topic, data) for topic, data in pairs]
    return make_batch(who, new_id(who), None, items, retain=int(stamp * 1e6))[0]


class Mesh:
    """Sync instances of nodes ``0..n-1`` and the messages in flight between them."""

    def __init__(self, n: int, **options: object) -> None:
        self.stores = [RetainedStore() for _ in range(n)]
        self.syncs = [RetainedSync(store, **options) for store in self.stores]  # type: ignore[arg-type]
        self.wire: deque[tuple[int, int, GossipMessage]] = deque()
        self.muted: set[int] = set()  # nodes that never answer a RetainedWant
        self.sent: Counter[tuple[int, str]] = Counter()
        self.disconnects: list[tuple[int, int, str]] = []
        self.now = 0.0

    def publish(self, i: int, stamp: float, *pairs: tuple[str, bytes]) -> Batch:
        batch = retained_batch(IDS[i], stamp, *pairs)
        self.stores[i].offer(batch, VERIFY(batch), NOW)
        return batch

    def link(self, a: int, b: int) -> None:
        self._do(a, self.syncs[a].peer_up(IDS[b].node_id, self.now, NOW))
        self._do(b, self.syncs[b].peer_up(IDS[a].node_id, self.now, NOW))

    def unlink(self, a: int, b: int) -> None:
        self._do(a, self.syncs[a].peer_down(IDS[b].node_id, self.now))
        self._do(b, self.syncs[b].peer_down(IDS[a].node_id, self.now))
        self.wire = deque(m for m in self.wire if {m[0], m[1]} != {a, b})

    def _do(self, i: int, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Disconnect):
                self.disconnects.append((i, self._index(action.peer), action.reason))
                continue
            assert isinstance(action, Send)
            to = self._index(action.peer)
            for msg in action.msgs:
                self.sent[(i, type(msg).__name__)] += 1
                self.wire.append((i, to, msg))

    @staticmethod
    def _index(node_id: bytes) -> int:
        return next(k for k, ident in enumerate(IDS) if ident.node_id == node_id)

    def run(self, limit: int = 10_000) -> None:
        """Deliver messages until none is in flight."""
        for _ in range(limit):
            if not self.wire:
                return
            frm, to, msg = self.wire.popleft()
            if isinstance(msg, RetainedWant) and to in self.muted:
                continue
            actions, _kept = self.syncs[to].on_message(msg, IDS[frm].node_id, self.now, NOW,
                                                       VERIFY)
            self._do(to, actions)
        raise AssertionError("the sync did not settle")

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for i, sync in enumerate(self.syncs):
            self._do(i, sync.tick(self.now))

    def values(self, i: int) -> dict[str, tuple[int, bytes, bytes]]:
        return {e.topic: e.version for e in self.stores[i]}


def test_a_node_that_joins_pulls_everything_its_peer_has() -> None:
    mesh = Mesh(2)
    for k in range(300):
        mesh.publish(0, NOW - 1000 + k, (f"t{k}", b"v%d" % k))
    mesh.publish(0, NOW, ("gone", b""))  # a tombstone travels too
    mesh.link(0, 1)
    mesh.run()
    assert mesh.values(1) == mesh.values(0)
    assert mesh.stores[1].tombstones == 1
    # In several bounded requests (64 topics each, two at a time), each answered.
    assert mesh.sent[(1, "RetainedWant")] == 5
    assert mesh.syncs[1].stats.received == 301
    assert mesh.syncs[1].wanting == 0


def test_both_sides_get_what_is_newer_on_the_other() -> None:
    mesh = Mesh(2)
    mesh.publish(0, NOW, ("a", b"old"), ("b", b"new on 0"))
    mesh.publish(1, NOW + 1, ("a", b"new on 1"))
    mesh.publish(1, NOW - 5, ("b", b"old"), ("c", b"only on 1"))
    mesh.link(0, 1)
    mesh.run()
    assert mesh.values(0) == mesh.values(1)
    assert {e.topic: e.origin for e in mesh.stores[0]} == {
        "a": IDS[1].node_id, "b": IDS[0].node_id, "c": IDS[1].node_id}


def test_a_node_linked_to_several_peers_at_once_asks_each_topic_once() -> None:
    mesh = Mesh(4)
    for k in range(100):
        batch = mesh.publish(0, NOW - 100 + k, (f"t{k}", b"x"))
        for i in (1, 2):
            mesh.stores[i].offer(batch, VERIFY(batch), NOW)
    for peer in (0, 1, 2):  # node 3 comes up with three links at once
        mesh.link(3, peer)
    mesh.run()
    assert mesh.values(3) == mesh.values(0)
    assert mesh.syncs[3].stats.wanted == 100  # not 300
    assert mesh.syncs[3].stats.stale == 0


def test_values_learned_by_sync_spread_across_a_healed_partition() -> None:
    """0-1 and 2-3 were apart; 1 and 2 link again: 0 and 3 learn the other side's
    values from the notices of what 1 and 2 learned."""
    mesh = Mesh(4)
    mesh.link(0, 1)
    mesh.link(2, 3)
    mesh.run()
    left = mesh.publish(0, NOW + 1, ("left", b"l"))
    mesh.stores[1].offer(left, VERIFY(left), NOW)  # as gossip would have brought it
    right = mesh.publish(3, NOW + 2, ("right", b"r"))
    mesh.stores[2].offer(right, VERIFY(right), NOW)
    mesh.link(1, 2)
    mesh.run()
    assert all(mesh.values(i) == mesh.values(0) for i in range(4))
    assert set(mesh.values(0)) == {"left", "right"}


def test_a_peer_that_does_not_answer_is_replaced_after_the_timeout() -> None:
    mesh = Mesh(3, timeout=5.0)
    for k in range(10):
        batch = mesh.publish(0, NOW - k, (f"t{k}", b"x"))
        mesh.stores[1].offer(batch, VERIFY(batch), NOW)
    mesh.muted.add(0)
    mesh.link(2, 0)  # node 2 hears of them from 0 first and asks 0 ...
    mesh.run()
    mesh.link(2, 1)
    mesh.run()
    assert mesh.values(2) == {}
    assert mesh.syncs[2].next_deadline() == 5.0
    mesh.tick(4.9)
    mesh.run()
    assert mesh.values(2) == {}
    mesh.tick(0.2)  # ... which never answers: node 1 is asked
    mesh.run()
    assert mesh.values(2) == mesh.values(1)
    assert mesh.syncs[2].next_deadline() is None


def test_a_peer_that_goes_away_is_replaced_at_once() -> None:
    mesh = Mesh(3)
    batch = mesh.publish(0, NOW, ("t", b"x"))
    mesh.stores[1].offer(batch, VERIFY(batch), NOW)
    mesh.muted.add(0)
    mesh.link(2, 0)
    mesh.link(2, 1)
    mesh.run()
    assert mesh.values(2) == {}
    mesh.unlink(2, 0)
    mesh.run()
    assert mesh.values(2) == mesh.values(1)


def test_a_liar_that_claims_a_newer_value_cannot_hide_the_real_one() -> None:
    """Node 0 announces topic t newer than anyone has it, then does not deliver; node 2
    still gets node 1's value, the newest it can get, as soon as 0's answer comes."""
    mesh = Mesh(3)
    real = mesh.publish(1, NOW, ("t", b"real"))
    mesh.link(2, 1)
    mesh.link(2, 0)
    claim = RetainedKey(topic_key("t"), int((NOW + 100) * 1e6), IDS[0].node_id, 100)
    mesh.wire.appendleft((0, 2, RetainedDigest([claim])))
    mesh.run()
    assert mesh.values(2) == {"t": (VERIFY(real).retain, IDS[1].node_id,
                                    VERIFY(real).items[0].id)}
    assert mesh.syncs[2].stats.given_up == 1  # the claimed version never came


def test_unsolicited_and_forged_batches_are_refused() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.run()
    mallory, victim = IDS[1], IDS[4]
    # Not asked for: dropped unchecked.
    mine = retained_batch(mallory, NOW, ("t", b"x"))
    mesh.wire.append((1, 0, Retained([mine])))
    mesh.run()
    assert mesh.values(0) == {}
    assert mesh.syncs[0].stats.unsolicited == 1
    # Asked for, but signed by another key than its origin's: the link closes.
    genuine = retained_batch(victim, NOW, ("t", b"genuine"))
    forged_body = genuine.body.replace(b"genuine", b"forged!")
    forged = Batch(genuine.id, genuine.origin, 0, genuine.key, forged_body, genuine.sig)
    claim = RetainedKey(topic_key("t"), VERIFY(genuine).retain, victim.node_id, 100)
    mesh.muted.add(1)
    mesh.wire.append((1, 0, RetainedDigest([claim])))
    mesh.run()
    assert mesh.sent[(0, "RetainedWant")] == 1
    mesh.wire.append((1, 0, Retained([forged])))
    mesh.run()
    assert mesh.disconnects == [(0, 1, "bad_signature")]
    assert mesh.values(0) == {}
    assert mesh.syncs[0].stats.rejected == 1


def test_what_a_node_wants_is_bounded() -> None:
    mesh = Mesh(2, max_wants=50)
    mesh.link(0, 1)
    mesh.run()
    mesh.muted.add(1)
    keys = [RetainedKey(topic_key(f"t{k}"), 1, IDS[1].node_id, 10) for k in range(200)]
    mesh.wire.append((1, 0, RetainedDigest(keys)))
    mesh.run()
    assert mesh.syncs[0].wanting == 50
    assert mesh.syncs[0].stats.wants_dropped == 150


def test_a_batch_that_carries_many_topics_is_fetched_once() -> None:
    mesh = Mesh(2)
    mesh.publish(0, NOW - 10, *((f"t{k}", b"v") for k in range(300)))  # one batch
    mesh.publish(0, NOW - 5, *((f"u{k}", b"v") for k in range(3)))  # and another
    mesh.link(0, 1)
    mesh.run()
    assert mesh.values(1) == mesh.values(0)
    assert mesh.syncs[1].stats.wanted == 2  # one topic of each batch
    assert mesh.sent[(1, "RetainedWant")] == 1
    assert mesh.sent[(0, "Retained")] == 1  # both batches, once each
    assert mesh.syncs[1].stats.received == 303
    assert mesh.syncs[1].wanting == 0


def test_an_answer_with_more_batches_than_topics_asked_is_cut_short() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.run()
    mesh.muted.add(1)
    real = retained_batch(IDS[1], NOW, ("t", b"x"))
    claim = RetainedKey(topic_key("t"), VERIFY(real).retain, IDS[1].node_id, 100)
    mesh.wire.append((1, 0, RetainedDigest([claim])))
    mesh.run()
    junk = [retained_batch(IDS[1], NOW, ("t", b"junk %d" % k)) for k in range(50)]
    mesh.wire.append((1, 0, Retained([real, *junk])))
    mesh.run()
    assert mesh.values(0) == {"t": (VERIFY(real).retain, IDS[1].node_id,
                                    VERIFY(real).items[0].id)}
    assert mesh.syncs[0].stats.unsolicited == 50  # not decoded, not checked
