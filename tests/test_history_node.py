"""History, repair and replay with real nodes over the in-memory network, in virtual
time: a message published before anyone listened reaches the first peer, a healed
partition is repaired, an origin's messages arrive in order, ``since`` replays
history through the local API, and history stays within its limits."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from p2pnode.client import ApiReplyError, Client, open_client
from p2pnode.gossip.history import ENTRY_OVERHEAD
from p2pnode.gossip.signing import make_batch
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    SimNet,
    count_deliveries,
    link_count,
    make_identity,
    memory_config,
    open_raw_link,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import Item, decode_body, encode_message


def record_order(node: Node, topic: str | None = None) -> list[bytes]:
    """The payloads delivered at ``node`` (of ``topic``), in delivery order."""
    got: list[bytes] = []
    node.on_deliver.append(
        lambda msg: got.append(msg.data) if topic is None or msg.topic == topic else None)
    return got


async def start_node(nursery: trio.Nursery, net: MemoryNetwork, index: int, seed: int,
                     *, api: bool = False, **overrides: Any) -> Node:
    node = Node(memory_config(index, **overrides), transport=net.transport(),
                identity=make_identity(random.Random(seed)), api=api)
    await nursery.start(node.run)
    return node


async def start_api_node(nursery: trio.Nursery, clock: trio.testing.MockClock,
                         net: MemoryNetwork, index: int, seed: int, socket_path: Path,
                         **overrides: Any) -> Node:
    """Start a node that serves its API on ``socket_path``. trio binds a Unix socket in a
    worker thread: while it runs, the autojump clock would jump to the next deadline
    (the test's ``fail_after``), so the clock does not autojump during the start."""
    clock.autojump_threshold = math.inf
    try:
        return await start_node(nursery, net, index, seed, api=True, socket_path=socket_path,
                                **overrides)
    finally:
        clock.autojump_threshold = 0


async def settle(seconds: float = 2.0) -> None:
    """Let everything in flight (grafts, held batches, redials) play out, in virtual time."""
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(seconds)
    await trio.testing.wait_all_tasks_blocked()


# -- 1. published before anyone listened --------------------------------------------------


async def test_message_published_alone_reaches_the_first_peer_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, net, 0, seed=1)
            mine = count_deliveries(a)
            msg_hex, peers = a.publish("t", b"before anyone")
            assert peers == 0
            await settle(1)  # flushed into a batch with nowhere to go: kept in history
            assert a.status_info().history.batches == 1
            b = Node(memory_config(1, peers=(("mem", 1),)), transport=net.transport(),
                     identity=make_identity(random.Random(2)), api=False)
            got = count_deliveries(b)
            await nursery.start(b.run)
            await wait_linked([a, b], [(1, 0)])
            await wait_until(lambda: len(got) == 1)
            assert got == Counter({bytes.fromhex(msg_hex): 1})
            await settle(5)
            assert got == Counter({bytes.fromhex(msg_hex): 1}), "delivered again"
            assert mine == Counter({bytes.fromhex(msg_hex): 1}), "came back to its origin"
            assert a.status_info().gossip.repaired == 1
            assert b.status_info().gossip.grafts_sent == 1
            nursery.cancel_scope.cancel()


# -- 2. repair after a partition ----------------------------------------------------------


async def test_partition_heals_and_every_node_gets_every_message_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Two triangles (nodes 0-2 and 3-5) joined by links 0-3 and 2-5. The cross paths
    are cut until those links time out; both sides publish; after the paths come back
    the static peers redial, digests are exchanged and every node has every message
    exactly once within 5 virtual seconds."""
    net = MemoryNetwork(sim=SimNet(latency=lambda: 0.002))
    group_edges = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]
    cross = [(0, 3), (2, 5)]
    edges = group_edges + cross
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(
                nursery, edges, 6, network=net, seed=6, ping_interval=0.2, link_timeout=0.6,
                redial_initial=0.05, redial_max=0.2, handshake_timeout=0.5, dial_timeout=0.5)
            await wait_linked(nodes, edges)
            counters = [count_deliveries(n) for n in nodes]
            ids: list[bytes] = []

            def publish(i: int, text: str) -> None:
                msg_hex, _ = nodes[i].publish("t", text.encode())
                ids.append(bytes.fromhex(msg_hex))

            publish(0, "before the cut")
            await wait_until(lambda: all(len(c) == 1 for c in counters))

            for a, b in cross:
                net.sim.cut_path(a + 1, b + 1)  # node i listens on port i + 1
            await wait_until(lambda: all(
                nodes[b].node_id not in nodes[a].links.links  # type: ignore[union-attr]
                and nodes[a].node_id not in nodes[b].links.links  # type: ignore[union-attr]
                for a, b in cross))
            await trio.sleep(1)  # the redials keep failing for a while
            for k in range(4):  # several batches on each side
                publish(1, f"left {k}")
                publish(4, f"right {k}")
                await trio.sleep(0.05)
            publish(0, "left from a cross node")
            publish(5, "right from a cross node")
            left, right = set(ids[1::2]), set(ids[2::2])
            await wait_until(lambda: all(
                len(c) == 1 + len(left if i < 3 else right) for i, c in enumerate(counters)))
            await trio.sleep(0.5)
            for i, c in enumerate(counters):  # nothing crossed the cut
                assert set(c) & (right if i < 3 else left) == set()

            for a, b in cross:
                net.sim.restore_path(a + 1, b + 1)
            healed_at = trio.current_time()
            await wait_until(lambda: all(len(c) == len(ids) for c in counters))
            assert trio.current_time() - healed_at <= 5.0
            await wait_linked(nodes, edges)
            await settle(3)
            for i, c in enumerate(counters):
                assert set(c) == set(ids), f"node {i} missed messages"
                assert set(c.values()) == {1}, f"node {i} got duplicates: {c}"
            repaired = [n.status_info().gossip.repaired for n in nodes]
            assert sum(repaired) > 0, repaired
            assert all(n.status_info().gossip.graft_misses == 0 for n in nodes)
            nursery.cancel_scope.cancel()


# -- 3. per-origin order ------------------------------------------------------------------


async def test_messages_of_one_origin_arrive_in_publish_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Many batches of one origin, while its direct path to node 2 is cut for a while
    (simnet pipes are FIFO, so latency jitter alone never lets a batch overtake an
    earlier one; a path change does): node 2 then hears of them from node 1 (lazy),
    grafts the first, which makes that link eager, and gets later batches pushed before
    the older ones it has still to graft; the cut path's backlog comes last. Every node
    hands them to its subscribers in publish order, nothing given up, nothing twice."""
    net = MemoryNetwork(sim=SimNet(latency=lambda: 0.005))
    edges = [(0, 1), (1, 2), (0, 2), (2, 3), (1, 3)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 4, network=net, seed=8)
            await wait_linked(nodes, edges)
            orders = [record_order(n) for n in nodes[1:]]
            sent: list[bytes] = []

            async def publish(count: int) -> None:
                for _ in range(count):
                    k = len(sent)
                    payload = f"m{k:03d}".encode()
                    nodes[0].publish("t", payload)
                    sent.append(payload)
                    if k % 4 == 3:  # a new batch every 4 messages
                        await trio.sleep(0.01)

            await publish(20)  # the trees settle
            await wait_until(lambda: all(len(o) == len(sent) for o in orders))
            net.sim.cut_path(1, 3)  # node 0 <-> node 2: data waits, links stay up
            await publish(160)
            net.sim.restore_path(1, 3)
            await publish(20)
            await wait_until(lambda: all(len(o) == len(sent) for o in orders))
            await settle(3)
            assert all(link_count(n) == 3 for n in nodes[1:3]), "the links must not time out"
            for i, order in enumerate(orders, start=1):
                assert order == sent, f"node {i} delivered out of order"
            held = [n.status_info().messages.order_held for n in nodes]
            gaps = [n.status_info().messages.order_gaps for n in nodes]
            assert held[2] > 0, "the test should make batches overtake each other"
            assert gaps == [0, 0, 0, 0]
            nursery.cancel_scope.cancel()


# -- 4. since: replay through the local API -----------------------------------------------


@asynccontextmanager
async def api_node(clock: trio.testing.MockClock, short_tmp: Path,
                   **overrides: Any) -> AsyncIterator[tuple[Node, Node]]:
    """Node A with its API on a Unix socket, linked to node B (no API)."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = await start_api_node(nursery, clock, net, 0, 1, short_tmp / "a.sock", **overrides)
        b = await start_node(nursery, net, 1, seed=2, peers=(("mem", 1),))
        await wait_linked([a, b], [(1, 0)])
        yield a, b
        nursery.cancel_scope.cancel()


async def no_more_events(client: Client, seconds: float = 2.0) -> None:
    with trio.move_on_after(seconds):
        event = await client.next_event()
        raise AssertionError(f"unexpected event {event}")


async def test_subscribe_since_replays_then_goes_live(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    with trio.fail_after(60):
        async with api_node(autojump_clock, short_tmp) as (a, b):
            ids: dict[str, str] = {}
            ids["m1"], _ = a.publish("t", b"m1")
            ids["m2"], _ = a.publish("t", b"m2")  # m1 and m2 share a batch
            await trio.sleep(0.01)
            ids["m3"], _ = a.publish("t", b"m3")
            await trio.sleep(0.01)
            a.publish("other", b"not for t")
            await trio.sleep(0.01)
            ids["m4"], _ = b.publish("t", b"m4")  # from the peer
            await wait_until(lambda: len(a.router.history) == 4)
            ids["m5"], peers = a.publish("t", b"m5")  # not flushed yet: replay flushes
            assert peers == 1
            async with await open_client(a.config.socket_path) as client:
                reply = await client.subscribe(["t"], since=ids["m2"])
                assert reply["replayed"] == 3
                assert reply["since_found"] is True
                events = [await client.next_event() for _ in range(3)]
                assert [e["data"] for e in events] == ["m3", "m4", "m5"]
                assert [e["msg_id"] for e in events] == [ids["m3"], ids["m4"], ids["m5"]]
                assert all(e["replay"] is True for e in events)
                assert events[1]["origin"] == b.node_hex
                assert events[1]["hops"] == 1
                m6, _ = b.publish("t", b"m6")
                live = await client.next_event()
                assert live["msg_id"] == m6
                assert live["data"] == "m6"
                assert "replay" not in live
                a.publish("t", b"m7")
                live = await client.next_event()
                assert (live["data"], "replay" in live) == ("m7", False)
                await no_more_events(client)
                assert client.events_dropped == 0


async def test_subscribe_since_unknown_id_time_and_topics(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    with trio.fail_after(60):
        async with api_node(autojump_clock, short_tmp) as (a, b):
            for k in range(4):
                a.publish("t", f"t{k}".encode())
                b.publish("u", f"u{k}".encode())
                await trio.sleep(0.01)
            await wait_until(lambda: len(a.router.history) == 8)
            everything = [f"{x}{k}" for k in range(4) for x in "tu"]
            path = a.config.socket_path

            async def replay(topics: list[str], since: str | float) -> tuple[dict[str, Any],
                                                                                list[str]]:
                async with await open_client(path) as client:
                    reply = await client.subscribe(topics, since=since)
                    events = [await client.next_event() for _ in range(reply["replayed"])]
                    assert all(e["replay"] is True for e in events)
                    await no_more_events(client, 0.5)
                    return reply, [e["data"] for e in events]

            # An id that is not in history: all of it is replayed.
            reply, got = await replay([], "00" * 16)
            assert reply["since_found"] is False
            assert reply["replayed"] == 8
            assert sorted(got) == sorted(everything)
            assert [d for d in got if d[0] == "t"] == [f"t{k}" for k in range(4)]
            reply, got = await replay(["u"], "ab" * 16)
            assert (reply["since_found"], got) == (False, [f"u{k}" for k in range(4)])
            # Unix time 0: everything; far in the future: nothing (no since_found then).
            reply, got = await replay([], 0)
            assert "since_found" not in reply
            assert sorted(got) == sorted(everything)
            reply, got = await replay(["t"], 0.0)
            assert got == [f"t{k}" for k in range(4)]
            reply, got = await replay([], time.time() + 3600)
            assert (reply["replayed"], got) == (0, [])
            # An id of the other topic: only the later messages of the subscribed topic.
            u0 = next(e.batch for e in a.router.history if e.batch.origin == b.node_id)
            u0_id = decode_body(u0.body, a.config.max_payload).items[0].id.hex()
            reply, got = await replay(["t"], u0_id)
            assert reply["since_found"] is True
            assert got == ["t1", "t2", "t3"]
            assert reply["replayed"] == 3


@pytest.mark.parametrize("since", ['"xyz"', "-1", "-0.5", '""', '"' + "00" * 15 + '"', "true",
                                   "[1]", '{"t": 1}'])
async def test_bad_since_is_a_bad_request_and_the_connection_stays_usable(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, since: str,
) -> None:
    with trio.fail_after(60):
        async with api_node(autojump_clock, short_tmp) as (a, _b):
            a.publish("t", b"old")
            async with await open_client(a.config.socket_path) as client:
                await client.stream.send_all(
                    b'{"op": "subscribe", "topics": ["t"], "id": 5, "since": %s}\n'
                    % since.encode())
                reply = await client.reply()
                assert reply["ok"] is False
                assert reply["error"]["code"] == "bad_request"
                assert reply["id"] == 5
                assert (await client.status())["node_id"] == a.node_hex
                # The failed request subscribed to nothing.
                a.publish("t", b"not subscribed")
                await no_more_events(client, 0.5)
                reply = await client.subscribe(["t"], since=0)
                assert reply["replayed"] == 2
                assert [(await client.next_event())["data"] for _ in range(2)] == [
                    "old", "not subscribed"]


@pytest.mark.parametrize("since", ["xyz", -1])
async def test_bad_since_from_the_client_class_raises(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, since: Any,
) -> None:
    with trio.fail_after(60):
        async with api_node(autojump_clock, short_tmp) as (a, _b):
            async with await open_client(a.config.socket_path) as client:
                with pytest.raises(ApiReplyError) as info:
                    await client.subscribe(["t"], since=since)
                assert info.value.code == "bad_request"
                assert (await client.subscribe(["t"], since=0))["replayed"] == 0


# -- 5. history bounds --------------------------------------------------------------------


@pytest.mark.parametrize(("history_bytes", "history_batches"), [(4000, 20_000), (1 << 20, 7)])
async def test_history_stays_within_its_limits(
    autojump_clock: trio.abc.Clock, history_bytes: int, history_batches: int,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            over: dict[str, Any] = {"history_bytes": history_bytes,
                                    "history_batches": history_batches}
            a = await start_node(nursery, net, 0, seed=1, **over)
            b = await start_node(nursery, net, 1, seed=2, peers=(("mem", 1),), **over)
            await wait_linked([a, b], [(1, 0)])
            got = count_deliveries(b)
            for k in range(100):
                a.publish("t", b"x" * 100 + str(k).encode())
                await trio.sleep(0.01)  # one batch each
                for node in (a, b):
                    h = node.status_info().history
                    assert h.bytes <= h.max_bytes == history_bytes
                    assert h.batches <= history_batches
            await wait_until(lambda: len(got) == 100)
            for node in (a, b):
                h = node.status_info().history
                assert h.evicted > 0
                assert 0 < h.batches <= history_batches
                entries = list(node.router.history)
                assert h.bytes == sum(e.size for e in entries)
                assert all(e.size >= ENTRY_OVERHEAD for e in entries)
            # A batch larger than the whole history is not kept at all.
            if history_bytes < 10_000:
                before = len(a.router.history)
                a.publish("t", b"y" * history_bytes)
                await trio.sleep(0.01)
                assert len(a.router.history) == before
                assert a.status_info().history.bytes <= history_bytes
            nursery.cancel_scope.cancel()


# -- a held batch and replay ----------------------------------------------------------------


async def test_batch_held_for_a_gap_is_not_replayed_and_then_delivered_again(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    """Node A gets seq 1 and seq 3 of an origin (3 is held, waiting for 2); a client
    subscribes with since=0, then seq 2 arrives. The client must see each message
    once, in order."""
    net = MemoryNetwork()
    origin = make_identity(random.Random(99))
    replayed: list[str] = []
    live: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_api_node(nursery, autojump_clock, net, 0, 1,
                                     short_tmp / "a.sock", order_hold=10.0)
            stream = await open_raw_link(net, a, origin.node_id, "origin")
            batches = [make_batch(origin, bytes([k]) * 16, None,
                                  [Item(bytes([0x80 + k]) * 16, "t", f"s{k}".encode())],
                                  epoch=1, seq=k)[0] for k in (1, 2, 3)]
            seen = record_order(a)

            async def send(k: int) -> None:
                batch = batches[k - 1]
                await stream.send_all(encode_message(msgspec.structs.replace(batch, hops=1)))

            await send(1)
            await wait_until(lambda: seen == [b"s1"])
            await send(3)
            await wait_until(lambda: a.router.order.held_count == 1)
            assert seen == [b"s1"]
            async with await open_client(a.config.socket_path) as client:
                reply = await client.subscribe(["t"], since=0)
                replayed += [(await client.next_event())["data"]
                             for _ in range(reply["replayed"])]
                await send(2)
                await wait_until(lambda: len(seen) == 3)
                assert seen == [b"s1", b"s2", b"s3"]
                with trio.move_on_after(2):
                    while True:
                        live.append((await client.next_event())["data"])
            await stream.aclose()
            nursery.cancel_scope.cancel()
    # The node delivered s1, s2, s3 in order; its subscriber must see the same.
    assert replayed + live == ["s1", "s2", "s3"], (replayed, live)


async def test_announcements_of_an_api_flush_go_out(autojump_clock: trio.testing.MockClock) -> None:
    # The API flushes its own publishes (wait_links_writable); the IHaves that flush queues
    # for lazy peers must still go out without waiting for some later publish.
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, net, 0, seed=1)
            b = await start_node(nursery, net, 1, seed=2, peers=(("mem", 1),))
            await wait_linked([a, b], [(1, 0)])
            await settle(1)
            got = count_deliveries(b)
            a.router.trees.lazy_for(a.node_id).add(b.node_id)  # as if b had pruned a's batches
            a.publish("t", b"hello", defer_flush=True)  # as ApiServer._read does ...
            await a.wait_links_writable()  # ... which flushes
            await settle(2)
            assert not a.router.has_announcements
            assert b.router.stats.ihave_received == 1
            assert sum(got.values()) == 1  # announced, grafted, delivered
            nursery.cancel_scope.cancel()
