"""A hostile peer for tests: a member of the network that speaks the wire protocol by
hand, sends anything, and reads only when told to.

Use it to attack a real node, over ``p2pnode.testing.MemoryNetwork`` (the node's real
code in virtual time; no TLS, so the claimed node id is all there is) or over real
TCP + TLS on loopback (a certificate issued by the network key, as a member has)::

    async with await HostilePeer.connect_memory(net, node) as peer:
        await peer.send_message(peer.batch(("t", b"hello")))   # a signed batch of its own
        digest = await peer.wait_for(Digest)                   # what the node sends, decoded

    peer = await HostilePeer.connect_tls(*node.listen_addr, NetworkKey.open(),
                                         node_id=victim_id)    # claims another's id
    # -> raises Refused("identity_mismatch: ...") if the node sees through it

Who it is (both transports):

- ``identity``: the Ed25519 key it signs batches with and, over TLS, presents in its
  certificate. Default: a new key from ``seed`` (deterministic).
- ``node_id``: the id it claims in its Hello; default the identity's own. Claiming
  another node's id is how to test identity spoofing.
- ``cert_key`` (TLS only): present a certificate for this key instead (any type the
  ``cryptography`` package can certify, e.g. an ECDSA key), still issued by
  ``network``'s key.
- ``handshake=False`` stops after the transport connected (TLS done, nothing sent):
  then call ``handshake(hello)`` with any Hello, or send anything at all.

What it does, and nothing else (it never answers a Ping by itself, never reads in the
background):

- ``send_message(msg)``: any ``WireMessage``, encoded and framed as a node would;
  ``send_raw(data)``: bytes as they are (broken frames, oversize headers, garbage).
- ``receive()``: the next message the node sent, decoded (Ping, Pong, Digest, Batch,
  Bye, Refuse: everything), or None once the node closed the connection.
  ``wait_for(kind)``: receive until a message of that kind.
- Never calling ``receive`` plays a peer that does not read: the node's bytes pile up
  in the transport (a ``MemoryNetwork`` pipe holds ``net.sim.capacity`` bytes, 256 KiB
  unless the test lowers it; TCP its socket buffers) and then the node's writer blocks.
- ``batch(*items, identity=..., hops=..., epoch=..., seq=...)``: a signed batch of its
  own or of any identity it holds the key of; ``new_id()``: a fresh 16-byte id.
- ``aclose()`` (or ``async with``): close at once, without Bye (send ``Bye()`` first
  for a clean leave).

New message types: once a type is in ``WireMessage`` (p2pnode/wire/messages.py) it can
be sent with ``send_message`` and comes out of ``receive`` with no change here. Give
it the same treatment as the others: a test that sends it out of order, repeatedly and
fast, from a peer that never reads the answers, and checks that the node's memory
stays bounded and the peer's link is closed with a clear reason (see
tests/test_ping_flood.py); only a new handshake step needs ``handshake`` changed.
"""

from __future__ import annotations

import datetime
import itertools
import random
import ssl
import tempfile
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from p2pnode import PROTOCOL_VERSION
from p2pnode.config import NodeConfig
from p2pnode.gossip.signing import sign_batch
from p2pnode.identity.keys import NetworkKey, NodeIdentity, network_ca_pem
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, make_identity
from p2pnode.wire.frames import FrameDecoder
from p2pnode.wire.messages import (
    Accept,
    Batch,
    Hello,
    Item,
    Refuse,
    WireMessage,
    decode_message,
    encode_message,
)

M = TypeVar("M")

_seeds = itertools.count(0x5EED)


class Refused(Exception):
    """The node refused the link (``code`` as in its Refuse; ``"eof"`` if it hung up)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HostilePeer:
    """One connection to a node, driven by hand (see the module docstring)."""

    def __init__(self, stream: trio.abc.Stream, identity: NodeIdentity, node_id: bytes,
                 *, name: str, network_tag: str) -> None:
        self.stream = stream
        self.identity = identity
        self.node_id = node_id
        self.name = name
        self.network_tag = network_tag
        self.node_hello: Hello | None = None  #: the node's Hello, once handshake() saw it
        self._decoder = FrameDecoder(NodeConfig().max_frame)
        self._inbox: deque[WireMessage] = deque()
        self._ids = itertools.count(1)

    # -- connecting ----------------------------------------------------------------

    @classmethod
    async def connect_memory(
        cls, net: MemoryNetwork, node: Node, *, identity: NodeIdentity | None = None,
        node_id: bytes | None = None, name: str = "hostile", seed: int | None = None,
        handshake: bool = True,
    ) -> HostilePeer:
        """Connect to ``node`` over ``net`` and (by default) finish the link handshake.
        Raises ``Refused`` if the node refuses the link."""
        identity = identity or _identity(seed)
        stream = await net.transport().connect("mem", node.config.listen_port)
        peer = cls(stream, identity, node_id or identity.node_id, name=name,
                   network_tag=node.network_tag)
        return await peer._start(handshake)

    @classmethod
    async def connect_tls(
        cls, host: str, port: int, network: NetworkKey, *,
        identity: NodeIdentity | None = None, node_id: bytes | None = None,
        cert_key: CertificateIssuerPrivateKeyTypes | None = None, name: str = "hostile",
        seed: int | None = None, handshake: bool = True,
    ) -> HostilePeer:
        """Connect over TCP and TLS 1.3 with a certificate issued by ``network``'s key for
        ``cert_key`` (default: ``identity``'s key), then (by default) finish the link
        handshake. Raises ``Refused`` if the node refuses the link, and what
        ``trio.open_tcp_stream`` and ``SSLStream.do_handshake`` raise."""
        identity = identity or _identity(seed)
        claimed = node_id or identity.node_id
        context = client_context(network, cert_key or identity.key, claimed)
        tcp = await trio.open_tcp_stream(host, port)
        stream = trio.SSLStream(tcp, context, server_side=False)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        peer = cls(stream, identity, claimed, name=name, network_tag=network.tag)
        return await peer._start(handshake)

    async def _start(self, handshake: bool) -> HostilePeer:
        if handshake:
            try:
                await self.handshake()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def handshake(self, hello: Hello | None = None) -> Hello:
        """Send ``hello`` (default: this peer's, for the node's network and protocol
        version), then play the handshake as a member would. Returns the node's Hello
        once the link is open: the node's Accept arrived (when its id is the lower), or
        its first message on the open link (its Digest) after our Accept. Raises
        ``Refused`` if the node refused or hung up; the connection is then unusable."""
        hello = hello or Hello(PROTOCOL_VERSION, self.node_id, self.name, "",
                               network=self.network_tag)
        await self.send_message(hello)
        theirs = await self._handshake_message()
        if not isinstance(theirs, Hello):
            raise AssertionError(f"expected the node's Hello, got {theirs!r}")
        self.node_hello = theirs
        if hello.node_id < theirs.node_id:
            try:
                await self.send_message(Accept())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it refused and hung up already: its Refuse is read next
            first = await self._handshake_message()
            self._inbox.appendleft(first)  # the Digest: receive() still returns it
        elif not isinstance(msg := await self._handshake_message(), Accept):
            raise AssertionError(f"expected Accept, got {msg!r}")
        return theirs

    async def _handshake_message(self) -> WireMessage:
        msg = await self.receive()
        if msg is None:
            raise Refused("eof", "the node closed the connection during the handshake")
        if isinstance(msg, Refuse):
            raise Refused(msg.code, msg.message)
        return msg

    # -- talking -------------------------------------------------------------------

    async def send_message(self, msg: WireMessage) -> None:
        """Send one message, framed."""
        await self.stream.send_all(encode_message(msg))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        await self.stream.send_all(data)

    async def receive(self) -> WireMessage | None:
        """The next message from the node, decoded; None once it closed the connection.
        Raises ``RemoteProtocolError`` if the node sent something undecodable."""
        while not self._inbox:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._inbox.extend(decode_message(body) for body in self._decoder.feed(data))
        return self._inbox.popleft()

    async def wait_for(self, kind: type[M]) -> M:
        """Receive until a message of ``kind`` arrives (others are skipped) and return
        it. Raises ``AssertionError`` if the node closes the connection first."""
        while True:
            msg = await self.receive()
            if msg is None:
                raise AssertionError(f"the node hung up before sending a {kind.__name__}")
            if isinstance(msg, kind):
                return msg

    # -- making messages -----------------------------------------------------------

    def new_id(self) -> bytes:
        """A fresh 16-byte id (for batches and items): this peer's id prefix and a count."""
        return self.node_id[:8] + next(self._ids).to_bytes(8, "big")

    def batch(self, *items: Item | tuple[str, bytes], identity: NodeIdentity | None = None,
              batch_id: bytes | None = None, to: bytes | None = None, epoch: int = 0,
              seq: int = 0, hops: int = 0) -> Batch:
        """A batch of ``items`` (``Item``s, or ``(topic, data)`` pairs given fresh ids)
        signed by ``identity`` (default: this peer's own), with hop count ``hops``."""
        made = [item if isinstance(item, Item) else Item(self.new_id(), *item)
                for item in items]
        signer = identity or self.identity
        batch = sign_batch(signer, batch_id or self.new_id(), to, made, epoch=epoch, seq=seq)
        return batch if hops == 0 else Batch(batch.id, batch.origin, hops, batch.key,
                                             batch.body, batch.sig)

    # -- closing -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection at once (no Bye, no TLS close_notify)."""
        await trio.aclose_forcefully(self.stream)

    async def __aenter__(self) -> HostilePeer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


def _identity(seed: int | None) -> NodeIdentity:
    return make_identity(random.Random(next(_seeds) if seed is None else seed))


def client_context(network: NetworkKey, key: CertificateIssuerPrivateKeyTypes,
                   claimed: bytes) -> ssl.SSLContext:
    """A TLS 1.3 client context presenting a certificate for ``key`` issued by
    ``network``'s key (subject: ``claimed`` in hex). It does not check the node's
    certificate: a hostile peer does not care."""
    now = datetime.datetime.now(datetime.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                           f"p2pnode network {network.tag}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, claimed.hex())]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(network.key, None)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_verify_locations(cadata=network_ca_pem(network).decode())
    with tempfile.TemporaryDirectory(prefix="p2pnode-hostile-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        context.load_cert_chain(str(cert_path), str(key_path))
    return context
