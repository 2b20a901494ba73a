"""TLS 1.3 on every link, mutually authenticated with certificates from the network key.

Both sides present a certificate issued by the network key and require one from
the other (``CERT_REQUIRED`` both ways), so only members link. The certificate's
Ed25519 key gives the peer's node id, which the handshake's ``Hello`` must match.
TLS 1.3 key exchange is ephemeral (forward secrecy).
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from ..config import NodeConfig
from ..errors import RemoteProtocolError
from ..identity.keypair import NodeIdentity
from ..identity.keys import (
    NetworkKey,
    network_ca_pem,
    node_cert_pem,
    node_id_from_cert_der,
    private_key_pem,
)
from .transport import StreamHandler, TcpTransport, Transport, TransportCounters

log = logging.getLogger("p2pnode.tls")


@dataclass
class TlsStats:
    handshakes: int = 0
    failed: int = 0  # TLS handshakes that failed or timed out (non-members, scanners)
    busy: int = 0  # connections closed because too many handshakes were under way


def make_contexts(identity: NodeIdentity, network: NetworkKey) -> tuple[ssl.SSLContext,
                                                                         ssl.SSLContext]:
    """(server context, client context) for this node on this network."""
    ca = network_ca_pem(network).decode()
    cert = node_cert_pem(identity, network)
    key = private_key_pem(identity)
    contexts = []
    with tempfile.TemporaryDirectory(prefix="p2pnode-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
            ctx = ssl.SSLContext(purpose)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.check_hostname = False  # peers are named by node id, checked after
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=ca)
            ctx.load_cert_chain(str(cert_path), str(key_path))
            contexts.append(ctx)
    return contexts[0], contexts[1]


def verified_peer_id(stream: trio.abc.Stream) -> bytes | None:
    """The node id proven by the peer's TLS certificate; None on a plain (``--insecure``)
    stream, where nothing is proven.

    Raises ``RemoteProtocolError`` (``identity_unproven``) when a TLS peer's certificate
    proves no node id (no certificate, or a key that is not Ed25519): such a peer must
    not link at all, whatever node id it claims.
    """
    if not isinstance(stream, trio.SSLStream):
        return None
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise RemoteProtocolError("identity_unproven", "the peer presented no certificate")
    try:
        return node_id_from_cert_der(der)
    except ValueError as exc:
        raise RemoteProtocolError("identity_unproven",
                                  f"the peer's certificate proves no node id: {exc}") from None


class TlsTransport:
    """TCP with TLS: every stream handed out has finished a mutual TLS handshake.

    Args:
        identity, network: whose certificate to present and which network to trust.
        handshake_timeout: seconds a TLS handshake may take (slow or silent peers
            are cut off: a defence against connections that stall).
        max_pending: the most inbound TLS handshakes under way at once; more
            connections are closed as soon as they arrive.
        max_per_ip: see ``TcpTransport``.
    """

    def __init__(self, identity: NodeIdentity, network: NetworkKey,
                 handshake_timeout: float, max_pending: int = 64,
                 max_per_ip: int | None = None) -> None:
        self.server_ctx, self.client_ctx = make_contexts(identity, network)
        self.tcp = TcpTransport(max_per_ip)
        self.timeout = handshake_timeout
        self.max_pending = max_pending
        self.pending = 0
        self.stats = TlsStats()

    def counters(self) -> TransportCounters:
        """TLS handshakes done, failed and refused as busy; connections refused per
        address."""
        st = self.stats
        return TransportCounters(st.handshakes, st.failed, st.busy, self.tcp.refused_per_ip)

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def secure(stream: trio.abc.Stream, addr: str) -> None:
            if self.pending >= self.max_pending:
                self.stats.busy += 1
                await trio.aclose_forcefully(stream)
                return
            tls = trio.SSLStream(stream, self.server_ctx, server_side=True)
            self.pending += 1
            try:
                done = await self._handshake(tls, addr)
            finally:
                self.pending -= 1
            if done:
                await handler(tls, addr)

        await self.tcp.listen(host, port, secure, task_status=task_status)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        stream = await self.tcp.connect(host, port)
        tls = trio.SSLStream(stream, self.client_ctx, server_side=False)
        if not await self._handshake(tls, f"{host}:{port}"):
            raise ConnectionRefusedError(f"TLS handshake with {host}:{port} failed "
                                         "(not a member of this network?)")
        return tls

    async def _handshake(self, tls: trio.SSLStream[trio.abc.Stream], addr: str) -> bool:
        """Run the TLS handshake within the timeout; on failure close and return False."""
        try:
            with trio.fail_after(self.timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, trio.ClosedResourceError) as exc:
            self.stats.failed += 1
            log.info("TLS handshake with %s failed: %s", addr, exc.__cause__ or exc)
            await trio.aclose_forcefully(tls)
            return False
        except BaseException:  # cancelled (the node stops, a dial times out): close too
            await trio.aclose_forcefully(tls)
            raise
        self.stats.handshakes += 1
        return True


def default_transport(config: NodeConfig, identity: NodeIdentity,
                      network: NetworkKey) -> Transport:
    """TLS over TCP with the node's certificate, or plain TCP with ``insecure``."""
    if config.insecure:
        return TcpTransport(config.max_conns_per_ip)
    return TlsTransport(identity, network, config.handshake_timeout,
                        config.max_pending_handshakes, config.max_conns_per_ip)
