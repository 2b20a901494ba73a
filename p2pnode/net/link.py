"""One link to a peer: the handshake and the read loop over any ``trio.abc.Stream``.

Each connection runs as one task with a child writer task fed by an ``OutQueue``.
The read loop parses every complete frame of each read and hands the batch of
gossip to the node synchronously: no await per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from ..config.settings import NodeConfig, format_hostport, parse_hostport
from ..errors import ConfigError, RemoteProtocolError
from ..ids import id_to_hex
from ..ratelimit import TokenBucket
from ..wire.link import (
    LinkEvent,
    LinkOpen,
    LinkProtocol,
    LinkState,
    PeerBye,
    PeerHello,
    PeerRefused,
)
from ..wire.messages import GOSSIP_TYPES, GossipMessage, Hello, PxPeer
from .direct import direct_for
from .failures import Failure, explain_refusal, tls_mismatch
from .outqueue import OutQueue
from .tls import verified_peer_id

log = logging.getLogger("p2pnode.link")

Direction = Literal["in", "out"]
#: Seconds the reader may go on after a write failed (``_Connection.write``): long
#: enough for what the peer sent before it closed to arrive, short next to
#: ``link_timeout``.
BROKEN_DRAIN = 0.5


@dataclass(eq=False)
class PeerLink:
    """An open link to one peer, as the rest of the node sees it."""

    peer: Hello
    addr: str  # the remote socket address
    direction: Direction
    out: OutQueue
    opened_at: float
    cancel_scope: trio.CancelScope
    closed: trio.Event = field(default_factory=trio.Event)
    close_reason: str = ""
    static: bool = False  # dialled because of --peer: never pruned
    last_rx: float = 0.0  # trio time of the last bytes received
    rtt: float | None = None  # seconds, from the last Ping/Pong
    peer_links: int | None = None  # the peer's link count, from its Pings/Pongs
    peer_keeps: bool = False  # the peer has us as a static peer: do not prune
    lagging: bool = False  # its queue stayed over half full: publishers stop waiting for it
    pings_lost: int = 0
    bytes_bucket: TokenBucket | None = None  # rate limits on what the peer sends us
    batch_bucket: TokenBucket | None = None
    ping_bucket: TokenBucket | None = None
    rate_limited: int = 0  # batches dropped because the peer sent too fast
    limit_logged_at: float = float("-inf")  # trio time rate limiting was last logged
    bytes_received: int = 0  # after the handshake
    #: A frame beyond the handshake came (a Ping, a Pong, gossip): the peer took the
    #: link too. A link the peer refused late never gets one.
    heard: bool = False
    #: The peer's node id is proven by its TLS certificate (an Ed25519 key that hashes
    #: to it): a batch that comes straight from its origin over such a link may be
    #: delivered before its signature is checked. False on ``--insecure`` links.
    authenticated: bool = False

    @property
    def peer_id(self) -> bytes:
        return self.peer.node_id

    @property
    def peer_hex(self) -> str:
        return id_to_hex(self.peer.node_id)

    @property
    def listen(self) -> str:
        """The address the peer accepts links on: its Hello's ``listen``, with the host
        it connected from when it listens on every address (``0.0.0.0``, ``::``)."""
        try:
            host, port = parse_hostport(self.peer.listen)
            if host in ("0.0.0.0", "::"):
                host = parse_hostport(self.addr, default_port=0)[0]
        except ConfigError:
            return self.peer.listen
        return format_hostport(host, port)

    def log_fields(self, **more: object) -> dict[str, object]:
        """The structured fields of a log record about this link."""
        return {"peer_id": self.peer_hex, "peer_name": self.peer.name, "addr": self.addr,
                "direction": self.direction, **more}

    def send(self, frame: bytes) -> bool:
        """Queue a frame without waiting; False if the queue is full (dropped)."""
        return self.out.put_nowait(frame)

    def abort(self, reason: str) -> None:
        """Close the link at once, without flushing (a dead or stuck peer)."""
        if not self.close_reason:
            self.close_reason = reason
        self.out.close()
        self.cancel_scope.cancel()

    def close(self, reason: str, bye: bytes | None = None) -> None:
        """Close the link: send ``bye`` if given, flush, then end the connection."""
        if not self.close_reason:
            self.close_reason = reason
        if bye is not None:
            self.out.put_force(bye)
        self.out.close()


@dataclass(frozen=True)
class LinkResult:
    """How a connection ended, for the dialer's retry policy.

    ``code`` is ``"closed"`` if the link was open, ``"refused"`` if the peer
    refused it, ``"refusing"`` if we did, otherwise ``"eof"``, ``"timeout"``,
    ``"protocol_error"`` or ``"broken"``. ``detail`` holds the refusal code;
    ``failure`` explains a link that did not open (``failures``).
    """

    code: str
    peer_id: bytes | None = None
    detail: str = ""
    failure: Failure | None = None


class LinkHost(Protocol):
    """What a connection needs from its owner (the LinkManager)."""

    config: NodeConfig
    local_hello: Hello

    def admit(self, hello: Hello, *, decides: bool,
              verified: bytes | None) -> tuple[str, str] | None: ...
    def refused(self, code: str) -> None: ...
    def px_for(self, code: str) -> list[PxPeer]: ...
    def px_received(self, px: tuple[PxPeer, ...]) -> None: ...
    def link_count(self) -> int: ...
    def link_open(self, link: PeerLink) -> None: ...
    def link_closed(self, link: PeerLink) -> None: ...
    def on_gossip(self, link: PeerLink, msgs: list[GossipMessage]) -> None: ...


async def run_connection(
    host: LinkHost, stream: trio.abc.Stream, addr: str, direction: Direction,
    *, static: bool = False, on_open: Callable[[], None] | None = None,
) -> LinkResult:
    """Run one connection from handshake to close. Closes ``stream`` before returning.

    Never raises for network or protocol trouble (that is the result); on
    cancellation the stream is closed and ``Cancelled`` propagates.
    """
    conn = _Connection(host, stream, addr, direction)
    conn.proto.local_keep = static
    conn.on_open = on_open
    try:
        async with trio.open_nursery() as nursery:
            conn.scope = nursery.cancel_scope
            conn.nursery = nursery
            nursery.start_soon(conn.write)
            conn.result = await conn.run()
            conn.keepalive_scope.cancel()
            # Let the writer flush what is queued (a Refuse, a Bye), within a bound.
            conn.out.close()
            nursery.cancel_scope.deadline = trio.current_time() + host.config.handshake_timeout
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        conn.result = LinkResult("broken", conn.peer_id)
    finally:
        conn.finish()
        await trio.aclose_forcefully(stream)
    return conn.result


class _Connection:
    def __init__(
        self, host: LinkHost, stream: trio.abc.Stream, addr: str, direction: Direction
    ) -> None:
        cfg = host.config
        self.host = host
        self.stream = stream
        self.addr = addr
        self.direction: Direction = direction
        self.proto = LinkProtocol(
            host.local_hello, max_frame=cfg.max_frame, max_payload=cfg.max_payload
        )
        self.out = OutQueue(cfg.link_queue_bytes)
        self.link: PeerLink | None = None
        self.result = LinkResult("broken")
        self.scope = trio.CancelScope()
        self.keepalive_scope = trio.CancelScope()
        self.on_open: Callable[[], None] | None = None
        self.nursery: trio.Nursery
        self.authenticated = False  # the TLS certificate proved the Hello's node id
        self.write_broken = False  # a write failed: the reader drains, then it ends

    @property
    def peer_id(self) -> bytes | None:
        return self.proto.peer.node_id if self.proto.peer else None

    async def write(self) -> None:
        """The single writer of this stream; when it ends, the connection ends. When a
        write fails (the peer closed its end), the reader first takes what had arrived,
        for up to ``BROKEN_DRAIN`` seconds: a Bye or a Refuse the peer sent before it
        closed then names the close (``pruned_by_peer``, ``refused_by_peer:...``)
        instead of ``broken``, which would have this node probe a peer that runs."""
        try:
            await self.out.run_writer(self.stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.write_broken = True
            self.scope.deadline = min(self.scope.deadline,
                                      trio.current_time() + BROKEN_DRAIN)
            return
        self.scope.cancel()

    async def run(self) -> LinkResult:
        self.out.put_force(self.proto.hello_bytes())
        try:
            with trio.fail_after(self.host.config.handshake_timeout):
                leftover = await self._handshake()
            if self.link is None:
                return self.result
            self._dispatch(leftover)
            self.nursery.start_soon(self._keepalive, self.link)
            await self._read_loop()
        except trio.TooSlowError:
            return self._refuse("timeout", "handshake_timeout", "handshake took too long")
        except RemoteProtocolError as exc:
            log.debug("link %s: protocol error: %s", self.addr, exc)
            return self._refuse("protocol_error", exc.code, exc.message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._set_reason("broken")
        # An open link's result: "closed", or "refused" if the peer refused it late.
        return self.result if self.link is not None else LinkResult("broken", self.peer_id)

    def _refuse(self, result: str, code: str, message: str) -> LinkResult:
        if self.link is not None:
            self._set_reason(code)
            self.out.close()
            return LinkResult("closed", self.peer_id, code)
        if self.proto.state is not LinkState.CLOSED:
            self.out.put_force(self.proto.refuse(code, message))
            self.out.close()
        what = "did not finish in time" if code == "handshake_timeout" else f"failed: {code}"
        failure = Failure(code, f"link handshake with {self.addr} {what}", message)
        return LinkResult(result, self.peer_id, code, failure)

    def _set_reason(self, reason: str) -> None:
        if self.link is not None and not self.link.close_reason:
            self.link.close_reason = reason

    async def _receive(self) -> bytes | bytearray:
        data = await self.stream.receive_some(self.host.config.read_size)
        if not data:
            raise trio.BrokenResourceError("end of stream")
        return data

    async def _handshake(self) -> list[GossipMessage]:
        """Run the handshake; returns gossip that arrived with it. Sets self.link or
        self.result (when the link did not open)."""
        data = await self._receive()
        if data[:1] in (b"\x15", b"\x16") and not isinstance(self.stream, trio.SSLStream):
            # A TLS record (a ClientHello, an alert) where a frame should be: the peer
            # runs TLS and this node --insecure. No Refuse: it could not read one.
            self.out.close()
            self.result = LinkResult("protocol_error", None, "peer_tls",
                                     tls_mismatch(self.addr, peer_speaks_tls=True))
            return []
        while True:
            events = self.proto.receive_data(data)
            for i, event in enumerate(events):
                if isinstance(event, PeerHello):
                    if not self._on_hello(event.hello):
                        return []
                    if self.proto.state is LinkState.OPEN:
                        return self._open([])
                elif isinstance(event, LinkOpen):
                    # Frames that came in the same read as the Accept follow it here.
                    return self._open(events[i + 1 :])
                elif isinstance(event, PeerRefused):
                    self.out.close()
                    if event.px:
                        self.host.px_received(event.px)
                    failure = explain_refusal(self.addr, event.code, by_peer=True,
                                              local=self.proto.local, peer=self.proto.peer)
                    self.result = LinkResult("refused", self.peer_id, event.code,
                                             failure.with_detail(event.message))
                    return []
            if self.proto.state is LinkState.ACCEPT_WAIT and self.proto.has_pending:
                data = b""
            else:
                data = await self._receive()

    def _on_hello(self, hello: Hello) -> bool:
        try:
            verified = verified_peer_id(self.stream)
        except RemoteProtocolError as exc:
            problem: tuple[str, str] | None = (exc.code, exc.message)
            self.host.refused(exc.code)
        else:
            problem = self.host.admit(hello, decides=self.proto.decides, verified=verified)
            self.authenticated = verified is not None
        if problem is not None:
            self.out.put_force(self.proto.refuse(*problem, self.host.px_for(problem[0])))
            self.out.close()
            failure = explain_refusal(self.addr, problem[0], by_peer=False,
                                      local=self.proto.local, peer=hello)
            self.result = LinkResult("refusing", hello.node_id, problem[0],
                                     failure.with_detail(problem[1]))
            return False
        self.out.put_force(self.proto.proceed())
        return True

    def _open(self, early: list[LinkEvent]) -> list[GossipMessage]:
        leftover = early + self.proto.receive_data(b"")
        assert self.proto.peer is not None
        now = trio.current_time()
        self.link = PeerLink(
            peer=self.proto.peer, addr=self.addr, direction=self.direction, out=self.out,
            opened_at=now, cancel_scope=self.scope, last_rx=now, static=self.proto.local_keep,
            authenticated=self.authenticated,
        )
        self.result = LinkResult("closed", self.proto.peer.node_id)
        cfg = self.host.config
        self.link.bytes_bucket = TokenBucket(cfg.peer_bytes_per_s, cfg.peer_bytes_per_s / 4, now)
        self.link.batch_bucket = TokenBucket(cfg.peer_batches_per_s, cfg.peer_batches_per_s / 4,
                                             now)
        self.link.ping_bucket = TokenBucket(cfg.peer_pings_per_s, cfg.peer_pings_per_s, now)
        if self.on_open is not None:
            self.on_open()
        self.host.link_open(self.link)
        msgs: list[GossipMessage] = [e for e in leftover if type(e) in GOSSIP_TYPES]  # type: ignore[misc]
        if len(msgs) != len(leftover):
            last = leftover[-1]
            if isinstance(last, PeerRefused):  # refused late (the deciding side accepted)
                self.link.close(f"refused_by_peer:{last.code}")
                self.result = LinkResult("refused", self.peer_id, last.code)
                if last.px:
                    self.host.px_received(last.px)
            else:
                self.link.close("peer_left")
        return msgs

    async def _keepalive(self, link: PeerLink) -> None:
        """Ping every ``ping_interval``; declare the peer dead after ``link_timeout`` of
        silence, and stuck after ``slow_peer_timeout`` without progress or of a full
        queue."""
        with self.keepalive_scope:
            await self._ping_loop(link)

    async def _ping_loop(self, link: PeerLink) -> None:
        cfg = self.host.config
        proto = self.proto
        awaiting: float | None = None
        full_since: float | None = None
        while True:
            await trio.sleep(cfg.ping_interval)
            now = trio.current_time()
            if not self.out.overflowing:
                full_since = None
            elif full_since is None:
                full_since = now
            reason = self._unhealthy(link, now, full_since)
            if reason is not None:
                link.abort(reason)
                return
            if awaiting is not None and proto.last_echo != awaiting:
                link.pings_lost += 1
            proto.local_links = self.host.link_count()
            self.out.put_nowait(proto.ping(now))  # dropped (and counted) if the queue is full
            awaiting = now

    def _unhealthy(self, link: PeerLink, now: float, full_since: float | None) -> str | None:
        """Why the link must close now, or None: ``timeout`` (nothing received for
        ``link_timeout``), ``slow_peer`` (nothing got through to the peer for
        ``slow_peer_timeout``, or its queue stayed full that long)."""
        cfg = self.host.config
        if now - link.last_rx > cfg.link_timeout:
            log.info("link %s: silent for %.1fs, closing", self.addr, now - link.last_rx)
            return "timeout"
        stalled = self.out.stalled_for(now)
        if stalled > cfg.slow_peer_timeout:
            log.info("link %s: nothing got through to it for %.1fs, closing", self.addr,
                     stalled)
            return "slow_peer"
        if full_since is not None and now - full_since > cfg.slow_peer_timeout:
            log.info("link %s: its queue has been full for %.1fs, closing", self.addr,
                     now - full_since)
            return "slow_peer"
        return None

    def _answer_pings(self, link: PeerLink, count: int, now: float) -> bool:
        """Charge ``count`` new Pings to the peer's limit and queue one Pong, for the
        newest (dropped and counted, like any frame, if the queue is full). Returns False
        if the peer went over the limit: the link is then closed (``ping_flood``)."""
        assert link.ping_bucket is not None
        if not link.ping_bucket.take(count, now):
            log.warning("link %s (%s) sent more than %g Pings/s; closing it", link.peer.name,
                        link.peer_hex[:8], link.ping_bucket.rate,
                        extra=link.log_fields(reason="ping_flood"))
            link.abort("ping_flood")
            return False
        self.out.put_nowait(self.proto.data_to_send())
        return True

    def _dispatch(self, msgs: list[GossipMessage]) -> None:
        if msgs and self.link is not None:
            self.host.on_gossip(self.link, msgs)

    async def _read_loop(self) -> None:
        link = self.link
        assert link is not None
        proto = self.proto
        on_gossip = self.host.on_gossip
        receive_some = self.stream.receive_some
        direct = direct_for(self.stream)
        if direct is not None:  # lone frames skip trio's stream layers (net.direct)
            self.out.direct = direct
            receive_some = direct.receive
        size = self.host.config.read_size
        current_time = trio.current_time
        pongs = pings = 0
        while not self.out.closing:
            data = await receive_some(size)
            if not data:
                self._set_reason("eof")
                return
            link.last_rx = now = current_time()
            link.bytes_received += len(data)
            events = proto.receive_data(data)
            if proto.pings_received != pings:  # one Pong for the newest Ping, within limits
                if not self._answer_pings(link, proto.pings_received - pings, now):
                    return
                pings = proto.pings_received
            if proto.pongs_received != pongs:
                pongs = proto.pongs_received
                assert proto.last_echo is not None
                link.rtt = now - proto.last_echo
            link.peer_links = proto.peer_links
            link.peer_keeps = proto.peer_keep
            if not link.heard and (pings or pongs or (
                    events and proto.state is not LinkState.CLOSED)):
                link.heard = True
            if proto.state is LinkState.CLOSED:  # the last event is PeerBye or PeerRefused
                last = events.pop()
                if isinstance(last, PeerRefused):
                    self._set_reason(f"refused_by_peer:{last.code}")
                    self.result = LinkResult("refused", self.peer_id, last.code)
                    if last.px:
                        self.host.px_received(last.px)
                else:
                    assert isinstance(last, PeerBye)
                    self._set_reason("pruned_by_peer" if last.reason == "pruned" else "peer_left")
                self.out.close()
            if events:
                on_gossip(link, events)  # type: ignore[arg-type]

    def finish(self) -> None:
        if self.link is not None:
            self._set_reason("broken" if self.write_broken else "closed")
            self.link.closed.set()
            self.host.link_closed(self.link)
