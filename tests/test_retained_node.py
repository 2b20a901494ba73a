"""Retained messages across a mesh of real nodes (the in-memory network, virtual time):
a late subscriber two hops away gets the value, a clear clears it everywhere, two nodes
publishing at once leave every node with the same value, a node that was offline gets
the retained set when its links come up, a lying member cannot forge another node's
value, and each node keeps to its limits.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

from p2pnode.client import open_client
from p2pnode.gossip.retained import topic_key
from p2pnode.gossip.signing import sign_batch
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    SimNet,
    make_identity,
    memory_config,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import (
    Batch,
    Item,
    Retained,
    RetainedDigest,
    RetainedKey,
    RetainedWant,
    decode_kept_body,
    encode_body,
)

from .hostile import HostilePeer


def values(node: Node) -> dict[str, tuple[int, bytes, bytes]]:
    """Topic -> version of the retained messages ``node`` holds (tombstones included)."""
    return {e.topic: e.version for e in node.retaining.store}


def payload(node: Node, topic: str) -> bytes | None:
    replay = node.retained_replay([topic])
    msgs = replay.step(1 << 30)
    return msgs[0].data if msgs else None


async def settle(seconds: float = 1.0) -> None:
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def start_api_node(nursery: trio.Nursery, clock: trio.testing.MockClock,
                         net: MemoryNetwork, index: int, seed: int, socket_path: Path,
                         **overrides: Any) -> Node:
    """A node on ``net`` that serves its API on a real socket (the clock does not jump
    while trio binds it in a worker thread)."""
    clock.autojump_threshold = math.inf
    try:
        node = Node(memory_config(index, socket_path=socket_path, **overrides),
                    transport=net.transport(), identity=make_identity(random.Random(seed)))
        await nursery.start(node.run)
        return node
    finally:
        clock.autojump_threshold = 0


async def test_a_late_subscriber_two_hops_away_gets_the_value_then_live_ones(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = await start_memory_mesh(nursery, [(1, 0)], 2, network=net, seed=1)
            c = await start_api_node(nursery, autojump_clock, net, 2, 99,
                                     short_tmp / "c.sock", peers=(("mem", 2),))
            await wait_linked([a, b, c], [(1, 0)])
            await wait_until(lambda: len(c.links.links) == 1)  # type: ignore[union-attr]
            a.publish("sensors/kitchen", b"20.5", retain=True)
            a.publish("sensors/kitchen", b"21.0", retain=True)  # the newer one counts
            a.publish("sensors/garage", b"12.0", retain=True)
            a.publish("chat", b"not retained")
            await wait_until(lambda: len(values(c)) == 2)
            autojump_clock.autojump_threshold = math.inf  # real I/O with the client
            async with open_client(c.config.socket_path) as app:
                reply = await app.subscribe(["sensors/kitchen", "chat"])
                assert reply == {"ok": True, "retained": 1}
                first = await app.next_event()
                assert (first["topic"], first["data"], first["retained"]) == (
                    "sensors/kitchen", "21.0", True)
                assert first["origin"] == a.node_hex
                a.publish("sensors/kitchen", b"21.5", retain=True)
                live = await app.next_event()
                assert (live["data"], "retained" in live) == ("21.5", False)
                # Asked not to, a subscription gets no retained message.
                assert await app.subscribe(["sensors/garage"], retained=False) == {"ok": True}
                assert (await app.subscribe(["sensors/garage"]))["retained"] == 1
                assert (await app.next_event())["data"] == "12.0"
            async with open_client(c.config.socket_path) as app:
                # A pattern gets the retained messages of every topic it matches.
                reply = await app.subscribe(["sensors/+", "nothing/#"])
                assert reply == {"ok": True, "retained": 2}
                got = {(e["topic"], e["data"]) for e in
                       [await app.next_event(), await app.next_event()]}
                assert got == {("sensors/kitchen", "21.5"), ("sensors/garage", "12.0")}
                assert "retained" not in await app.subscribe(["+"])  # "chat": not retained
            status = c.status_info().retained
            assert (status.topics, status.tombstones) == (2, 0)
            assert 0 < status.bytes < 2000
            nursery.cancel_scope.cancel()


async def test_a_clear_clears_the_topic_on_every_node(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, [(1, 0), (2, 1)], 3, seed=2)
            await wait_linked(nodes, [(1, 0), (2, 1)])
            nodes[0].publish("light", b"on", retain=True)
            await wait_until(lambda: all(payload(n, "light") == b"on" for n in nodes))
            nodes[2].publish("light", b"", retain=True)  # cleared from the other end
            await wait_until(lambda: all(n.retaining.store.tombstones == 1 for n in nodes))
            assert all(payload(n, "light") is None for n in nodes)
            assert not any(n.has_retained(["light"]) or n.has_retained([]) for n in nodes)
            assert all(n.status_info().retained.topics == 0 for n in nodes)
            nursery.cancel_scope.cancel()


async def test_concurrent_publishes_from_two_nodes_leave_every_node_with_the_same_value(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Nodes 0 and 3, three hops apart (a line 0-1-2-3 plus 1-4), set one topic 20 times
    each while the other's messages are on their way (2 ms per hop): in the end every
    node holds the same retained message, the newest of the 40."""
    net = MemoryNetwork(sim=SimNet(latency=lambda: 0.002))
    edges = [(1, 0), (2, 1), (3, 2), (4, 1)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 5, network=net, seed=3)
            await wait_linked(nodes, edges)
            for k in range(20):
                nodes[0].publish("mode", b"from 0: %d" % k, retain=True)
                nodes[3].publish("mode", b"from 3: %d" % k, retain=True)
                await trio.sleep(0.001)
            await settle(2)
            final = {values(n)["mode"] for n in nodes}
            assert len(final) == 1, final
            (version,) = final
            held = {payload(n, "mode") for n in nodes}
            assert len(held) == 1
            # It is the newest of what the two published: each origin's last one.
            assert held <= {b"from 0: 19", b"from 3: 19"}
            assert version[1] in (nodes[0].node_id, nodes[3].node_id)
            nursery.cancel_scope.cancel()


async def test_a_node_that_was_offline_gets_the_retained_set_when_it_links(
    autojump_clock: trio.abc.Clock,
) -> None:
    """History is off (no repair from it): only the retained sync can bring what was set
    while a node was away. A new node gets all 200 topics; a node that restarts gets
    the value that changed while it was down, and the clear."""
    net = MemoryNetwork()
    options: dict[str, Any] = {"history_batches": 0}
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, [(1, 0), (2, 1)], 3, network=net, seed=4,
                                            **options)
            await wait_linked(nodes, [(1, 0), (2, 1)])
            for k in range(200):
                nodes[k % 3].publish(f"t/{k}", b"v%d" % k, retain=True)
            nodes[0].publish("gone", b"x", retain=True)
            await wait_until(lambda: all(len(values(n)) == 201 for n in nodes))
            # A new node, linked to node 2 only.
            rng = random.Random(77)
            new = Node(memory_config(3, peers=(("mem", 3),), **options),
                       transport=net.transport(), identity=make_identity(rng), api=False)
            await nursery.start(new.run)
            await wait_until(lambda: values(new) == values(nodes[0]))
            assert new.status_info().retained.synced == 201
            # Node 2 goes down; the value of t/5 changes and "gone" is cleared meanwhile.
            ident2 = nodes[2].identity
            nodes[2].kill()
            await wait_until(lambda: len(nodes[1].links.links) == 1)  # type: ignore[union-attr]
            nodes[0].publish("t/5", b"changed", retain=True)
            nodes[0].publish("gone", b"", retain=True)
            await wait_until(lambda: payload(nodes[1], "t/5") == b"changed"
                             and nodes[1].retaining.store.tombstones == 1)
            await settle()
            assert payload(new, "t/5") == b"v5"  # its only link was to node 2
            # Node 2 comes back (a new run, nothing kept), and links to 1 and 3 again.
            back = Node(memory_config(2, peers=(("mem", 2),), **options),
                        transport=net.transport(), identity=ident2, api=False)
            await nursery.start(back.run)
            await wait_until(lambda: values(back) == values(nodes[0]) == values(new))
            assert payload(new, "t/5") == b"changed"  # through node 2, once it had it
            assert payload(new, "gone") is None
            assert new.retaining.store.tombstones == 1
            nursery.cancel_scope.cancel()


async def test_a_member_cannot_forge_another_nodes_retained_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A hostile member announces a newer value of node 0's topic and, asked for it,
    sends a batch that claims node 0 as origin but is not signed by it: the node closes
    its link and keeps node 0's value. A retained message the member signs itself is a
    member's right: it is kept."""
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = await start_memory_mesh(nursery, [(1, 0)], 2, network=net, seed=5)
            await wait_linked([a, b], [(1, 0)])
            a.publish("door", b"locked", retain=True)
            await wait_until(lambda: payload(b, "door") == b"locked")
            genuine = b.retaining.store.get("door")
            assert genuine is not None
            async with await HostilePeer.connect_memory(net, b, seed=9) as mallory:
                # Its own retained message: signed by itself, kept.
                await mallory.send_message(sign_own(mallory, "mallory/status", b"here"))
                await wait_until(lambda: payload(b, "mallory/status") == b"here")
                # Another's: announced newer, then forged.
                claim = RetainedKey(topic_key("door"), genuine.stamp + 10, a.node_id, 200)
                await mallory.send_message(RetainedDigest([claim]))
                want = await mallory.wait_for(RetainedWant)
                assert want.topics == [topic_key("door")]
                forged = forge(genuine.batch, b"locked", b"opened", genuine.stamp + 10)
                await mallory.send_message(Retained([forged]))
                while await mallory.receive() is not None:
                    pass  # the node hangs up
            assert payload(b, "door") == b"locked"
            status = b.status_info()
            assert status.retained.rejected == 1
            assert status.links is not None
            assert status.links.closed.get("bad_signature") == 1
            nursery.cancel_scope.cancel()


def sign_own(peer: HostilePeer, topic: str, data: bytes) -> Batch:
    """A retained batch of the peer's own, stamped now."""
    return sign_batch(peer.identity, peer.new_id(), None, [Item(peer.new_id(), topic, data)],
                      retain=int(time.time() * 1e6))


def forge(batch: Batch, old: bytes, new: bytes, stamp: int) -> Batch:
    """``batch`` with its payload and stamp changed and its signature kept (so no longer
    its origin's)."""
    body = decode_kept_body(batch.body)
    items = [msgspec.structs.replace(i, data=i.data.replace(old, new)) for i in body.items]
    forged_body = encode_body(msgspec.structs.replace(body, items=items, retain=stamp))
    return Batch(batch.id, batch.origin, 0, batch.key, forged_body, batch.sig)


async def test_each_node_keeps_to_its_own_limits(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork()
            a, b = await start_memory_mesh(nursery, [(1, 0)], 2, network=net, seed=6)
            small = Node(memory_config(2, peers=(("mem", 2),), retained_max_topics=3),
                         transport=net.transport(), identity=make_identity(random.Random(8)),
                         api=False)
            await nursery.start(small.run)
            await wait_linked([a, b], [(1, 0)])
            await wait_until(lambda: len(small.links.links) == 1)  # type: ignore[union-attr]
            for k in range(5):
                a.publish(f"t{k}", b"x", retain=True)
            await wait_until(lambda: len(values(b)) == 5)
            await settle()
            assert sorted(values(small)) == ["t0", "t1", "t2"]
            status = small.status_info().retained
            assert (status.topics, status.max_topics, status.refused_full) == (3, 3, 2)
            # Clearing makes room (a tombstone gives way to a new topic).
            a.publish("t0", b"", retain=True)
            await wait_until(lambda: small.retaining.store.tombstones == 1)
            a.publish("t9", b"x", retain=True)
            await wait_until(lambda: "t9" in values(small))
            assert sorted(values(small)) == ["t1", "t2", "t9"]
            nursery.cancel_scope.cancel()
