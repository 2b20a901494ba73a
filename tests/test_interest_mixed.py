"""Nodes of one mesh in different ``--gossip`` modes (docs/interest.md, "Mixed
modes"): interest-mode nodes with tree- and flood-mode nodes, in memory and virtual
time. Every node that wants a topic gets each message once, in order per origin and
topic, whoever publishes and whatever mode the nodes between are in."""

from __future__ import annotations

import random
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.node import Node
from p2pnode.testing import (
    random_connected_edges,
    wait_linked,
    wait_until,
)

from .test_interest_mode_node import interest_mesh, subscribe


def mixed_mesh(tmp: Path, edges: list[tuple[int, int]], modes: list[str]
               ) -> AbstractAsyncContextManager[list[Node]]:
    return interest_mesh(tmp, edges, len(modes), modes=modes, seed=41)


LINE = [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize("modes", [
    ["interest", "tree", "interest", "tree", "interest"],
    ["tree", "interest", "tree", "interest", "flood"],
    ["interest", "interest", "flood", "interest", "interest"],
])
async def test_every_interested_node_gets_every_message_whatever_the_modes(
    short_tmp: Path, autojump_clock: trio.testing.MockClock, modes: list[str],
) -> None:
    with trio.fail_after(120):
        async with mixed_mesh(short_tmp, LINE, modes) as nodes:
            await wait_linked(nodes, LINE)
            for i in (1, 2, 3, 4):
                subscribe(nodes[i], ["a"] if i % 2 else ["b/+"])
            await trio.sleep(5)  # every node knows every link list and record
            got: list[list[tuple[str, bytes]]] = [[] for _ in nodes]
            for i, node in enumerate(nodes):
                node.on_deliver.append(
                    lambda msg, i=i: got[i].append((msg.topic, msg.data)))
            sent: dict[str, list[tuple[str, bytes]]] = {"a": [], "b/x": []}
            start = trio.current_time()
            for k in range(40):
                pub = nodes[(0, 4, 2)[k % 3]]
                topic = ("a", "b/x")[k % 2]
                pub.publish(topic, b"%d" % k)
                sent[topic].append((topic, b"%d" % k))
                await trio.sleep(0.05)

            def mine(i: int) -> list[tuple[str, bytes]]:
                return [m for m in got[i] if m[0] == ("a" if i % 2 else "b/x")]

            await wait_until(lambda: all(
                len(mine(i)) >= len(sent["a" if i % 2 else "b/x"]) for i in (1, 2, 3, 4)))
            took = trio.current_time() - start
            await trio.sleep(3)
            for i in (1, 2, 3, 4):
                want = sent["a" if i % 2 else "b/x"]
                assert sorted(mine(i)) == sorted(want), (i, modes[i])  # each once
                for pub in (0, 1, 2):  # in order per publisher
                    assert ([d for _, d in mine(i) if int(d) % 3 == pub]
                            == [d for _, d in want if int(d) % 3 == pub])
            assert took < 3  # (publishing alone takes 2 s)
            assert all(n.router.streams.stats.gaps == n.router.order.stats.gaps == 0
                       for n in nodes)


@pytest.mark.parametrize("seed", [2, 6, 9])
async def test_a_random_mesh_of_random_modes(
    short_tmp: Path, autojump_clock: trio.testing.MockClock, seed: int,
) -> None:
    """12 nodes of degree 3, each in interest (half), tree or flood mode; half of them
    subscribe to one of three topics; 60 messages from random publishers."""
    rng = random.Random(seed)
    n = 12
    edges = random_connected_edges(n, 3, seed)
    modes = [rng.choice(["interest", "interest", "tree", "flood"]) for _ in range(n)]
    topics = ["t0", "t1", "t2"]
    wants = {i: rng.sample(topics, 1) for i in range(n) if rng.random() < 0.5}
    with trio.fail_after(300):
        async with mixed_mesh(short_tmp, edges, modes) as nodes:
            await wait_linked(nodes, edges)
            for i, t in wants.items():
                subscribe(nodes[i], t)
            await trio.sleep(5)
            got: list[list[tuple[str, bytes, float]]] = [[] for _ in nodes]
            for i, node in enumerate(nodes):
                node.on_deliver.append(
                    lambda msg, i=i: got[i].append((msg.topic, msg.data, trio.current_time())))
            sent: list[tuple[str, bytes, float]] = []
            for k in range(60):
                pub = rng.randrange(n)
                topic = rng.choice(topics)
                nodes[pub].publish(topic, b"%d:%d" % (pub, k))
                sent.append((topic, b"%d:%d" % (pub, k), trio.current_time()))
                await trio.sleep(0.05)
            await trio.sleep(10)
            worst = 0.0
            for i, t in wants.items():
                want = [(s[0], s[1]) for s in sent if s[0] in t]
                mine = [(g[0], g[1]) for g in got[i] if g[0] in t]
                assert sorted(mine) == sorted(want), (i, modes[i], len(mine), len(want))
                for pub in range(n):  # in order per origin and topic
                    for topic in t:
                        order = [d for tp, d in mine if tp == topic and d.startswith(b"%d:" % pub)]
                        assert order == [d for tp, d in want
                                         if tp == topic and d.startswith(b"%d:" % pub)]
                at = {s[1]: s[2] for s in sent}
                worst = max([worst, *(g[2] - at[g[1]] for g in got[i])])
            assert worst < 1.0  # no message waited for a repair
            assert all(n.router.streams.stats.gaps == n.router.order.stats.gaps == 0
                       for n in nodes)
