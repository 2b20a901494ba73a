"""A hostile member against the member list: a flood of fake (validly signed) members,
forged signatures, frames over the bounds, digests asked for over and over. The node's
state stays bounded, and the link is closed with a clear reason where the peer broke
the protocol (docs/protocol.md, "Membership"; docs/security.md)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import trio
import trio.testing

from p2pnode.members.records import MemberBody, sign_member
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, make_identity, start_memory_mesh, wait_until
from p2pnode.wire.frames import encode_frame
from p2pnode.wire.messages import MemberDigest, Members, SignedMember, encode_message

from .hostile import HostilePeer


def fake(i: int, *, addrs: int = 1) -> SignedMember:
    """A member record of a made-up member (its own key: validly signed)."""
    who = make_identity(random.Random(10_000 + i))
    body = MemberBody(f"fake{i}", [f"10.9.{i % 250}.{i // 250}:7420"] * addrs, 6, "open",
                      {"role": "x" * 200}, 1)
    return sign_member(who, body)


@asynccontextmanager
async def lone_node(**overrides: object) -> AsyncIterator[tuple[MemoryNetwork, Node]]:
    """One node on a memory network (for a hostile peer to attack), for the block."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            [node] = await start_memory_mesh(nursery, [], 1, network=net, **overrides)
            yield net, node
            nursery.cancel_scope.cancel()


async def test_a_flood_of_fake_members_is_rate_limited_and_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records = [fake(i) for i in range(1600)]
    async with lone_node(max_members=300, member_rate=50.0) as (net, node):
        async with await HostilePeer.connect_memory(net, node) as peer:
            for i in range(0, 640, 64):  # 640 records at once: over the burst of 100
                await peer.send_message(Members(records[i:i + 64]))
            await wait_until(lambda: node.members_glue.stats.rate_limited > 0)
            assert len(node.membership.members()) <= 1 + 100
            for i in range(640, 1600, 64):  # then more, 2 s apart: 100 each time
                await trio.sleep(2)
                await peer.send_message(Members(records[i:i + 64]))
            await trio.sleep(1)
            stats = node.membership.table.stats
            assert len(node.membership.members()) == 300  # max_members, this node included
            assert stats.refused > 0
            assert node.members_glue.stats.rate_limited >= 540
            assert node.links is not None
            assert len(node.links.links) == 1  # dropping is not a protocol error


async def test_a_forged_record_closes_the_link(autojump_clock: trio.testing.MockClock) -> None:
    async with lone_node() as (net, node):
        async with await HostilePeer.connect_memory(net, node) as peer:
            forged = msgspec.structs.replace(fake(1), sig=bytes(64))
            # In one write: what follows the forged record in the same read is not taken.
            await peer.send_raw(encode_message(Members([fake(0), forged]))
                                + encode_message(Members([fake(2)])))
            while await peer.receive() is not None:
                pass
        assert node.links is not None
        await wait_until(lambda: node.links is not None and not node.links.links)
        assert node.links.stats.closed["bad_signature"] == 1
        assert node.members_glue.stats.bad == 1
        assert {m.name for m in node.membership.members()} == {"n0", "fake0"}


async def test_frames_over_the_bounds_close_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with lone_node() as (net, node):
        assert node.links is not None
        too_many = msgspec.msgpack.encode(Members([fake(0)] * 65))
        nine_addrs = fake(1, addrs=9)  # a record body over its bounds
        for frame in (encode_frame(too_many), encode_frame(msgspec.msgpack.encode(
                Members([nine_addrs])))):
            async with await HostilePeer.connect_memory(net, node) as peer:
                await peer.send_raw(frame)
                while await peer.receive() is not None:
                    pass
        await wait_until(lambda: sum(node.links.stats.closed.values()) == 2)
        assert node.links.stats.closed["bad_message"] == 2
        assert len(node.membership.members()) == 1


async def test_digests_asked_for_over_and_over_are_answered_a_few_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with lone_node() as (net, node):
        async with await HostilePeer.connect_memory(net, node) as peer:
            await peer.wait_for(MemberDigest)  # the node's own, as the link opened
            for _ in range(100):
                await peer.send_message(MemberDigest([], ask=True))
            await trio.sleep(1)
            sent = node.members_glue.stats.frames_sent
            assert sent <= 1 + 2 * 4  # its digest, then 4 answers (+ digests) at most
            assert node.members_glue.stats.rate_limited >= 96
