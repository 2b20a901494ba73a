"""A hostile member against interest routing (docs/interest.md, "Bounds and attackers";
docs/security.md): it says it wants every topic (``all``, or 64 wildcard patterns that
match everything), or changes what it wants as fast as its link lets it. Six honest
nodes in a ring, in interest mode, in memory and virtual time; the attacker is a
member linked to one of them, with a signed record and a ``$mesh`` link list of its
own, so that every node routes toward it.

What the honest nodes pay is measured, and must stay within the bounds the docs
claim: an ``all`` member costs one branch of each tree (the nodes between the tree
and it), not the mesh; a member that changes its interest over and over costs the
node it links to its records at ``member_rate``, every other node at most
``record_burst`` records and then ``record_rate`` a second, each node at most
``INTEREST_BURST`` index updates and then ``INTEREST_RATE`` a second, and a tree is
computed again only when the members it must reach changed."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio
import trio.testing

from p2pnode import PROTOCOL_VERSION
from p2pnode.gossip.interest import MAX_PATTERNS
from p2pnode.gossip.signing import make_batch
from p2pnode.members.interestgate import INTEREST_BURST, INTEREST_RATE
from p2pnode.members.records import MemberBody, sign_member
from p2pnode.mesh.linklist import MESH_TOPIC, encode_link_list
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, ring_edges, wait_linked, wait_until
from p2pnode.wire.messages import (
    MAX_MEANT,
    MEANT_PREFIX,
    Batch,
    Item,
    Members,
    Ping,
    Pong,
    decode_kept_body,
)

from .hostile import HostilePeer
from .test_interest_mode_node import interest_mesh, subscribe

N = 6
SECONDS = 10  # how long the attacker changes its interest
EDGES = ring_edges(N)  # 0-1-2-3-4-5-0
HOST = 3  # the honest node the attacker links to
#: 64 patterns, one of which matches every app topic (not said as "all").
WILDCARDS = ["+/#", *(f"x{i}/#" for i in range(MAX_PATTERNS - 1))]


@dataclass
class Attacker:
    """A member that speaks for itself by hand: its record, its link list, and a reader
    that answers Pings (so its link stays up) and counts the routed batches it gets."""

    peer: HostilePeer
    host: Node
    incarnation: int = 1
    got: dict[str, int] = field(default_factory=dict)  # routed batches per topic
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def node_id(self) -> bytes:
        return self.peer.node_id

    async def say(self, *interests: list[str] | None) -> None:
        """A record for each of ``interests``, each with a new incarnation, in one frame."""
        records = []
        for interest in interests:
            self.incarnation += 1
            body = MemberBody("hostile", ["mem:99"], PROTOCOL_VERSION, self.host.network_tag,
                              {}, self.incarnation, "alive", interest)
            records.append(sign_member(self.peer.identity, body))
        await self.peer.send_message(Members(records))

    async def announce_links(self) -> None:
        """Its link list (the honest node it is linked to), every second, as nodes do."""
        while True:
            seq = next(self._seq)
            links = encode_link_list("hostile", "mem:99", [self.host.node_id], seq)
            try:
                await self.peer.send_message(
                    self.peer.batch((MESH_TOPIC, links), epoch=1, seq=seq))
            except trio.BrokenResourceError:
                return  # the node closed the link
            await trio.sleep(1.0)

    async def read(self) -> None:
        while (msg := await self.peer.receive()) is not None:
            if isinstance(msg, Ping):
                await self.peer.send_message(Pong(msg.time))
            elif isinstance(msg, Batch):
                topic = decode_kept_body(msg.body).items[0].topic
                if not topic.startswith("$"):
                    self.got[topic] = self.got.get(topic, 0) + 1


@asynccontextmanager
async def attacked_ring(tmp: Path, interest: list[str] | None
                        ) -> AsyncIterator[tuple[list[Node], Attacker]]:
    """The ring, node 1 subscribed to ``a``, and the attacker linked to node ``HOST``
    saying ``interest``; everyone knows every link and interest when the block starts."""
    net = MemoryNetwork()
    async with interest_mesh(tmp, EDGES, N, net) as nodes, trio.open_nursery() as nursery:
        await wait_linked(nodes, EDGES)
        subscribe(nodes[1], ["a"])
        host = nodes[HOST]
        peer = await HostilePeer.connect_memory(net, host, seed=666)
        attacker = Attacker(peer, host)
        nursery.start_soon(attacker.read)
        await attacker.say(interest)
        nursery.start_soon(attacker.announce_links)
        edge = frozenset((host.node_id, attacker.node_id))
        await wait_until(lambda: all(
            edge in {frozenset(e) for e in n.routes.edges()}
            and attacker.node_id in n.membership.interests.matching("b")
            and nodes[1].node_id in n.membership.interests.matching("a")
            and len(n.routes.edges()) == N + 1 for n in nodes))
        yield nodes, attacker
        nursery.cancel_scope.cancel()
        await peer.aclose()


def relayed(nodes: list[Node]) -> list[int]:
    """Routed batches each node received only to pass on."""
    return [n.router.interest.stats.relayed for n in nodes]  # type: ignore[union-attr]


def hops(start: set[int], target: int) -> int:
    """Hops from the nearest of ``start`` to ``target`` on the ring plus the attacker
    (``N``, linked to ``HOST``)."""
    adj: dict[int, set[int]] = {i: set() for i in range(N + 1)}
    for a, b in [*EDGES, (HOST, N)]:
        adj[a].add(b)
        adj[b].add(a)
    dist = dict.fromkeys(start, 0)
    frontier = list(start)
    while frontier:
        nxt = []
        for u in frontier:
            for v in adj[u] - dist.keys():
                dist[v] = dist[u] + 1
                nxt.append(v)
        frontier = nxt
    return dist[target]


def routed_in(nodes: list[Node]) -> list[int]:
    """Routed batches each node received (for its apps, or to pass on)."""
    stats = [n.router.interest.stats for n in nodes]  # type: ignore[union-attr]
    return [s.wanted + s.relayed for s in stats]


def since(before: list[int], now: list[int]) -> list[int]:
    return [b - a for a, b in zip(before, now, strict=True)]


async def publish_each(node: Node, topic: str, count: int) -> None:
    for k in range(count):
        node.publish(topic, b"%d" % k)
        await trio.sleep(0.05)  # one batch each


async def all_or_wildcards(tmp: Path, interest: list[str] | None) -> None:
    with trio.fail_after(120):
        async with attacked_ring(tmp, interest) as (nodes, attacker):
            got: list[bytes] = []
            nodes[1].on_deliver.append(lambda msg: got.append(msg.data))
            before = relayed(nodes)
            await publish_each(nodes[0], "a", 20)  # wanted by node 1 and the attacker
            await wait_until(lambda: attacker.got.get("a") == 20 and len(got) == 20)
            after_a = relayed(nodes)
            await publish_each(nodes[0], "b", 20)  # wanted by the attacker alone
            await wait_until(lambda: attacker.got.get("b") == 20)
            await trio.sleep(2)  # anything else on its way arrives
            after_b = relayed(nodes)
            assert got == [b"%d" % k for k in range(20)]  # node 1: each once, in order
            assert attacker.got == {"a": 20, "b": 20}  # it pays: it gets every batch
            # The mesh pays one branch per batch: the honest nodes between the tree of
            # those who want the topic and the attacker; every other node nothing.
            spent_a = sum(after_a) - sum(before)  # (node 1 wants "a": it relays nothing)
            spent_b = sum(after_b) - sum(after_a)
            assert spent_a == 20 * (hops({0, 1}, N) - 1)  # 1-2-3-attacker: 2, 3
            assert spent_b == 20 * (hops({0}, N) - 1)  # 3 nodes on the way to it
            assert [after_a[i] - before[i] for i in (4, 5)] == [0, 0]  # off the branch
            assert [after_b[i] - after_a[i] for i in (1, 2, 3, 4, 5)].count(0) == 2


async def test_a_member_that_wants_everything_costs_one_branch(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    await all_or_wildcards(short_tmp, None)


async def test_64_wildcards_that_match_everything_cost_the_same(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    await all_or_wildcards(short_tmp, WILDCARDS)


async def change_fast(tmp: Path, flips: list[list[str] | None]
                      ) -> tuple[list[int], list[int], float]:
    """The attacker signs records that cycle through ``flips``, 64 a frame, 20 frames a
    second, for ``SECONDS``, while node 0 publishes on "a" (wanted by node 1, and by
    node 5 from half-way on). Returns each honest node's index updates and trees
    computed in that time, and the bound on index updates the docs claim."""
    with trio.fail_after(180):
        async with attacked_ring(tmp, None) as (nodes, attacker):
            got: list[bytes] = []
            nodes[1].on_deliver.append(lambda msg: got.append(msg.data))
            late: list[bytes] = []
            nodes[5].on_deliver.append(lambda msg: late.append(msg.data))
            versions = [n.membership.interests.version for n in nodes]
            computed = [n.routes.computed for n in nodes]
            records = [n.membership.table.stats.records for n in nodes]
            start = trio.current_time()
            cycle = itertools.cycle(flips)

            async def flood() -> None:
                while trio.current_time() - start < SECONDS:
                    await attacker.say(*(next(cycle) for _ in range(64)))
                    await trio.sleep(0.05)  # 1,280 records a second

            async with trio.open_nursery() as attack:
                attack.start_soon(flood)
                for k in range(SECONDS * 10):  # node 0 publishes on "a" meanwhile
                    if k == SECONDS * 5:
                        subscribe(nodes[5], ["a"])  # an honest change during the attack
                    nodes[0].publish("a", b"%d" % k)
                    await trio.sleep(0.1)
            elapsed = trio.current_time() - start
            await trio.sleep(2)
            assert got == [b"%d" % k for k in range(SECONDS * 10)]  # node 1 lost nothing
            # Node 5's subscribe took effect within 2 s, attack or not.
            assert late == [b"%d" % k for k in range(int(late[0]), SECONDS * 10)]
            assert int(late[0]) <= SECONDS * 5 + 20
            taken = since(records, [n.membership.table.stats.records for n in nodes])
            # The node it links to takes its records at the link's member_rate...
            rate = nodes[HOST].config.member_rate
            assert rate * elapsed / 2 <= taken[HOST] <= rate * (elapsed + 2) + 2 * rate
            # ... and floods them on at record_rate: the others take no more than that.
            limits = nodes[HOST].membership.limits
            paced = limits.record_burst + limits.record_rate * (elapsed + 2) + 1
            assert max(t for i, t in enumerate(taken) if i != HOST) <= paced, (taken, paced)
            updates = since(versions, [n.membership.interests.version for n in nodes])
            trees = since(computed, [n.routes.computed for n in nodes])
            status = nodes[HOST].status_info().members  # the host says it held them back
            assert status.records_paced > 0
            assert status.interests_paced > 0
            # Each node applies them to its index at INTEREST_RATE (one more: node 5's).
            bound = INTEREST_BURST + INTEREST_RATE * (elapsed + 2) + 1
            assert max(updates) <= bound, (updates, bound)
            return updates, trees, bound


async def test_a_member_that_changes_its_interest_as_fast_as_it_may(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    updates, trees, bound = await change_fast(short_tmp, [None, [], WILDCARDS, ["a"], ["b/+"]])
    # A tree is computed again only when the members it reaches changed: node 0
    # publishes on one topic, so at most one tree per index update.
    assert updates[HOST] >= bound - 4  # the attacker kept changing what "a" reaches
    assert max(trees) <= bound, trees


async def test_changes_that_do_not_touch_a_topic_cost_its_trees_nothing(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    updates, trees, bound = await change_fast(short_tmp, [[], ["b/+"], ["x"], ["y/#"]])
    assert updates[HOST] >= bound - 4  # its index changed about once a second...
    # ... but node 0 computed the tree of "a" only three times: for the first batch,
    # when the attacker's first record took it out of "a" (it said "all" before), and
    # when node 5 subscribed.
    assert max(trees) <= 3, trees


async def test_names_in_a_pushed_copy_add_no_receiver_and_too_many_close_the_link(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    """The attacker pushes routed batches of its own on "a" (wanted by node 1 only)
    whose ``Batch.meant`` names the honest nodes that do not want "a" and 58 made-up
    members: the host routes them by the tree to node 1 alone (names never add a
    receiver; off the tree they only narrow, tests/test_interest_offtree.py). A copy
    naming 65 members is a bad message: the host closes the link and the mesh goes on."""
    with trio.fail_after(120):
        async with attacked_ring(short_tmp, ["b"]) as (nodes, attacker):
            got: list[bytes] = []
            nodes[1].on_deliver.append(lambda msg: got.append(msg.data))
            others = [n.node_id[:MEANT_PREFIX] for i, n in enumerate(nodes) if i != 1]
            made_up = [bytes([k]) * MEANT_PREFIX for k in range(MAX_MEANT - len(others))]
            before = relayed(nodes)
            received = routed_in(nodes)
            prev = 0
            for seq in range(1, 11):
                batch, _ = make_batch(attacker.peer.identity, attacker.peer.new_id(), None,
                                      [Item(attacker.peer.new_id(), "a", b"%d" % seq)],
                                      epoch=7, seq=seq, tprev=prev)
                prev = seq
                named = msgspec.structs.replace(batch, meant=others + made_up)
                await attacker.peer.send_message(named)
                await trio.sleep(0.05)
            await wait_until(lambda: len(got) == 10)
            await trio.sleep(2)
            assert got == [b"%d" % k for k in range(1, 11)]  # once each, in order
            new = since(received, routed_in(nodes))
            # Only the nodes on the way (3 -> 2 -> 1) got a copy: 0, 4 and 5, named,
            # got none, and relayed none.
            assert [new[i] for i in (0, 4, 5)] == [0, 0, 0], new
            assert since(before, relayed(nodes)) == [0, 0, 10, 10, 0, 0]
            too_many = msgspec.structs.replace(
                make_batch(attacker.peer.identity, attacker.peer.new_id(), None,
                           [Item(attacker.peer.new_id(), "a", b"x")], epoch=7, seq=11,
                           tprev=10)[0],
                meant=[bytes([k]) * MEANT_PREFIX for k in range(MAX_MEANT + 1)])
            await attacker.peer.send_message(too_many)
            host = nodes[HOST]
            await wait_until(lambda: host.links is not None
                             and attacker.node_id not in host.links.links)
            assert got[-1] == b"10"  # not delivered
            nodes[0].publish("a", b"after")
            await wait_until(lambda: got[-1] == b"after")
