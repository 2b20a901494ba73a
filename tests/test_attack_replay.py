"""Issue 12, defect 5: a member must not be able to replay old messages by flushing the
node's memory of them. The real node code over the in-memory network, in virtual time;
the attacker is a hand-made peer that speaks the wire protocol."""

from __future__ import annotations

import random

import msgspec
import trio
import trio.testing

from p2pnode.gossip.signing import make_batch
from p2pnode.identity import NodeIdentity
from p2pnode.testing import (
    MemoryNetwork,
    make_identity,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import Batch, Item, decode_body, encode_message

from .hostile import HostilePeer

SEEN = 2_000  # a small seen-cache, so that the flood is short; the attack is the same


def own_batch(identity: NodeIdentity, seq: int, epoch: int = 1) -> Batch:
    batch, _ = make_batch(identity, seq.to_bytes(16, "big"), None,
                          [Item(seq.to_bytes(16, "big"), "flood", b"x")], epoch=epoch, seq=seq)
    return msgspec.structs.replace(batch, hops=1)


async def send_paced(stream: trio.abc.Stream, batches: list[Batch], per_send: int) -> None:
    """Send ``batches`` in groups, a virtual second apart: under every rate limit."""
    for i in range(0, len(batches), per_send):
        await stream.send_all(b"".join(encode_message(b) for b in batches[i:i + per_send]))
        await trio.sleep(1.0)


async def test_flushing_the_seen_cache_and_the_origin_table_does_not_allow_a_replay(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            a, b = await start_memory_mesh(nursery, [(1, 0)], 2, network=net, seed=12,
                                           seen_max_entries=SEEN)
            await wait_linked([a, b], [(1, 0)])
            got: list[bytes] = []
            a.on_deliver.append(lambda msg: got.append(msg.id) if msg.topic == "t" else None)
            mallory = make_identity(random.Random(666))
            peer = await HostilePeer.connect_memory(net, a, identity=mallory)
            stream = peer.stream
            msg_hex, _ = b.publish("t", b"pay 100 to mallory")
            b.flush()
            await wait_until(lambda: len(got) == 1)
            # The attacker, a member linked to A, gets B's genuine signed batch from A.
            while True:
                genuine = await peer.wait_for(Batch)
                if genuine.origin == b.node_id and bytes.fromhex(msg_hex) in [
                        item.id for item in decode_body(genuine.body, 1 << 20).items]:
                    break
            # 1. Flush A's seen-cache with batches of its own.
            await send_paced(stream, [own_batch(mallory, k) for k in range(1, SEEN + 200)],
                             per_send=2_000)
            assert genuine.origin + genuine.id not in a.router.seen
            # 2. Flush the origin table with throw-away identities (made-up origins), paced
            # under the new-origin rate limit; more than the old table held.
            rng = random.Random(7)
            throwaway = [own_batch(make_identity(rng), 1) for _ in range(4_200)]
            await send_paced(stream, throwaway, per_send=100)
            # 3. Replay B's old batch.
            await stream.send_all(encode_message(msgspec.structs.replace(genuine, hops=1)))
            await stream.send_all(encode_message(own_batch(mallory, SEEN + 500)))  # a marker
            await wait_until(lambda: a.router.order.stats.held + a.router.stats.received
                             >= SEEN + 200 + 4_200 + 2)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [bytes.fromhex(msg_hex)], "B's old message was delivered again"
            assert a.router.order.knows(b.node_id)  # B's run was not pushed out
            assert a.router.order.owned_by(mallory.node_id) <= 4096
            assert a.router.order.stats.stale >= 1
            await peer.aclose()
            nursery.cancel_scope.cancel()


async def test_a_peer_bringing_new_origins_too_fast_is_limited(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            (a,) = await start_memory_mesh(nursery, [], 1, network=net, seed=3)
            mallory = make_identity(random.Random(1))
            peer = await HostilePeer.connect_memory(net, a, identity=mallory)
            stream = peer.stream
            rng = random.Random(2)
            burst = [own_batch(make_identity(rng), 1) for _ in range(1_500)]
            await stream.send_all(b"".join(encode_message(x) for x in burst))
            await wait_until(lambda: a.router.stats.received >= 1_500)
            stats = a.router.stats
            # The burst allowance (1,024) got in; the rest was dropped, not remembered.
            assert a.router.order.tracked == 1_024
            assert stats.new_origin_limited == 1_500 - 1_024
            late = burst[-1]
            assert late.origin + late.id not in a.router.seen
            # A second later the bucket has refilled by 100 (and a little for the time the
            # polls took): about 100 more get in.
            await trio.sleep(1.0)
            await stream.send_all(b"".join(encode_message(x) for x in burst[1_024:1_200]))
            await wait_until(lambda: a.router.stats.received >= 1_676)
            assert 1_124 <= a.router.order.tracked <= 1_127
            assert a.status_info().security.new_origin_limited == stats.new_origin_limited
            await peer.aclose()
            nursery.cancel_scope.cancel()
