"""Nodes in interest mode (docs/interest.md) over in-memory links, in virtual time: the
publisher's batches per topic and their ``tprev`` links; while the mesh is not known
everything still reaches everyone, once and in order per topic."""

from __future__ import annotations

import trio
import trio.testing

from p2pnode.node import Node
from p2pnode.testing import line_edges, start_memory_mesh, wait_linked, wait_until
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
