"""TLS 1.3 on every link, mutually authenticated with certificates from the network key.

Both sides present a certificate issued by the network key and require one from
the other (``CERT_REQUIRED`` both ways), so only members link. The certificate's
Ed25519 key gives the peer's node id, which the handshake's ``Hello`` must match.
TLS 1.3 key exchange is ephemeral (forward secrecy).

When a handshake fails, the transport says why in terms of what the operator can
change (``failures``): a peer of another network (both tags named: the dialler sends
its tag as the TLS server name, and learns the other's from the issuer of the
server's certificate), or a peer that runs ``--insecure`` (its first bytes are a
plaintext frame; it is answered with a plaintext ``Refuse("tls_required")``).
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from ..config import NodeConfig, format_hostport
from ..errors import RemoteProtocolError
from ..identity.keypair import NodeIdentity
from ..identity.keys import (
    NetworkKey,
    is_network_tag,
    network_ca_pem,
    network_tag_from_cert_der,
    node_cert_pem,
    node_id_from_cert_der,
    private_key_pem,
)
from ..wire.messages import Refuse, encode_message
from .failures import Failure, LinkFailureError, network_mismatch, tls_mismatch
from .transport import StreamHandler, TcpTransport, Transport, TransportCounters

log = logging.getLogger("p2pnode.tls")


@dataclass
class TlsStats:
    handshakes: int = 0
    failed: int = 0  # TLS handshakes that failed or timed out (non-members, scanners)
    busy: int = 0  # connections closed because too many handshakes were under way


#: The TLS server name a dialler sends: its network tag, then this suffix. It is no
#: host name (host names are not checked); it lets a listener of another network say
#: which network the dialler is on.
SNI_SUFFIX = ".p2pnode"
#: What the server side learnt during the handshake its task runs (the SNI callback
#: runs inside ``do_handshake``, in that task's context).
_SEEN: contextvars.ContextVar[_Seen | None] = contextvars.ContextVar("p2pnode_tls_seen",
                                                                   default=None)


@dataclass
class _Seen:
    network: str | None = None  # the dialler's network tag, from the server name


def _on_server_name(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
    """SNI callback: note the dialler's network tag (never raises)."""
    seen = _SEEN.get()
    if seen is not None and name and len(name) <= 64 and name.endswith(SNI_SUFFIX):
        tag = name.removesuffix(SNI_SUFFIX)
        seen.network = tag if is_network_tag(tag) else None


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
    contexts[0].sni_callback = _on_server_name
    return contexts[0], contexts[1]


def _probe_context() -> ssl.SSLContext:
    """A client context that checks nothing and presents no certificate: only to read
    which network a server's certificate names, after a handshake failed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Sniffed(trio.abc.Stream):
    """A stream that keeps the first bytes it received (``head``), to tell a peer that
    speaks plaintext frames from one that speaks TLS."""

    HEAD = 8

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.head = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if len(self.head) < self.HEAD:
            self.head += bytes(data[: self.HEAD - len(self.head)])
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def plaintext_peer(self) -> bool:
        """The peer sent a plaintext frame (``--insecure``): a frame header starts with
        a zero byte (a length under 16 MiB), a TLS record never does."""
        return self.head[:1] == b"\x00"


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

    ``on_failure(addr, failure)`` is called for each inbound connection whose
    handshake failed (the node logs it); a failed ``connect`` raises
    ``LinkFailureError`` with the explanation.
    """

    PROBE_CACHE = 256  # addresses whose network tag is remembered ...
    PROBE_TTL = 60.0  # ... for this many seconds

    def __init__(self, identity: NodeIdentity, network: NetworkKey,
                 handshake_timeout: float, max_pending: int = 64,
                 max_per_ip: int | None = None) -> None:
        self.server_ctx, self.client_ctx = make_contexts(identity, network)
        self.tcp = TcpTransport(max_per_ip)
        self.timeout = handshake_timeout
        self.max_pending = max_pending
        self.pending = 0
        self.stats = TlsStats()
        self.network = network.tag
        self.server_name = network.tag + SNI_SUFFIX
        self.on_failure: Callable[[str, Failure], None] = lambda _addr, _failure: None
        self._probe_ctx = _probe_context()
        self._tags: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

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
            sniffed = _Sniffed(stream)
            tls: trio.SSLStream[trio.abc.Stream] = trio.SSLStream(
                sniffed, self.server_ctx, server_side=True)
            self.pending += 1
            try:
                failure = await self._handshake(tls, sniffed, addr)
                if failure is not None:
                    if failure.reason == "peer_insecure":
                        await self._refuse_plaintext(sniffed)
                    await trio.aclose_forcefully(tls)
            finally:
                self.pending -= 1
            if failure is None:
                await handler(tls, addr)
            else:
                self.on_failure(addr, failure)

        await self.tcp.listen(host, port, secure, task_status=task_status)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        stream = await self.tcp.connect(host, port)
        sniffed = _Sniffed(stream)
        tls: trio.SSLStream[trio.abc.Stream] = trio.SSLStream(
            sniffed, self.client_ctx, server_side=False, server_hostname=self.server_name)
        addr = format_hostport(host, port)
        failure = await self._handshake(tls, sniffed, addr)
        if failure is None:
            return tls
        await trio.aclose_forcefully(tls)
        if failure.reason == "network_mismatch" and failure.network is None:
            tag = await self._peer_network(host, port, addr)
            failure = network_mismatch(addr, tag, self.network).with_detail(failure.detail)
        raise LinkFailureError(failure)

    async def _handshake(self, tls: trio.SSLStream[trio.abc.Stream], sniffed: _Sniffed,
                         addr: str) -> Failure | None:
        """Run the TLS handshake within the timeout; on failure return why (the caller
        closes the stream). Closes it if cancelled. Once the handshake is done, the
        sniffer leaves the data path: ``tls`` then reads and writes the TCP stream
        itself (``transport_stream``, which SSLStream looks up at every call)."""
        seen = _Seen()
        token = _SEEN.set(seen)
        try:
            with trio.fail_after(self.timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, trio.ClosedResourceError) as exc:
            self.stats.failed += 1
            failure = self._explain(exc, sniffed, seen, addr)
            log.debug("TLS handshake with %s failed: %s", addr, failure.detail)
            return failure
        except BaseException:  # cancelled (the node stops, a dial times out): close too
            await trio.aclose_forcefully(tls)
            raise
        finally:
            _SEEN.reset(token)
        self.stats.handshakes += 1
        tls.transport_stream = sniffed.inner
        return None

    def _explain(self, exc: BaseException, sniffed: _Sniffed, seen: _Seen,
                 addr: str) -> Failure:
        """Why the handshake with ``addr`` failed, in an operator's terms."""
        cause = exc.__cause__ or exc
        detail = str(cause) or type(cause).__name__
        if sniffed.plaintext_peer:
            return tls_mismatch(addr, peer_speaks_tls=False).with_detail(detail)
        if isinstance(exc, trio.TooSlowError):
            return Failure("handshake_timeout", f"TLS handshake with {addr} did not finish "
                           f"within {self.timeout:g} s", detail)
        if seen.network is not None and seen.network != self.network:
            return network_mismatch(addr, seen.network, self.network).with_detail(detail)
        reason = getattr(cause, "reason", None)
        if isinstance(cause, ssl.SSLCertVerificationError) or reason in _REJECTED_CERT:
            # Its certificate is not of our network, or ours is not of its network.
            return network_mismatch(addr, None, self.network).with_detail(detail)
        what = "a node of another network, or not a p2pnode node?"
        return Failure("tls_failed", f"TLS handshake with {addr} failed ({what})", detail)

    async def _peer_network(self, host: str, port: int, addr: str) -> str | None:
        """The network tag named by the certificate of the node at ``host:port``
        (remembered for ``PROBE_TTL``): one more handshake, which checks nothing and is
        abandoned once the certificate is in."""
        now = time.monotonic()
        cached = self._tags.get(addr)
        if cached is not None and now - cached[0] < self.PROBE_TTL:
            return cached[1]
        tag = None
        with trio.move_on_after(self.timeout):
            try:
                stream = await self.tcp.connect(host, port)
            except OSError:
                stream = None
            if stream is not None:
                tls = trio.SSLStream(stream, self._probe_ctx, server_side=False,
                                     server_hostname=self.server_name)
                try:
                    await tls.do_handshake()
                    der = tls.getpeercert(binary_form=True)
                    tag = network_tag_from_cert_der(der) if der else None
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    await trio.aclose_forcefully(tls)
        self._tags[addr] = (now, tag)
        self._tags.move_to_end(addr)
        while len(self._tags) > self.PROBE_CACHE:
            self._tags.popitem(last=False)
        return tag

    async def _refuse_plaintext(self, sniffed: _Sniffed) -> None:
        """Tell a plaintext (``--insecure``) dialler, in its own framing, that this node
        runs TLS; then close the connection."""
        refuse = Refuse("tls_required", "this node runs TLS; run both nodes with or both "
                        "without --insecure")
        with trio.move_on_after(self.timeout):
            try:
                await sniffed.inner.send_all(encode_message(refuse))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(sniffed.inner)


#: OpenSSL's reasons when the peer rejected this node's certificate.
_REJECTED_CERT = frozenset({"TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
                            "TLSV1_ALERT_DECRYPT_ERROR", "CERTIFICATE_VERIFY_FAILED"})


def default_transport(config: NodeConfig, identity: NodeIdentity,
                      network: NetworkKey) -> Transport:
    """TLS over TCP with the node's certificate, or plain TCP with ``insecure``."""
    if config.insecure:
        return TcpTransport(config.max_conns_per_ip)
    return TlsTransport(identity, network, config.handshake_timeout,
                        config.max_pending_handshakes, config.max_conns_per_ip)
