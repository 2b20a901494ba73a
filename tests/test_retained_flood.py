"""The retained sync's messages from a hostile member (tests/hostile.py asks this of new
message types): sent out of order, repeatedly and fast, by a peer that never reads the
answers. The node's memory stays bounded (its queue to the peer, what it wants), it
stops answering a peer whose queue is over half full, and the peer is dropped
(``slow_peer``) once the node's writes to it stall.
"""

from __future__ import annotations

import trio
import trio.testing

from p2pnode.gossip.retained import topic_key
from p2pnode.testing import MemoryNetwork, start_memory_mesh, wait_until
from p2pnode.wire.messages import (
    Retained,
    RetainedDigest,
    RetainedKey,
    RetainedWant,
    encode_message,
)

from .hostile import HostilePeer
from .test_ping_flood import Watch

QUEUE = 256 * 1024  # the victim's link_queue_bytes


async def flood(peer: HostilePeer, frames: bytes, every: float, duration: float) -> None:
    """Send ``frames`` every ``every`` seconds for ``duration`` or until the node hangs
    up; never read."""
    with trio.move_on_after(duration):
        while True:
            try:
                await peer.send_raw(frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(every)


async def test_a_flood_of_retained_wants_from_a_peer_that_never_reads(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    net.sim.capacity = 64 * 1024  # what the peer does not read fills its side soon
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            (node,) = await start_memory_mesh(nursery, [], 1, network=net,
                                              link_queue_bytes=QUEUE)
            for k in range(40):  # 40 topics of 1 KiB: an answer to all of them is 50 KiB
                node.publish(f"t{k}", bytes(1024), retain=True)
            await trio.testing.wait_all_tasks_blocked()
            assert node.status_info().retained.topics == 40
            peer = await HostilePeer.connect_memory(net, node)
            assert node.links is not None
            watch = Watch(node.links.links[peer.node_id])
            want = encode_message(RetainedWant([topic_key(f"t{k}") for k in range(40)]))
            async with trio.open_nursery() as attack:
                attack.start_soon(watch.run)
                attack.start_soon(flood, peer, want * 20, 0.01, 60.0)
            assert watch.closed_at is not None, "the link survived the flood"
            assert watch.most_queued <= QUEUE
            status = node.status_info()
            assert status.retained.sync_busy > 0  # not answered while the queue was full
            assert status.links is not None
            assert status.links.closed == {"slow_peer": 1}
            await peer.aclose()
            nursery.cancel_scope.cancel()


async def test_digests_answers_and_wants_out_of_order_keep_memory_bounded(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Digests naming 60,000 made-up topics, answers nobody asked for, and wants for
    topics the node does not hold: what it wants stays within its bound, the answers are
    dropped unread, the wants get empty answers, and the node keeps serving others."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a, b = await start_memory_mesh(nursery, [(1, 0)], 2, network=net)
            peer = await HostilePeer.connect_memory(net, a)
            keys = [RetainedKey(k.to_bytes(16, "big"), 1 << 60, peer.node_id, 100)
                    for k in range(60_000)]
            for i in range(0, len(keys), 2048):
                await peer.send_message(RetainedDigest(keys[i:i + 2048]))
            junk = peer.batch(("t", b"x"))
            for _ in range(100):
                await peer.send_message(Retained([junk] * 50, last=True))
                await peer.send_message(RetainedWant([bytes(16)] * 100))
            await trio.testing.wait_all_tasks_blocked()
            sync = a.retaining.sync
            assert sync.wanting <= sync.max_wants
            assert sync.stats.wants_dropped >= 60_000 - sync.max_wants
            assert a.status_info().retained.sync_unsolicited >= 100 * 50 - 100
            answers = 0
            while answers < 100:
                msg = await peer.receive()
                assert msg is not None
                if isinstance(msg, Retained):
                    assert msg.batches == []
                    answers += 1
            # The node still serves an honest peer.
            a.publish("still", b"here", retain=True)
            await wait_until(lambda: b.retaining.store.get("still") is not None)
            await peer.aclose()
            nursery.cancel_scope.cancel()
