"""The retained store alone (no I/O, the caller's clock): which retained message of a
topic wins, clearing and tombstones, the bounds, the skew limit, the stamps a node
gives its own, and the slices a new subscription gets.

Batches are real: signed by seeded identities, bodies checked as the node does.
"""

from __future__ import annotations

import itertools
import random

import pytest

from p2pnode.gossip import retained as retained_module
from p2pnode.gossip.retained import (
    BATCH_OVERHEAD,
    ENTRY_OVERHEAD,
    RetainedReplay,
    RetainedStore,
    topic_key,
)
from p2pnode.gossip.signing import make_batch
from p2pnode.identity import NodeIdentity
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Batch, BatchBody, Item

A, B, C = (make_identity(random.Random(seed)) for seed in (11, 12, 13))
NOW = 1_800_000_000.0  # a Unix time, seconds
_ids = itertools.count(1)


def new_id(who: NodeIdentity) -> bytes:
    return who.node_id[:8] + next(_ids).to_bytes(8, "big")


def retained(who: NodeIdentity, stamp: float, *pairs: tuple[str, bytes],
             to: bytes | None = None) -> tuple[Batch, BatchBody]:
    """A signed batch of retained messages ``(topic, data)`` from ``who``, stamped
    ``stamp`` (Unix seconds)."""
    items = [Item(new_id(who), topic, data) for topic, data in pairs]
    return make_batch(who, new_id(who), to, items, retain=int(stamp * 1e6))


def value(store: RetainedStore, topic: str) -> bytes | None:
    """The payload of ``topic``'s retained message, as a subscriber gets it."""
    entries = store.matching([topic])
    if not entries:
        return None
    (msg,) = RetainedReplay(entries).step(1 << 30)
    assert msg.retained
    assert msg.topic == topic
    return msg.data


def test_the_newer_stamp_wins_in_any_order() -> None:
    offers = [retained(A, NOW + 1, ("t", b"a1")), retained(B, NOW + 3, ("t", b"b3")),
              retained(C, NOW + 2, ("t", b"c2")), retained(A, NOW, ("t", b"a0"))]
    for order in itertools.permutations(offers):
        store = RetainedStore()
        for batch, body in order:
            store.offer(batch, body, NOW)
        assert value(store, "t") == b"b3"
        assert store.stats.accepted + store.stats.stale == 4


def test_equal_stamps_are_ordered_by_origin_then_message_id() -> None:
    stamp = NOW + 1
    first, second = sorted([A, B], key=lambda i: i.node_id)
    low = retained(first, stamp, ("t", b"low origin"))
    high = retained(second, stamp, ("t", b"high origin"))
    for order in ([low, high], [high, low]):
        store = RetainedStore()
        for batch, body in order:
            store.offer(batch, body, NOW)
        assert value(store, "t") == b"high origin"
    # One batch with two messages on a topic: the later one (higher id) is the value.
    store = RetainedStore()
    store.offer(*retained(A, stamp, ("t", b"one"), ("u", b"x"), ("t", b"two")), now=NOW)
    assert (value(store, "t"), value(store, "u")) == (b"two", b"x")


def test_ordinary_direct_and_reserved_messages_are_not_retained() -> None:
    store = RetainedStore()
    ordinary = make_batch(A, new_id(A), None, [Item(new_id(A), "t", b"x")])
    assert store.offer(*ordinary, now=NOW) == []
    assert store.offer(*retained(A, NOW, ("t", b"x"), to=B.node_id), now=NOW) == []
    # The nodes' own topics ($mesh) are never retained, even from a member that tries.
    reserved = retained(A, NOW, ("$mesh", b"x"), ("t", b"y"))
    assert not store.newer_in(*retained(A, NOW, ("$mesh", b"x")))
    assert [e.topic for e in store.offer(*reserved, now=NOW)] == ["t"]
    assert [e.topic for e in store] == ["t"]


def test_an_empty_payload_clears_and_its_tombstone_keeps_older_values_out() -> None:
    store = RetainedStore(tombstone_age=3600)
    store.offer(*retained(A, NOW, ("t", b"on")), now=NOW)
    store.offer(*retained(B, NOW + 1, ("t", b"")), now=NOW + 1)
    assert value(store, "t") is None
    assert store.matching([]) == []
    assert (store.values, store.tombstones, len(store)) == (0, 1, 1)
    # A value older than the clear, still held by a node that missed it, stays out...
    late = retained(C, NOW + 0.5, ("t", b"stale"))
    assert store.offer(*late, now=NOW + 2) == []
    assert value(store, "t") is None
    # ... for tombstone_age after the clear's stamp; then the tombstone is forgotten,
    store.expire(NOW + 1 + 3600)
    assert (len(store), store.stats.tombstones_expired) == (0, 1)
    assert store.bytes == 0
    # and the old value would come back (the documented limit of tombstones).
    assert [e.topic for e in store.offer(*late, now=NOW + 3602)] == ["t"]
    # A newer value after a clear is a value again.
    store.offer(*retained(A, NOW + 4000, ("t", b"on again")), now=NOW + 4000)
    assert value(store, "t") == b"on again"


def test_a_retained_message_stamped_in_the_future_is_refused() -> None:
    store = RetainedStore(max_skew=60)
    assert store.offer(*retained(A, NOW + 61, ("t", b"later")), now=NOW) == []
    assert store.stats.refused_future == 1
    assert store.offer(*retained(A, NOW + 59, ("t", b"soon")), now=NOW) != []
    # The same message is taken once the node's clock has caught up.
    assert store.offer(*retained(A, NOW + 61, ("u", b"later")), now=NOW + 2) != []


def test_the_topic_limit_refuses_new_topics_and_tombstones_give_way_first() -> None:
    store = RetainedStore(max_topics=3)
    for k, topic in enumerate("abc"):
        store.offer(*retained(A, NOW + k, (topic, b"v")), now=NOW)
    assert store.refusal("d", 1) is not None
    assert store.offer(*retained(A, NOW + 5, ("d", b"v")), now=NOW) == []
    assert store.stats.refused_full == 1
    # An existing topic can still change.
    assert store.refusal("a", 1) is None
    assert store.offer(*retained(B, NOW + 6, ("a", b"w")), now=NOW) != []
    # Clear b and c: their tombstones make room, the oldest stamp first.
    store.offer(*retained(B, NOW + 7, ("b", b"")), now=NOW)
    store.offer(*retained(B, NOW + 8, ("c", b"")), now=NOW)
    assert store.refusal("d", 1) is None
    store.offer(*retained(A, NOW + 9, ("d", b"v")), now=NOW)
    assert sorted(e.topic for e in store) == ["a", "c", "d"]
    assert store.stats.tombstones_evicted == 1


def test_the_byte_limit_counts_each_batch_once() -> None:
    topics = [(f"t{k}", b"x" * 100) for k in range(4)]
    batch, body = retained(A, NOW, *topics)
    per_topic = sum(ENTRY_OVERHEAD + len(t) for t, _ in topics)
    exact = len(batch.body) + BATCH_OVERHEAD + per_topic
    store = RetainedStore(max_bytes=exact)
    assert len(store.offer(batch, body, NOW)) == 4
    assert store.bytes == exact
    # A value that would need more room than is left is refused...
    assert store.offer(*retained(B, NOW + 1, ("t0", b"y" * 200)), now=NOW) == []
    assert store.stats.refused_full == 1
    assert store.refusal("t0", 200) is not None
    # ... but once the four topics have moved on, their shared batch is freed.
    store = RetainedStore(max_bytes=10_000)
    store.offer(batch, body, NOW)
    clears = [retained(B, NOW + 1, (t, b"")) for t, _ in topics]
    for clear in clears:
        store.offer(*clear, now=NOW)
    assert store.tombstones == 4
    assert store.bytes == sum(len(b.body) + BATCH_OVERHEAD for b, _ in clears) + per_topic


def test_limits_of_zero_keep_nothing() -> None:
    store = RetainedStore(max_topics=0, max_bytes=0)
    assert store.offer(*retained(A, NOW, ("t", b"x")), now=NOW) == []
    assert store.refusal("t", 1) is not None


def test_stamps_of_this_node_go_up_and_beat_what_it_holds() -> None:
    store = RetainedStore()
    first = store.next_stamp(["t"], NOW)
    assert first == int(NOW * 1e6)
    assert store.next_stamp(["t"], NOW) == first + 1  # the clock did not move
    # Another node, whose clock is ahead, set the topic: this node's next publish on it
    # still wins (a later publish always does, wherever it is made).
    store.offer(*retained(B, NOW + 30, ("t", b"theirs")), now=NOW)
    mine = store.next_stamp(["t"], NOW)
    assert mine == int((NOW + 30) * 1e6) + 1


def test_digest_keys_and_lookup_by_topic_key() -> None:
    store = RetainedStore()
    batch, body = retained(A, NOW, ("t", b"x"))
    store.offer(batch, body, NOW)
    (key,) = store.digest(NOW)
    assert (key.topic, key.stamp, key.origin, key.size) == (
        topic_key("t"), body.retain, A.node_id, len(batch.body))
    assert store.version_of(topic_key("t")) == (body.retain, A.node_id)
    assert store.version_of(topic_key("u")) is None


def test_a_subscription_gets_its_topics_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RetainedStore()
    batch, body = retained(A, NOW, *((f"t{k}", b"v" * 1000) for k in range(20)))
    store.offer(batch, body, NOW)
    store.offer(*retained(B, NOW + 1, ("t3", b"new")), now=NOW)
    replay = RetainedReplay(store.matching([]))
    slices = []
    while not replay.done:
        slices.append(replay.step(3000))
    assert len(slices) > 3  # cut up by the budget
    got = {m.topic: m.data for part in slices for m in part}
    assert len(got) == 20
    assert got["t3"] == b"new"
    assert [m.topic for m in RetainedReplay(store.matching(["t3", "t9", "none"]))
            .step(1 << 30)] == ["t3", "t9"]
    assert [m.topic for m in RetainedReplay(store.matching([])).step(1 << 30)][-2:] == [
        "t19", "t3"]  # all topics: in the order they were set here
    assert RetainedReplay([]).done
    # Topics asked in an order that goes back and forth between two batches: each batch
    # is decoded once (the budget a step uses shows it).
    asked = store.matching(["t0", "t3", "t1", "t4"])
    replay = RetainedReplay(asked)
    assert [m.topic for m in replay.step(1 << 30)] == ["t0", "t1", "t4", "t3"]
    decoded: list[bytes] = []
    real = retained_module.decode_kept_body
    monkeypatch.setattr(retained_module, "decode_kept_body",
                        lambda data: decoded.append(data) or real(data))
    RetainedReplay(asked).step(1 << 30)
    assert len(decoded) == 2


@pytest.mark.parametrize("seed", range(5))
def test_any_order_of_offers_gives_the_same_set(seed: int) -> None:
    rng = random.Random(seed)
    who = [A, B, C]
    offers = [retained(rng.choice(who), NOW + rng.randrange(5),
                       *((f"t{rng.randrange(4)}", rng.choice([b"", b"x", b"yy"])),))
              for _ in range(30)]
    results = set()
    for _ in range(5):
        rng.shuffle(offers)
        store = RetainedStore()
        for batch, body in offers:
            store.offer(batch, body, NOW)
        results.add(tuple(sorted((e.topic, e.version) for e in store)))
    assert len(results) == 1
