"""Restarts in interest mode (docs/interest.md#restarts), real nodes on the in-memory
network in virtual time, each with its own store file.

A subscriber's node B restarts (a clean stop, or a kill) while the publisher A goes on
publishing on two topics, B wanting one: B's apps (one ``on_deliver`` list across both
runs) get each message of that topic once, in order, and B's store holds each of its
batches once (so durable subscriptions and ``since``, which read the store, get each
once). A publisher that restarts starts new streams (a new run), which B takes."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.gossip.interestmode import CATCH_UP
from p2pnode.node import Node
from p2pnode.node.interests import INTEREST_KEEP
from p2pnode.store.service import StoreService
from p2pnode.testing import MemoryNetwork, make_identity, memory_config, wait_linked, wait_until
from p2pnode.wire.messages import Batch, BatchBody, Gossip, decode_kept_body, decode_message

from .test_interest_mode_node import subscribe
from .test_store_restart import restart, start

A, C, B = 0, 1, 2
EDGES = [(1, 0), (2, 1)]  # a line: A - C - B; C passes A's batches on to B
SETTINGS: dict[str, object] = {"gossip": "interest", "mesh_interval": 1.0,
                               "mesh_min_interval": 0.2}


@pytest.fixture(autouse=True)
def inline_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store calls in the event loop's thread: virtual time does not run ahead of them."""
    monkeypatch.setattr(StoreService, "inline", True)


class Sent:
    """What A published on "t" (B's topic), in order."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []

    async def publish(self, node: Node, count: int, gap: float = 0.02) -> None:
        for k in range(count):
            msg_id, _ = node.publish("t", b"%d" % k)
            self.ids.append(bytes.fromhex(msg_id))
            node.publish("u", b"%d" % k)  # nobody wants it: B's stream has gaps in seq
            await trio.sleep(gap)


def wants_t(node: Node) -> Node:
    node.membership.set_interest(["t"])
    return node


def routed_to(nodes: list[Node], b: Node) -> bool:
    """Every node routes "t" to B, by a mesh it knows."""
    return all(b.node_id in n.membership.interests.matching("t") and n.routes.edges()
               for n in nodes)


def body(frame: bytes) -> BatchBody:
    batch = decode_message(frame)
    assert isinstance(batch, Batch)
    return decode_kept_body(batch.body)


def check_once_in_order(got: list[Gossip], sent: Sent) -> None:
    ids = [g.id for g in got if g.topic == "t"]
    twice = [i for i, n in Counter(ids).items() if n > 1]
    assert not twice, f"{len(twice)} messages delivered twice"
    assert set(ids) == set(sent.ids), "lost"
    assert ids == sent.ids, f"out of order: {[sent.ids.index(i) for i in ids]}"


@dataclass
class Mesh:
    """A - C - B running, B wanting "t", A's first 20 messages on it delivered at B."""

    nursery: trio.Nursery
    net: MemoryNetwork
    nodes: list[Node]
    sent: Sent = field(default_factory=Sent)
    got: list[Gossip] = field(default_factory=list)  # what B's apps got, across runs

    async def restart(self, i: int, *, clean: bool) -> Node:
        node = await restart(self.nursery, self.net, self.nodes[i], clean=clean,
                             down_for=0.3)
        if i == B:
            wants_t(node).on_deliver.append(self.got.append)
        self.nodes[i] = node
        return node

    async def all_delivered(self) -> None:
        await wait_linked(self.nodes, EDGES)
        await self.sent.publish(self.nodes[A], 20)
        await wait_until(lambda: set(self.sent.ids) <= {g.id for g in self.got})
        await trio.sleep(5.0)  # repairs and catch-ups done
        check_once_in_order(self.got, self.sent)


@asynccontextmanager
async def line_mesh(tmp: Path) -> AsyncIterator[Mesh]:
    net = MemoryNetwork()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, net, tmp, 3, EDGES, {i: SETTINGS for i in range(3)})
            mesh = Mesh(nursery, net, nodes)
            wants_t(nodes[B]).on_deliver.append(mesh.got.append)
            await wait_linked(nodes, EDGES)
            await wait_until(lambda: routed_to(nodes, nodes[B]))
            await mesh.sent.publish(nodes[A], 20)
            await wait_until(lambda: len(mesh.got) == 20)
            yield mesh
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("clean", [True, False])
async def test_a_restarted_subscriber_gets_each_message_once(
        autojump_clock: trio.testing.MockClock, short_tmp: Path, clean: bool) -> None:
    async with line_mesh(short_tmp) as mesh:
        async with trio.open_nursery() as inner:
            inner.start_soon(mesh.sent.publish, mesh.nodes[A], 40)
            await trio.sleep(0.2)
            b = await mesh.restart(B, clean=clean)  # while A publishes
        await mesh.all_delivered()
        store = b.storing.service
        assert store is not None
        rows = store.store.after(0, 10_000)
        keys = Counter((r.origin, r.epoch, r.seq) for r in rows)
        assert max(keys.values()) == 1, "a batch stored twice"
        topics = Counter(item.topic for r in rows for item in body(r.frame).items)
        assert topics["t"] == len(mesh.sent.ids)
        assert "u" not in topics  # neither delivered nor stored


async def test_a_restarted_publisher_starts_new_streams_that_are_taken(
        autojump_clock: trio.testing.MockClock, short_tmp: Path) -> None:
    async with line_mesh(short_tmp) as mesh:
        old_epoch = mesh.nodes[A].publisher.epoch
        a = await mesh.restart(A, clean=False)
        assert a.publisher.epoch != old_epoch
        await mesh.all_delivered()
        assert mesh.nodes[B].router.streams.stats.gaps == 0


async def test_a_restarted_node_keeps_its_apps_subscriptions_while_they_reconnect(
        autojump_clock: trio.testing.MockClock, short_tmp: Path) -> None:
    """B's app subscribed live (no durable subscription): after B restarts, what A
    publishes before the app is back still reaches B's node (and its store, where a
    ``since`` finds it), each once and in order; B stops saying it INTEREST_KEEP later,
    the app not having come back."""
    net = MemoryNetwork()
    rng = random.Random(5)
    ids = [make_identity(rng) for _ in range(3)]

    async def run_node(nursery: trio.Nursery, i: int) -> Node:
        peers = tuple(("mem", j + 1) for a, j in EDGES if a == i)
        cfg = memory_config(i, peers=peers, store=str(short_tmp / f"n{i}.sqlite3"),
                            socket_path=short_tmp / f"{i}.sock", **SETTINGS)
        node = Node(cfg, transport=net.transport(), identity=ids[i])
        await nursery.start(node.run)
        return node

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = [await run_node(nursery, i) for i in range(3)]
            a, b = nodes[A], nodes[B]
            subscribe(b, ["t"])
            await wait_linked(nodes, EDGES)
            await wait_until(lambda: routed_to(nodes, b))
            sent, got = Sent(), []
            b.on_deliver.append(got.append)
            await sent.publish(a, 10)
            await wait_until(lambda: len(got) == 10)
            await b.stop(grace=0.2)
            await sent.publish(a, 10)  # B is away
            b = nodes[B] = await run_node(nursery, B)
            b.on_deliver.append(got.append)
            assert b.membership.me.interests == ["t"]  # from its store: no app yet
            await sent.publish(a, 10)  # B is back, its app not yet
            await wait_until(lambda: set(sent.ids) <= {g.id for g in got})
            await trio.sleep(5.0)
            check_once_in_order(got, sent)
            await trio.sleep(INTEREST_KEEP)
            assert b.membership.me.interests == []
            await wait_until(lambda: not routed_to(nodes[:1], b))
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("away", [30.0, 200.0])
async def test_a_subscriber_away_after_the_mesh_took_it_for_gone_gets_what_it_missed(
        autojump_clock: trio.testing.MockClock, short_tmp: Path, away: float) -> None:
    """B crashes; the others take it for dead (out of their interests: nothing is routed
    toward it any more) and A publishes on B's topic; B comes back ``away`` seconds later
    (past CATCH_UP, within history_age) and A publishes nothing more: catch-up from
    when B went brings B each message once, in order, into its store too."""
    async with line_mesh(short_tmp) as mesh:
        a, c, b = mesh.nodes
        assert away > CATCH_UP
        assert away + 10 < a.config.history_age
        for node in (a, c):  # neither wants "t": C only passes it on, A only publishes
            node.membership.set_interest(["v"])
        await wait_until(lambda: all(n.membership.interests.matching("t") == {b.node_id}
                                     for n in mesh.nodes))
        b.kill()
        await wait_until(lambda: not routed_to(mesh.nodes[:2], b))  # gone for A and C
        missed = Sent()
        await missed.publish(a, 10)
        await trio.sleep(away)
        b = await mesh.restart(B, clean=False)
        await wait_until(lambda: set(missed.ids) <= {g.id for g in mesh.got})
        await trio.sleep(5.0)
        mesh.sent.ids += missed.ids
        check_once_in_order(mesh.got, mesh.sent)
        assert a.router.interest is not None
        assert c.router.interest is not None
        assert a.router.interest.stats.caught_up >= len(missed.ids)  # from A's history
        assert c.router.interest.stats.relayed == len(missed.ids)  # each passed on once
        store = b.storing.service
        assert store is not None
        rows = store.store.after(0, 10_000)
        kept = [item.id for r in rows for item in body(r.frame).items if item.topic == "t"]
        assert kept == mesh.sent.ids
