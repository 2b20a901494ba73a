"""A join's burst of member records against the per-link limit (``member_rate``): copies
of known records cost next to nothing, and records dropped for the rate are asked for
again within seconds, not at the next periodic sync (docs/protocol.md, "Spreading";
issue 18's 1,000-node join, docs/performance.md).

On the code before this, a node whose first link answered its digest with more
records than one burst (400) kept the rest missing until a periodic sync (15-45 s),
and the copies of a join's records flooded over every link used up each link's
burst: a 1,000-node join took 72.7 s to converge."""

from __future__ import annotations

import random

import trio
import trio.testing

from p2pnode.members.records import MemberBody, sign_member
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, make_identity, memory_config, wait_until
from p2pnode.wire.messages import Members, SignedMember, encode_message

from .hostile import HostilePeer


def fakes(count: int) -> list[SignedMember]:
    """Records of made-up members (each signed with its own key)."""
    out = []
    for i in range(count):
        who = make_identity(random.Random(20_000 + i))
        body = MemberBody(f"m{i}", [f"10.8.{i % 250}.{i // 250}:7420"], 6, "open", {}, 1)
        out.append(sign_member(who, body))
    return out


async def start(nursery: trio.Nursery, net: MemoryNetwork, i: int, **over: object) -> Node:
    node = Node(memory_config(i, **over), transport=net.transport(),
                identity=make_identity(random.Random(i)), api=False)
    await nursery.start(node.run)
    return node


async def test_a_digest_answer_over_the_burst_arrives_within_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A joins through B, which knows 700 members: B's answer to A's digest is 700
    records, over A's burst for that link (400). A takes what the burst allows and
    asks B again 2 s later for the rest: it knows all within seconds."""
    records = fakes(700)
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            b = await start(nursery, net, 0)
            for i in range(0, len(records), 64):
                b.membership.receive(Members(records[i:i + 64]), b"x" * 16,
                                     trio.current_time())
            assert len(b.membership.members()) == 701
            a = await start(nursery, net, 1, peers=(("mem", 1),))
            t0 = trio.current_time()
            await wait_until(lambda: a.members_glue.stats.rate_limited > 0)
            with trio.fail_after(8):  # the periodic sync comes 15-45 s after the start
                await wait_until(lambda: len(a.membership.members()) == 702)
            assert trio.current_time() - t0 < 5
            nursery.cancel_scope.cancel()


async def test_copies_of_known_records_cost_next_to_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same 64 records 12 times over one link (as a join's flood brings each record
    over every link), then 64 new ones: none is dropped for the rate (200 per second,
    bursts of 400), and a link that sends new records past the burst gets limited."""
    records = fakes(64 * 9)
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, net, 0)
            async with await HostilePeer.connect_memory(net, node) as peer:
                copies = encode_message(Members(records[:64]))
                await peer.send_raw(copies * 12 + encode_message(Members(records[64:128])))
                await wait_until(lambda: len(node.membership.members()) == 129)
                assert node.members_glue.stats.rate_limited == 0
                assert node.membership.table.stats.stale == 64 * 11
                # New records past the burst: the rest is dropped, the link stays up.
                await peer.send_raw(b"".join(encode_message(Members(records[i:i + 64]))
                                            for i in range(128, 64 * 9, 64)))
                await wait_until(lambda: node.members_glue.stats.rate_limited > 0)
                assert 129 + 200 < len(node.membership.members()) < 129 + 448
                assert node.links is not None
                assert len(node.links.links) == 1
            nursery.cancel_scope.cancel()
