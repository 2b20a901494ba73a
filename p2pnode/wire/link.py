"""The rules of one link between two nodes, as a state machine without I/O.

Bytes received go in through ``receive_data``, events come out; methods that
make the local side say something return the bytes to send.

Handshake (see docs/protocol.md):

1. Both sides send ``Hello`` at once.
2. Each side checks the peer's ``Hello`` (``check_hello``); on a problem it sends
   ``Refuse`` and closes.
3. The side with the lower node id decides whether this connection becomes the
   link (it keeps at most one link per peer) and sends ``Accept`` or
   ``Refuse("duplicate")``. The side with the higher node id waits for that word.
   Both sides therefore agree on which connection survives, even when both
   dialled at the same moment.
4. ``OPEN``: both sides send gossip (``Batch``, ``IHave``, ``Graft``, ``Prune``,
   ``Digest``) and Pings until one sends ``Bye`` or the connection ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import LocalError, RemoteProtocolError
from .frames import FrameDecoder
from .messages import (
    GOSSIP_TYPES,
    Accept,
    Bye,
    GossipMessage,
    Hello,
    Ping,
    Pong,
    PxPeer,
    Refuse,
    decode_message,
    encode_message,
)


class LinkState(enum.Enum):
    """Where a link is in its life."""

    HELLO_WAIT = "hello_wait"  # our Hello is sent; waiting for theirs
    DECIDE = "decide"  # their Hello arrived; the caller must proceed() or refuse()
    ACCEPT_WAIT = "accept_wait"  # higher id side: waiting for Accept/Refuse
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PeerHello:
    """Event: the peer introduced itself. The caller must call proceed() or refuse()."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class LinkOpen:
    """Event: the handshake is complete; gossip may flow."""


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """Event: the peer refused the link. The link is closed."""

    code: str
    message: str
    px: tuple[PxPeer, ...] = ()  # members to try instead (peer exchange)


@dataclass(frozen=True, slots=True)
class PeerBye:
    """Event: the peer is leaving. The link is closed."""

    reason: str


LinkEvent = PeerHello | LinkOpen | PeerRefused | PeerBye | GossipMessage


def check_hello(local: Hello, peer: Hello) -> tuple[str, str] | None:
    """Return ``(code, message)`` if ``peer``'s Hello is unacceptable, else ``None``."""
    if peer.version != local.version:
        return (
            "version_mismatch",
            f"protocol version {peer.version} is not supported (this node speaks {local.version})",
        )
    if peer.node_id == local.node_id:
        return ("self", "a node does not link to itself")
    if peer.network != local.network:
        return ("network_mismatch", "the peer belongs to another network")
    return None


class LinkProtocol:
    """The state machine of one link, from one side.

    Args:
        local: the Hello this side sends.
        max_frame: largest frame accepted, in bytes.
        max_payload: accepted for symmetry with the node's limits; the link passes
            batches through undecoded (``gossip.signing.Verifier`` checks payloads).
    """

    def __init__(self, local: Hello, *, max_frame: int, max_payload: int) -> None:
        self.local = local
        self.peer: Hello | None = None
        self.state = LinkState.HELLO_WAIT
        self._frames = FrameDecoder(max_frame)
        self._pending: list[bytes] = []
        #: The ``time`` of the newest Ping not answered yet (one Pong answers them all).
        self._echo: float | None = None
        #: Our link count, sent in Pings and Pongs (the caller keeps it current).
        self.local_links = 0
        #: True if we want this link kept (sent in Pings and Pongs).
        self.local_keep = False
        #: The peer's link count, from its last Ping or Pong (None before one).
        self.peer_links: int | None = None
        #: The peer wants this link kept (from its last Ping or Pong).
        self.peer_keep = False
        #: The ``time`` echoed by the peer's last Pong (None before one).
        self.last_echo: float | None = None
        self.pongs_received = 0
        #: Pings received so far (the caller rate-limits them).
        self.pings_received = 0

    @property
    def decides(self) -> bool:
        """True if this side (the lower node id) decides whether the link is kept."""
        if self.peer is None:
            raise LocalError("the peer's Hello has not arrived")
        return self.local.node_id < self.peer.node_id

    @property
    def has_pending(self) -> bool:
        """True if complete frames wait to be processed (after a pause)."""
        return bool(self._pending)

    @property
    def has_output(self) -> bool:
        """True if ``data_to_send()`` has bytes (a Pong) for the peer."""
        return self._echo is not None

    def data_to_send(self) -> bytes:
        """Bytes the machine itself produced while receiving: at most one Pong, which
        echoes the newest Ping received since the last call (only the newest needs an
        answer: the peer measures its round-trip time with it). Empties the buffer."""
        if self._echo is None:
            return b""
        out = encode_message(Pong(self._echo, self.local_links, self.local_keep))
        self._echo = None
        return out

    def ping(self, now: float) -> bytes:
        """A Ping frame carrying ``now`` and our link count."""
        if self.state is not LinkState.OPEN:
            raise LocalError(f"ping() in state {self.state.value}")
        return encode_message(Ping(now, self.local_links, self.local_keep))

    def hello_bytes(self) -> bytes:
        """The framed Hello to send first."""
        return encode_message(self.local)

    def proceed(self) -> bytes:
        """Accept the peer's Hello. Returns the bytes to send (Accept, or nothing).

        The lower-id side thereby accepts this connection as the link (state OPEN);
        the higher-id side moves to ACCEPT_WAIT. Afterwards call
        ``receive_data(b"")`` to process frames that arrived behind the Hello.
        """
        if self.state is not LinkState.DECIDE:
            raise LocalError(f"proceed() in state {self.state.value}")
        if self.decides:
            self.state = LinkState.OPEN
            return encode_message(Accept())
        self.state = LinkState.ACCEPT_WAIT
        return b""

    def refuse(self, code: str, message: str, px: list[PxPeer] | None = None) -> bytes:
        """Refuse the link (naming ``px``, members to try instead); returns the Refuse
        frame to send. The link is closed."""
        self.state = LinkState.CLOSED
        return encode_message(Refuse(code[:256], message[:256], px or []))

    def bye(self, reason: str = "") -> bytes:
        """Leave: returns the Bye frame to send. The link is closed."""
        self.state = LinkState.CLOSED
        return encode_message(Bye(reason[:256]))

    def receive_data(self, data: bytes | bytearray) -> list[LinkEvent]:
        """Feed received bytes; return the events they complete, in order.

        Processing pauses after a ``PeerHello`` event until ``proceed()`` or
        ``refuse()`` is called. Raises ``RemoteProtocolError`` when the peer
        breaks the protocol; the link must then be closed.
        """
        if self.state is LinkState.CLOSED:
            return []
        if data:
            self._pending.extend(self._frames.feed(data))
        if not self._pending or self.state is LinkState.DECIDE:
            return []
        if self.state is LinkState.OPEN:
            return self._receive_open()
        return self._receive_handshake()

    def _receive_open(self) -> list[LinkEvent]:
        frames, self._pending = self._pending, []
        events: list[LinkEvent] = []
        for body in frames:
            msg = decode_message(body)
            if type(msg) in GOSSIP_TYPES:
                # A Batch's body is checked once it is known to be new.
                events.append(msg)  # type: ignore[arg-type]
            elif type(msg) is Ping:
                self.peer_links = msg.links
                self.peer_keep = msg.keep
                self._echo = msg.time
                self.pings_received += 1
            elif type(msg) is Pong:
                self.peer_links = msg.links
                self.peer_keep = msg.keep
                self.last_echo = msg.time
                self.pongs_received += 1
            elif type(msg) is Bye:
                self.state = LinkState.CLOSED
                events.append(PeerBye(msg.reason))
                break
            elif type(msg) is Refuse:
                # The higher-id side may refuse after we (the deciding side) accepted.
                self.state = LinkState.CLOSED
                events.append(PeerRefused(msg.code, msg.message, tuple(msg.px)))
                break
            else:
                raise RemoteProtocolError(
                    "unexpected_message", f"{type(msg).__name__} on an open link"
                )
        return events

    def _receive_handshake(self) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        while self._pending and self.state in (LinkState.HELLO_WAIT, LinkState.ACCEPT_WAIT):
            msg = decode_message(self._pending.pop(0))
            if type(msg) is Refuse:
                self.state = LinkState.CLOSED
                self._pending.clear()
                return [*events, PeerRefused(msg.code, msg.message, tuple(msg.px))]
            if self.state is LinkState.HELLO_WAIT and type(msg) is Hello:
                self.peer = msg
                self.state = LinkState.DECIDE
                return [PeerHello(msg)]
            if self.state is LinkState.ACCEPT_WAIT and type(msg) is Accept:
                self.state = LinkState.OPEN
                events.append(LinkOpen())
                break
            raise RemoteProtocolError(
                "bad_handshake", f"{type(msg).__name__} during handshake ({self.state.value})"
            )
        if self.state is LinkState.OPEN and self._pending:
            events.extend(self._receive_open())
        return events
