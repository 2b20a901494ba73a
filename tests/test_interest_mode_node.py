"""Nodes in interest mode (docs/interest.md) over in-memory links, in virtual time: the
publisher's batches per topic and their ``tprev`` links; while the mesh is not known
everything still reaches everyone, once and in order per topic."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from p2pnode.api.session import Session
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    line_edges,
    make_identity,
    memory_config,
    ring_edges,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import BatchBody, decode_kept_body, is_routed


def bodies(node: Node) -> list[BatchBody]:
    """The bodies of the batches node published, in order."""
    entries = [e for e in node.router.history._entries.values() if e.from_peer is None]
    return [decode_kept_body(e.batch.body) for e in sorted(entries, key=lambda e: e.seq)]


async def test_one_batch_per_topic_linked_to_the_last_of_its_topic(
        nursery: trio.Nursery) -> None:
    nodes = await start_memory_mesh(nursery, line_edges(2), 2, gossip="interest")
    await wait_linked(nodes, line_edges(2))
    pub = nodes[0]
    for topic in ("a", "b", "a"):
        pub.publish(topic, topic.encode())
    await trio.testing.wait_all_tasks_blocked()
    pub.publish("a", b"a2")
    await trio.testing.wait_all_tasks_blocked()
    made = bodies(pub)
    assert [[item.topic for item in b.items] for b in made] == [["a", "a"], ["b"], ["a"]]
    assert all(is_routed(b) for b in made)
    assert [b.tprev for b in made] == [0, 0, made[0].seq]


async def test_everything_reaches_everyone_while_the_mesh_is_not_known(
        nursery: trio.Nursery) -> None:
    n = 4
    nodes = await start_memory_mesh(nursery, line_edges(n), n, gossip="interest")
    await wait_linked(nodes, line_edges(n))
    got: list[list[tuple[str, bytes]]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        node.on_deliver.append(lambda msg, i=i: got[i].append((msg.topic, msg.data)))
    sent = []
    for k in range(6):
        topic = "ab"[k % 2]
        nodes[0].publish(topic, b"%d" % k)
        sent.append((topic, b"%d" % k))
        await trio.sleep(0.01)
    await wait_until(lambda: all(len(g) == len(sent) for g in got))
    await trio.testing.wait_all_tasks_blocked()
    for g in got:
        assert g == sent  # each once, in the order published
    assert all(node.router.streams.stats.gaps == 0 for node in nodes)


@asynccontextmanager
async def interest_mesh(tmp: Path, edges: list[tuple[int, int]], n: int,
                        net: MemoryNetwork | None = None, *, modes: list[str] | None = None,
                        seed: int = 23) -> AsyncIterator[list[Node]]:
    """``n`` nodes linked by ``edges`` in interest mode (or node i in ``modes[i]``),
    each with its API (sessions subscribe directly), sharing link lists every second;
    their identities drawn from ``seed``."""
    net = net or MemoryNetwork()
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        nodes = []
        for i in range(n):
            peers = tuple(("mem", j + 1) for a, j in edges if a == i)
            mode = modes[i] if modes is not None else "interest"
            cfg = memory_config(i, peers=peers, gossip=mode, mesh_interval=1.0,
                                socket_path=tmp / f"{i}.sock", mesh_min_interval=0.2)
            node = Node(cfg, transport=net.transport(), identity=make_identity(rng))
            await nursery.start(node.run)
            nodes.append(node)
        yield nodes
        nursery.cancel_scope.cancel()


def interest_line(tmp: Path, n: int) -> AbstractAsyncContextManager[list[Node]]:
    return interest_mesh(tmp, line_edges(n), n)


def subscribe(node: Node, topics: list[str]) -> Session:
    assert node.api is not None
    session = Session(node.config)
    node.api._subscribe(session, topics, None)
    return session


def knows_everything(nodes: list[Node], wants: dict[int, str],
                     links: list[tuple[int, int]] | None = None) -> bool:
    """Every node sees every link (a line by default) and every subscription."""
    pairs = links if links is not None else line_edges(len(nodes))
    edges = {frozenset((nodes[a].node_id, nodes[b].node_id)) for a, b in pairs}
    for node in nodes:
        if {frozenset(e) for e in node.routes.edges()} != edges:
            return False
        for i, topic in wants.items():
            if nodes[i].node_id not in node.membership.interests.matching(topic):
                return False
    return True


async def subscribed(nodes: list[Node], subs: dict[int, list[str]],
                     wants: dict[int, str]) -> list[list[str]]:
    """Nodes in a line, linked, with ``subs`` (node: topics) subscribed, once every node
    knows the links and ``wants``: the topics each node delivers from then on."""
    await wait_linked(nodes, line_edges(len(nodes)))
    for i, topics in subs.items():
        subscribe(nodes[i], topics)
    await wait_until(lambda: knows_everything(nodes, wants))
    got: list[list[str]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        node.on_deliver.append(lambda msg, i=i: got[i].append(msg.topic))
    return got


async def test_a_routed_message_reaches_only_the_way_to_its_subscribers(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with interest_line(short_tmp, 5) as nodes:
            got = await subscribed(nodes, {2: ["a"], 4: ["b/+"]}, {2: "a", 4: "b/x"})
            nodes[0].publish("a", b"1")
            nodes[0].publish("b/x", b"2")
            nodes[0].publish("nobody", b"3")
            await wait_until(lambda: "a" in got[2] and "b/x" in got[4])
            await trio.sleep(1)
            assert got[2] == ["a"]
            assert got[4] == ["b/x"]
            assert got[3] == []  # passed "b/x" on, delivered nothing
            stats = [node.router.interest.stats for node in nodes]  # type: ignore[union-attr]
            assert [s.wanted for s in stats] == [0, 0, 1, 0, 1]
            assert [s.relayed for s in stats] == [0, 2, 1, 1, 0]  # "a" via 1; "b/x" via 1-3
            assert nodes[0].router.interest.stats.unwanted == 1  # type: ignore[union-attr]
            # the "a" batch went no further than node 2
            assert nodes[3].router.stats.received == nodes[4].router.stats.received


async def ring_first_message(nodes: list[Node], edges: list[tuple[int, int]]
                             ) -> list[bytes]:
    """Nodes linked by ``edges``, node 2 subscribed to "a": once every node knows the
    links and the subscription, node 0 publishes "a" b"0" and node 2 delivers it. The
    list of what node 2 delivers (b"0" so far)."""
    await wait_linked(nodes, edges)
    subscribe(nodes[2], ["a"])
    await wait_until(lambda: knows_everything(nodes, {2: "a"}, edges))
    got: list[bytes] = []
    nodes[2].on_deliver.append(lambda msg: got.append(msg.data))
    nodes[0].publish("a", b"0")
    await wait_until(lambda: got == [b"0"])
    return got


async def test_a_message_lost_with_a_link_is_fetched_and_the_way_round_taken(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    edges = ring_edges(6)  # 0-1-2-3-4-5-0: from 0 to 2 by 1, or by 5, 4, 3
    with trio.fail_after(120):
        async with interest_mesh(short_tmp, edges, 6, net) as nodes:
            got = await ring_first_message(nodes, edges)
            net.sim.cut_path(2, 3)  # nodes 1 and 2: what is sent is never read
            nodes[0].publish("a", b"1")  # lost with the link
            one = nodes[2].node_id
            await wait_until(lambda: all(
                frozenset((nodes[1].node_id, one)) not in {frozenset(e) for e in n.routes.edges()}
                for n in nodes[:1] + nodes[3:]))  # the link timed out, everyone knows it
            nodes[0].publish("a", b"2")  # the way round; its tprev shows the gap
            await wait_until(lambda: len(got) == 3)
            assert got == [b"0", b"1", b"2"]  # "1" fetched, in order
            two = nodes[2].router
            assert two.streams.stats.gaps == 0
            assert two.fetches.stats.asked == 1


async def test_a_node_with_an_all_topics_subscriber_gets_every_routed_message(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with interest_line(short_tmp, 4) as nodes:
            got = await subscribed(nodes, {1: ["a"], 3: []}, {1: "a", 3: "b/x"})  # 3: all
            assert all(n.membership.interests.of(nodes[3].node_id) is None for n in nodes)
            for topic in ("a", "b/x", "c/d/e"):
                nodes[0].publish(topic, b"1")
            await wait_until(lambda: len(got[3]) == 3)
            await trio.sleep(1)
            assert got[3] == ["a", "b/x", "c/d/e"]
            assert got[1] == ["a"]
            assert got[2] == []  # passed everything on to node 3, delivered nothing
            stats = [node.router.interest.stats for node in nodes]  # type: ignore[union-attr]
            assert [s.wanted for s in stats] == [0, 1, 0, 3]
            assert [s.relayed for s in stats] == [0, 2, 3, 0]
