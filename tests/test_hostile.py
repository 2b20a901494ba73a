"""The hostile-peer helper itself (tests/hostile.py), against real nodes: it links over
memory and over TCP + TLS, in both handshake roles, and what it sends and reads is what
a node sends and reads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec

from p2pnode.identity import NetworkKey
from p2pnode.testing import (
    MemoryNetwork,
    count_deliveries,
    make_identity,
    start_memory_mesh,
    wait_until,
)
from p2pnode.wire.messages import Digest, Hello, Ping, Pong

from .conftest import loopback_config, running_nodes
from .hostile import HostilePeer, Refused


@pytest.mark.parametrize("claimed", [b"\x00" * 16, b"\xff" * 16],
                         ids=["peer-decides", "node-decides"])
async def test_a_hostile_peer_links_over_memory_and_talks(
    autojump_clock: trio.abc.Clock, claimed: bytes,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (node,) = await start_memory_mesh(nursery, [], 1, network=net)
            got = count_deliveries(node)
            async with await HostilePeer.connect_memory(net, node, node_id=claimed) as peer:
                assert node.links is not None
                assert set(node.links.links) == {claimed}
                assert peer.node_hello is not None
                assert peer.node_hello.node_id == node.node_id
                assert isinstance(await peer.receive(), Digest)  # the node's first word
                await peer.send_message(Ping(12.5))
                assert (await peer.wait_for(Pong)).time == 12.5
                own = peer.batch(("t", b"mine"))
                other = make_identity(random.Random(7))
                relayed = peer.batch(("t", b"relayed"), identity=other, hops=3)
                assert relayed.origin == other.node_id
                for batch in (own, relayed):
                    await peer.send_message(batch)
                await wait_until(lambda: len(got) == 2)
            await wait_until(lambda: not node.links.links)  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_a_hostile_peer_over_tls(short_tmp: Path) -> None:
    network = NetworkKey.open()
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            assert a.listen_addr is not None
            host, port = a.listen_addr
            # Claiming an id that is not its certificate's: refused, with the code.
            with pytest.raises(Refused) as refused:
                await HostilePeer.connect_tls(host, port, network, node_id=b"\x00" * 16)
            assert refused.value.code == "identity_mismatch"
            # Its own id: linked, and its signed batches are delivered.
            got = count_deliveries(a)
            async with await HostilePeer.connect_tls(host, port, network, seed=3) as peer:
                assert isinstance(await peer.receive(), Digest)
                await peer.send_message(peer.batch(("t", b"over tls")))
                await wait_until(lambda: len(got) == 1)
            # Any key type in the certificate: the TLS handshake completes, the node
            # says Hello, and the rest is up to the test.
            async with await HostilePeer.connect_tls(
                    host, port, network, cert_key=ec.generate_private_key(ec.SECP256R1()),
                    handshake=False) as peer:
                hello = await peer.receive()
                assert isinstance(hello, Hello)
                assert hello.node_id == a.node_id
