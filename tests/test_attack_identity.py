"""Issue 12, defect 1: a member must not pose as another node.

The attacker holds the network key (on the open network everyone does), so it can
issue itself a certificate for any key. Real nodes, real loopback TCP and TLS.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pnode import PROTOCOL_VERSION
from p2pnode.client import open_client
from p2pnode.keys import NetworkKey, network_ca_pem
from p2pnode.wire.link import LinkProtocol, LinkState, PeerRefused
from p2pnode.wire.messages import Hello

from .conftest import loopback_config, running_nodes


def ecdsa_client_context(network: NetworkKey, claimed_id: bytes) -> ssl.SSLContext:
    """A TLS client context with a certificate that the network key really issued, for
    an ECDSA key (not Ed25519), with the victim's node id as its subject."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    cert = (
        x509.CertificateBuilder()
        .subject_name(name(claimed_id.hex()))
        .issuer_name(name(f"p2pnode network {network.tag}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            network.key.public_key()), critical=False)
        .sign(network.key, None)
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=network_ca_pem(network).decode())
    with tempfile.TemporaryDirectory(prefix="p2pt-ecdsa-") as tmp:
        cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


async def handshake_as(addr: tuple[str, int], ctx: ssl.SSLContext,
                       claimed: bytes) -> list[Any]:
    """Connect with ``ctx``, run the link handshake claiming node id ``claimed`` and read
    until the node hangs up (at most 5 s: a node that took the link keeps it open).
    Returns the link events received."""
    tcp = await trio.open_tcp_stream(*addr)
    stream = trio.SSLStream(tcp, ctx, server_side=False)
    events: list[Any] = []
    try:
        await stream.do_handshake()
        proto = LinkProtocol(Hello(PROTOCOL_VERSION, claimed, "liar", "", network="open"),
                             max_frame=1 << 20, max_payload=1 << 19)
        await stream.send_all(proto.hello_bytes())
        with trio.move_on_after(5):
            while data := await stream.receive_some():
                events += proto.receive_data(data)
                if proto.state is LinkState.DECIDE:
                    await stream.send_all(proto.proceed())
                if proto.state is LinkState.CLOSED:
                    break
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return events


async def test_a_certificate_without_an_ed25519_key_cannot_claim_a_node_id(
        short_tmp: Path) -> None:
    """The attack of issue 12: an ECDSA certificate, issued with the (public) open network
    key, claiming node C's id. B must refuse the link, and nothing the attacker sends
    reaches B's apps as C's."""
    configs = [loopback_config(short_tmp, n) for n in ("b", "c")]
    with trio.fail_after(30):
        async with running_nodes(configs) as (b, c):
            ctx = ecdsa_client_context(NetworkKey.open(), c.node_id)
            assert b.listen_addr is not None
            events = await handshake_as(b.listen_addr, ctx, c.node_id)
            refused = [e for e in events if isinstance(e, PeerRefused)]
            assert refused, f"B took a link from a peer posing as C: {events}"
            assert refused[0].code == "identity_unproven", events
            assert b.links is not None
            assert c.node_id not in b.links.links
            assert b.links.stats.refused["identity_unproven"] == 1
            assert b.status_info()["links"]["refused"]["identity_unproven"] == 1
            # B still links to the real C, and C's messages reach B's apps.
            async with trio.open_nursery() as nursery:
                assert c.listen_addr is not None
                nursery.start_soon(b.links.keep_dialling, *c.listen_addr)
                async with await open_client(b.config.socket_path) as sub:
                    await sub.subscribe(["t"])
                    while c.node_id not in b.links.links:
                        await b.links.changed.wait()
                    async with await open_client(c.config.socket_path) as pub:
                        msg_id = await pub.publish("t", "the real c")
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
