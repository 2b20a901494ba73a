"""Issue 12, defect 1: a member must not pose as another node.

The attacker holds the network key (on the open network everyone does), so it can
issue itself a certificate for any key. Real nodes, real loopback TCP and TLS.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from p2pnode.client import open_client
from p2pnode.identity import NetworkKey

from .conftest import loopback_config, running_nodes
from .hostile import HostilePeer, Refused


async def test_a_certificate_without_an_ed25519_key_cannot_claim_a_node_id(
        short_tmp: Path) -> None:
    """The attack of issue 12: an ECDSA certificate, issued with the (public) open network
    key, claiming node C's id. B must refuse the link (so nothing the attacker sends can
    reach B's apps as C's), and still link to the real C."""
    configs = [loopback_config(short_tmp, n) for n in ("b", "c")]
    with trio.fail_after(30):
        async with running_nodes(configs) as (b, c):
            assert b.listen_addr is not None
            with pytest.raises(Refused) as refused:
                # A certificate that the network key really issued, for an ECDSA key,
                # and C's node id in the Hello.
                await HostilePeer.connect_tls(
                    *b.listen_addr, NetworkKey.open(), node_id=c.node_id,
                    cert_key=ec.generate_private_key(ec.SECP256R1()))
            assert refused.value.code == "identity_unproven", refused.value
            assert b.links is not None
            assert c.node_id not in b.links.links
            assert b.links.stats.refused["identity_unproven"] == 1
            assert b.status_info().links.refused["identity_unproven"] == 1
            # B still links to the real C, and C's messages reach B's apps.
            async with trio.open_nursery() as nursery:
                assert c.listen_addr is not None
                nursery.start_soon(b.links.keep_dialling, *c.listen_addr)
                async with await open_client(b.config.socket_path) as sub:
                    await sub.subscribe(["t"])
                    while c.node_id not in b.links.links:
                        await b.links.changed.wait()
                    async with await open_client(c.config.socket_path) as pub:
                        msg_id = await pub.publish("t", "the real c", wait=True)
                    event = await sub.next_event()
                    assert (event["msg_id"], event["data"]) == (msg_id, "the real c")
                nursery.cancel_scope.cancel()


async def test_only_a_certificate_proven_link_skips_the_signature_check(short_tmp: Path) -> None:
    """A link whose TLS certificate proved the peer's id is marked authenticated (batches
    straight from their origin may be delivered before the signature check); a plain
    link (--insecure) never is."""
    for insecure in (False, True):
        base = short_tmp / ("plain" if insecure else "tls")
        base.mkdir()
        configs = [loopback_config(base, n, insecure=insecure) for n in ("a", "b")]
        with trio.fail_after(30):
            async with running_nodes(configs) as (a, b), trio.open_nursery() as nursery:
                assert a.links is not None
                assert b.listen_addr is not None
                nursery.start_soon(a.links.keep_dialling, *b.listen_addr)
                while b.node_id not in a.links.links:
                    await a.links.changed.wait()
                assert a.links.links[b.node_id].authenticated is (not insecure)
                nursery.cancel_scope.cancel()
