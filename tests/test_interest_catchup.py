"""What interest routing guarantees a subscriber (docs/interest.md#what-a-subscriber-gets),
with nodes over in-memory links in virtual time: no message lost that was published
after the subscribe, even when the publisher did not know of it yet and published only
one; none delivered that was published before it; subscribe and unsubscribe take effect
within the bound the page gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from p2pnode.gossip.catchup import CATCH_UP
from p2pnode.gossip.interestmode import InterestStats
from p2pnode.node import Node
from p2pnode.node.interests import INTEREST_EVERY
from p2pnode.testing import line_edges, wait_linked, wait_until

from .test_interest_mode_node import interest_line, knows_everything, subscribe

#: docs/interest.md's bound on how long a subscription takes to reach every node of
#: a mesh of a few hops over links without delay (the record's gathering, its flooding
#: and one catch-up per hop).
TAKES_EFFECT = INTEREST_EVERY + 1.0


@asynccontextmanager
async def known_line(tmp: Path, n: int) -> AsyncIterator[list[Node]]:
    """``n`` nodes in a line in interest mode, each knowing every link (60 s at most)."""
    with trio.fail_after(60):
        async with interest_line(tmp, n) as nodes:
            await wait_linked(nodes, line_edges(n))
            await wait_until(lambda: knows_everything(nodes, {}))
            yield nodes


def stats(node: Node) -> InterestStats:
    assert node.router.interest is not None
    return node.router.interest.stats


def collect(node: Node) -> list[bytes]:
    got: list[bytes] = []
    node.on_deliver.append(lambda msg: got.append(msg.data))
    return got


async def test_a_message_published_before_the_publisher_knew_of_the_subscriber_arrives(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with known_line(short_tmp, 3) as nodes:
        pub, mid, sub = nodes
        got, passed = collect(sub), collect(mid)
        pub.publish("a", b"before")  # nobody wants "a": it goes nowhere
        await trio.sleep(2)
        subscribe(sub, ["a"])
        assert sub.node_id not in pub.membership.interests.matching("a")
        pub.publish("a", b"after")  # the only message after the subscribe, and the last
        await wait_until(lambda: got == [b"after"])
        await trio.sleep(CATCH_UP)
        assert got == [b"after"]  # once, and not the one published before the subscribe
        assert passed == []  # the node between passed it on, delivered nothing
        assert stats(sub).early == 1  # "before", caught up too, was not delivered
        assert stats(sub).wanted == 1
        assert stats(pub).unwanted == 2  # both sent nowhere: it did not know of sub
        assert stats(pub).routed == 0
        assert stats(pub).caught_up >= 1
        pub.publish("a", b"live")  # the stream goes on from the message caught up
        await wait_until(lambda: got == [b"after", b"live"])
        assert sub.router.streams.stats.gaps == 0


async def test_a_subscription_takes_effect_within_the_bound(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with known_line(short_tmp, 4) as nodes:
        pub, sub = nodes[0], nodes[3]
        got = collect(sub)
        # The subscriber's earlier subscription changed the record a moment ago: this
        # one's change waits up to INTEREST_EVERY, the worst case.
        subscribe(sub, ["other"])
        await trio.sleep(0.01)
        start = trio.current_time()
        subscribe(sub, ["a"])
        pub.publish("a", b"1")  # at once, then every 10 ms until one arrives
        k = 1
        while not got:
            await trio.sleep(0.01)
            k += 1
            pub.publish("a", b"%d" % k)
        took = trio.current_time() - start
        assert got[0] == b"1"  # the first one, published with the subscribe, came
        assert took <= TAKES_EFFECT, took
        await trio.sleep(CATCH_UP)
        assert got == [b"%d" % i for i in range(1, k + 1)]  # each once, in order


async def test_an_unsubscribe_stops_the_copies_within_the_bound(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with known_line(short_tmp, 4) as nodes:
        pub, sub = nodes[0], nodes[3]
        session = subscribe(sub, ["a"])
        await wait_until(lambda: knows_everything(nodes, {3: "a"}))
        got = collect(sub)
        pub.publish("a", b"0")
        await wait_until(lambda: got == [b"0"])
        subscribe(sub, ["other"])  # the record changed a moment ago: the worst case
        await trio.sleep(0.01)
        assert sub.api is not None
        sub.api._unsubscribe(session, ["a"])
        start = trio.current_time()
        last_copy = start
        received = stats(sub).wanted + stats(sub).relayed
        while trio.current_time() - start < 3 * TAKES_EFFECT:
            pub.publish("a", b"x")
            await trio.sleep(0.01)
            now_received = stats(sub).wanted + stats(sub).relayed
            if now_received != received:
                received, last_copy = now_received, trio.current_time()
        assert last_copy - start <= TAKES_EFFECT, last_copy - start
        assert len(got) > 1  # copies came until the publisher knew


async def test_a_node_on_the_way_that_subscribes_delivers_from_its_subscribe_on(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Node 1 passes "a" on to node 2, then subscribes to it itself while its record
    waits for INTEREST_EVERY: it delivers every message published from its subscribe
    on, at once, in order, and none from before."""
    async with known_line(short_tmp, 3) as nodes:
        pub, mid, end = nodes
        subscribe(end, ["a"])
        subscribe(mid, ["other"])  # the record changed a moment ago
        await wait_until(lambda: knows_everything(nodes, {2: "a"}))
        got = collect(mid)
        sent = []
        for k in range(40):
            if k == 20:
                subscribe(mid, ["a"])
                assert mid.node_id not in mid.membership.interests.matching("a")
                start = trio.current_time()
            pub.publish("a", b"%d" % k)
            sent.append(b"%d" % k)
            await trio.sleep(0.01)
        await trio.sleep(CATCH_UP)
        assert got == sent[20:]
        assert stats(mid).relayed >= 20
        first = mid.router.streams.stats.held
        assert first == 0  # the first one after the subscribe did not wait
        assert trio.current_time() - start > INTEREST_EVERY  # the record did wait
