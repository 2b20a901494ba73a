"""Interests on running nodes (docs/interest.md): what local apps subscribe to goes in
the node's member record and reaches every other node (in memory, virtual time), a
burst of subscribes costs at most a record a second, durable subscriptions count
(across a restart too), and the ``members`` reply and ``status`` show it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from p2pnode.api.session import Session
from p2pnode.members.records import member_id
from p2pnode.node import Node
from p2pnode.node.interests import INTEREST_EVERY
from p2pnode.testing import (
    MemoryNetwork,
    make_identity,
    memory_config,
    start_memory_mesh,
    wait_until,
)
from p2pnode.wire.messages import Members

from .conftest import loopback_config, running_nodes
from .hostile import HostilePeer
from .test_durable import Conn
from .test_interest import raw_record


@asynccontextmanager
async def api_mesh(tmp: Path, n: int) -> AsyncIterator[list[Node]]:
    """``n`` nodes in a line on a memory network, each with its API (a socket under
    ``tmp`` that no one connects to: the tests subscribe sessions directly)."""
    net = MemoryNetwork()
    rng = random.Random(19)
    async with trio.open_nursery() as nursery:
        nodes = []
        for i in range(n):
            peers = (("mem", i),) if i else ()
            cfg = memory_config(i, peers=peers, socket_path=tmp / f"{i}.sock")
            node = Node(cfg, transport=net.transport(), identity=make_identity(rng))
            await nursery.start(node.run)
            nodes.append(node)
        yield nodes
        nursery.cancel_scope.cancel()


def subscribe(node: Node, topics: list[str]) -> Session:
    """A local app's session on ``node`` that subscribes to ``topics``."""
    assert node.api is not None
    session = Session(node.config)
    node.api._subscribe(session, topics, None)
    return session


async def test_a_local_subscribe_reaches_every_node(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with api_mesh(short_tmp, 4) as nodes:
            first, last = nodes[0], nodes[-1]
            everyone = {n.node_id for n in nodes}
            await wait_until(lambda: all(len(n.membership.interests) == 4 for n in nodes))
            # An API node with no subscriber wants nothing, and says so.
            assert all(n.membership.interests.matching("sensors/a/temp") == frozenset()
                       for n in nodes)
            start = trio.current_time()
            subscribe(last, ["sensors/+/temp"])
            await wait_until(lambda: all(
                n.membership.interests.matching("sensors/a/temp") == {last.node_id}
                for n in nodes))
            assert trio.current_time() - start < 1.0  # 3 hops of flooding: well under
            assert last.membership.me.interests == ["sensors/+/temp"]
            # An all-topics subscriber on the first node: every node sees it.
            session = subscribe(first, [])
            await wait_until(lambda: all(
                n.membership.interests.matching("other") == {first.node_id} for n in nodes))
            assert trio.current_time() - start < 3.0  # the first node's first change: at once
            # It goes: the first node wants nothing again (after its second wait at most).
            assert first.api is not None
            first.api._unsubscribe(session, [])
            await wait_until(lambda: all(
                n.membership.interests.matching("other") == frozenset() for n in nodes))
            assert trio.current_time() - start < 3.0 + INTEREST_EVERY
            assert all(n.membership.interests.matching("sensors/b/temp") == {last.node_id}
                       for n in nodes)
            assert everyone == {m.node_id for m in last.membership.members()}


async def test_a_burst_of_subscribes_costs_at_most_a_record_a_second(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with api_mesh(short_tmp, 2) as (node, other):
            await wait_until(lambda: len(other.membership.interests) == 2)
            await trio.sleep(5)  # settled
            me = node.membership.me
            start_inc, start = me.incarnation, trio.current_time()
            a, b = Session(node.config), Session(node.config)
            assert node.api is not None
            for i in range(100):  # 100 subscribes within 1 s: 50 topics, twice each
                node.api._subscribe(a if i % 2 else b, [f"t/{i // 2}"], None)
                await trio.sleep(0.0099)
            assert trio.current_time() - start < INTEREST_EVERY
            assert me.incarnation - start_inc <= 2  # the first subscribe's record, at most
            await trio.sleep(INTEREST_EVERY + 0.1)
            assert me.incarnation - start_inc == 2  # ... and the rest's, a second later
            assert me.interests == sorted(f"t/{i}" for i in range(50))
            await wait_until(lambda: other.membership.interests.of(node.node_id)
                             == tuple(sorted(f"t/{i}" for i in range(50))))
            await trio.sleep(10)
            assert me.incarnation - start_inc == 2  # nothing more without a change


async def test_the_members_reply_and_status_show_interests(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a")
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            conn = Conn(await trio.open_unix_socket(str(config.socket_path)))
            status = await conn.reply({"op": "status"})
            assert status["members"]["interests"] == 0
            assert (await conn.reply({"op": "subscribe", "topics": ["b", "a/+"]}))["ok"]
            await trio.testing.wait_all_tasks_blocked()  # the node's task changed the record
            (me,) = (await conn.reply({"op": "members"}))["members"]
            assert me["interests"] == ["a/+", "b"]
            assert (await conn.reply({"op": "status"}))["members"]["interests"] == 2
            assert node.membership.me.interests == ["a/+", "b"]
            await conn.stream.aclose()


async def test_durable_subscriptions_count_from_the_start(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a")
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            conn = Conn(await trio.open_unix_socket(str(config.socket_path)))
            reply = await conn.reply({"op": "subscribe", "topics": ["orders/#"],
                                      "durable": "d"})
            assert reply["ok"], reply
            await conn.stream.aclose()  # the subscriber goes; the subscription stays
            await trio.testing.wait_all_tasks_blocked()
            assert node.membership.me.interests == ["orders/#"]
        async with running_nodes([config]) as (node,):  # a restart: read from the store
            assert node.membership.me.interests == ["orders/#"]
            conn = Conn(await trio.open_unix_socket(str(config.socket_path)))
            reply = await conn.reply({"op": "unsubscribe", "durable": "d", "delete": True})
            assert reply["ok"], reply
            await trio.testing.wait_all_tasks_blocked()
            assert node.membership.me.interests == []
            await conn.stream.aclose()


async def test_the_api_says_each_subscription_once_while_a_session_or_durable_has_it(
    short_tmp: Path,
) -> None:
    node = Node(memory_config(0, socket_path=short_tmp / "0.sock"),
                transport=MemoryNetwork().transport(), identity=make_identity(random.Random(1)))
    api = node.api
    assert api is not None
    calls: list[None] = []
    api.on_interest = lambda: calls.append(None)
    a, b = subscribe(node, ["x/+", "y"]), subscribe(node, ["x/+"])
    assert api.interest() == ["x/+", "y"]
    api._unsubscribe(a, ["x/+"])
    assert api.interest() == ["x/+", "y"]  # b still has it
    api._unsubscribe(b, [])
    assert api.interest() == ["y"]
    api.durables.topics["d"] = ("z/#",)
    assert api.interest() == ["y", "z/#"]
    api.durables.topics["e"] = ()  # a durable subscription of every topic
    assert api.interest() is None
    del api.durables.topics["e"]
    subscribe(node, [])  # an all-topics session
    assert api.interest() is None
    assert len(calls) == 5  # each subscribe and unsubscribe
    assert node.membership.me.interests == []  # the record at the start: no subscriber


async def test_a_member_record_with_a_bad_interest_closes_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            [node] = await start_memory_mesh(nursery, [], 1, network=net)
            async with await HostilePeer.connect_memory(net, node) as peer:
                good = raw_record(make_identity(random.Random(5)), ["ok/+"])
                bad = raw_record(peer.identity, ["ok", "a/#/b"])  # validly signed
                await peer.send_message(Members([good]))
                await peer.send_message(Members([bad]))
                while await peer.receive() is not None:
                    pass
            assert node.links is not None
            await wait_until(lambda: node.links is not None and not node.links.links)
            assert node.links.stats.closed["bad_message"] == 1
            assert node.members_glue.stats.bad == 1
            interests = node.membership.interests
            assert peer.identity.node_id not in {m.node_id for m in node.membership.members()}
            assert interests.matching("ok/1") == {node.node_id, member_id(good)}
            assert interests.matching("a/x/b") == {node.node_id}  # this node: every topic
            nursery.cancel_scope.cancel()
