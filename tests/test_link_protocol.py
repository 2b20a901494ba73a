"""The LinkProtocol state machine: two machines joined over a fake wire, and the rules alone."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgspec
import pytest

from p2pnode import PROTOCOL_VERSION
from p2pnode.errors import LocalError, RemoteProtocolError
from p2pnode.gossip.signing import Verifier, sign_batch
from p2pnode.identity import NodeIdentity
from p2pnode.testing import make_identity
from p2pnode.wire.frames import FrameDecoder
from p2pnode.wire.link import (
    LinkEvent,
    LinkOpen,
    LinkProtocol,
    LinkState,
    PeerBye,
    PeerHello,
    PeerRefused,
    check_hello,
)
from p2pnode.wire.messages import (
    Accept,
    Batch,
    Bye,
    Hello,
    Item,
    Ping,
    Pong,
    Refuse,
    WireMessage,
    decode_message,
    encode_message,
)

LOW = b"\x01" * 16
HIGH = b"\x02" * 16
MAX_FRAME = 4096
MAX_PAYLOAD = 1024


def hello(node_id: bytes, *, version: int = PROTOCOL_VERSION, network: str = "") -> Hello:
    return Hello(version, node_id, f"node-{node_id[0]}", "127.0.0.1:7420", network=network)


def proto(node_id: bytes) -> LinkProtocol:
    return LinkProtocol(hello(node_id), max_frame=MAX_FRAME, max_payload=MAX_PAYLOAD)


#: Origins of batches (not the link's ends: a link carries batches of any origin).
ORIGIN_A = make_identity(random.Random(1))
ORIGIN_B = make_identity(random.Random(2))


def gossip(n: int, origin: NodeIdentity = ORIGIN_A, data: bytes = b"data") -> Batch:
    """A signed batch of one message, one hop from its origin."""
    batch = sign_batch(origin, n.to_bytes(16, "big"), None, [Item(bytes(16), "topic", data)])
    return msgspec.structs.replace(batch, hops=1)


def decode_all(stream: bytes) -> list[WireMessage]:
    return [decode_message(b) for b in FrameDecoder(MAX_FRAME).feed(stream)]


@dataclass
class Side:
    """One end of the fake wire: a LinkProtocol, what it said, what it saw."""

    proto: LinkProtocol
    refuse_with: tuple[str, str] | None = None
    sent: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    events: list[LinkEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.say(self.proto.hello_bytes())

    def say(self, data: bytes) -> None:
        self.sent += data
        self.outbox += data

    def receive(self, data: bytes) -> None:
        """Feed bytes; on PeerHello decide (check_hello, then proceed or refuse) and resume."""
        events = self.proto.receive_data(data)
        while events:
            self.events.extend(events)
            if not isinstance(events[-1], PeerHello):
                return
            problem = check_hello(self.proto.local, events[-1].hello) or self.refuse_with
            if problem is not None:
                self.say(self.proto.refuse(*problem))
                return
            self.say(self.proto.proceed())
            events = self.proto.receive_data(b"")

    def take(self) -> bytes:
        data = bytes(self.outbox)
        self.outbox.clear()
        return data


def exchange(a: Side, b: Side) -> None:
    """Carry bytes both ways until neither side has anything left to say."""
    for _ in range(20):
        if not a.outbox and not b.outbox:
            return
        to_b, to_a = a.take(), b.take()
        if to_b:
            b.receive(to_b)
        if to_a:
            a.receive(to_a)
    raise AssertionError("the two sides kept talking")


def open_pair() -> tuple[Side, Side]:
    low, high = Side(proto(LOW)), Side(proto(HIGH))
    exchange(low, high)
    return low, high


def test_handshake_lower_id_sends_accept_and_both_open() -> None:
    low, high = open_pair()
    assert low.proto.state is LinkState.OPEN
    assert high.proto.state is LinkState.OPEN
    assert low.proto.decides is True
    assert high.proto.decides is False
    assert decode_all(bytes(low.sent)) == [low.proto.local, Accept()]
    assert decode_all(bytes(high.sent)) == [high.proto.local]
    assert low.events == [PeerHello(high.proto.local)]
    assert high.events == [PeerHello(low.proto.local), LinkOpen()]
    assert low.proto.peer == high.proto.local
    assert high.proto.peer == low.proto.local


def test_handshake_is_the_same_whichever_side_is_a() -> None:
    high, low = Side(proto(HIGH)), Side(proto(LOW))
    exchange(high, low)
    assert decode_all(bytes(low.sent)) == [low.proto.local, Accept()]
    assert high.events == [PeerHello(low.proto.local), LinkOpen()]
    assert (low.proto.state, high.proto.state) == (LinkState.OPEN, LinkState.OPEN)


def test_gossip_flows_both_ways() -> None:
    low, high = open_pair()
    low.events.clear()
    high.events.clear()
    low.say(encode_message(gossip(1, ORIGIN_A)) + encode_message(gossip(2, ORIGIN_B)))
    high.say(encode_message(gossip(3, ORIGIN_B)))
    exchange(low, high)
    assert high.events == [gossip(1, ORIGIN_A), gossip(2, ORIGIN_B)]
    assert low.events == [gossip(3, ORIGIN_B)]
    # Batches arrive intact: still verifiable by the receiver.
    verifier = Verifier(MAX_PAYLOAD)
    for event in [*high.events, *low.events]:
        assert isinstance(event, Batch)
        verifier.verify(event)


def test_frames_behind_hello_and_accept_in_one_chunk_are_not_lost() -> None:
    high = proto(HIGH)
    low_hello = hello(LOW)
    chunk = b"".join(
        encode_message(m) for m in (low_hello, Accept(), gossip(1), gossip(2), Bye("later"))
    )
    assert high.receive_data(chunk) == [PeerHello(low_hello)]
    assert high.state is LinkState.DECIDE
    assert high.has_pending
    # Paused: nothing more comes out until proceed() or refuse().
    assert high.receive_data(b"") == []
    assert high.receive_data(encode_message(gossip(3))) == []
    assert high.proceed() == b""
    assert high.state is LinkState.ACCEPT_WAIT
    assert high.receive_data(b"") == [LinkOpen(), gossip(1), gossip(2), PeerBye("later")]
    assert high.state is LinkState.CLOSED
    assert high.receive_data(b"") == []


def test_frames_behind_accept_in_one_chunk_are_not_lost() -> None:
    high = proto(HIGH)
    assert high.receive_data(encode_message(hello(LOW))) == [PeerHello(hello(LOW))]
    high.proceed()
    chunk = encode_message(Accept()) + encode_message(gossip(1)) + encode_message(gossip(2))
    assert high.receive_data(chunk) == [LinkOpen(), gossip(1), gossip(2)]
    assert high.state is LinkState.OPEN
    assert not high.has_pending


def test_frames_behind_hello_on_the_deciding_side_are_not_lost() -> None:
    low = proto(LOW)
    chunk = encode_message(hello(HIGH)) + encode_message(Bye("bye"))
    assert low.receive_data(chunk) == [PeerHello(hello(HIGH))]
    assert low.proceed() == encode_message(Accept())
    assert low.state is LinkState.OPEN
    assert low.receive_data(b"") == [PeerBye("bye")]
    assert low.state is LinkState.CLOSED


def test_refuse_sends_refuse_and_the_other_side_sees_peer_refused() -> None:
    low = Side(proto(LOW), refuse_with=("duplicate", "already linked to this node"))
    high = Side(proto(HIGH))
    exchange(low, high)
    assert decode_all(bytes(low.sent)) == [
        low.proto.local, Refuse("duplicate", "already linked to this node")
    ]
    assert low.proto.state is LinkState.CLOSED
    assert high.proto.state is LinkState.CLOSED
    assert high.events == [
        PeerHello(low.proto.local), PeerRefused("duplicate", "already linked to this node")
    ]


def test_refuse_received_while_waiting_for_hello() -> None:
    p = proto(HIGH)
    chunk = encode_message(Refuse("too_many_links", "full")) + encode_message(gossip(1))
    assert p.receive_data(chunk) == [PeerRefused("too_many_links", "full")]
    assert p.state is LinkState.CLOSED
    assert not p.has_pending
    assert p.receive_data(encode_message(gossip(2))) == []


def test_refuse_and_bye_truncate_long_texts() -> None:
    p = proto(LOW)
    assert decode_all(p.refuse("c" * 300, "m" * 300)) == [Refuse("c" * 256, "m" * 256)]
    assert p.state is LinkState.CLOSED
    assert decode_all(proto(LOW).bye("r" * 300)) == [Bye("r" * 256)]


def test_local_bye_closes() -> None:
    low, _high = open_pair()
    assert decode_all(low.proto.bye("shutdown")) == [Bye("shutdown")]
    assert low.proto.state is LinkState.CLOSED
    assert low.proto.receive_data(encode_message(gossip(1))) == []


def test_refusal_by_the_higher_side_is_peer_refused_on_the_lower_side() -> None:
    # The higher side may refuse for a reason of its own (too_many_links); it always
    # sends Hello first, so the lower side has already proceeded when Refuse arrives.
    low = Side(proto(LOW))
    high = Side(proto(HIGH), refuse_with=("too_many_links", "full"))
    exchange(low, high)
    assert low.events == [PeerHello(high.proto.local), PeerRefused("too_many_links", "full")]
    assert low.proto.state is LinkState.CLOSED


def test_check_hello() -> None:
    local = hello(LOW, network="n")
    assert check_hello(local, hello(HIGH, network="n")) is None
    version = check_hello(local, hello(HIGH, version=PROTOCOL_VERSION + 1, network="n"))
    assert version is not None
    assert version[0] == "version_mismatch"
    selfcheck = check_hello(local, hello(LOW, network="n"))
    assert selfcheck is not None
    assert selfcheck[0] == "self"
    network = check_hello(local, hello(HIGH, network="other"))
    assert network is not None
    assert network[0] == "network_mismatch"
    # The version is checked first: nothing else can be trusted across versions.
    first = check_hello(local, hello(LOW, version=PROTOCOL_VERSION + 1, network="other"))
    assert first is not None
    assert first[0] == "version_mismatch"


@pytest.mark.parametrize(
    ("peer", "code"),
    [
        (hello(HIGH, version=PROTOCOL_VERSION + 1), "version_mismatch"),
        (hello(LOW), "self"),
        (hello(HIGH, network="elsewhere"), "network_mismatch"),
    ],
)
def test_bad_hello_is_refused_over_the_wire(peer: Hello, code: str) -> None:
    a = Side(proto(LOW))
    b = Side(LinkProtocol(peer, max_frame=MAX_FRAME, max_payload=MAX_PAYLOAD))
    exchange(a, b)
    assert a.proto.state is LinkState.CLOSED
    assert b.proto.state is LinkState.CLOSED
    refusals = [m for m in decode_all(bytes(a.sent)) if isinstance(m, Refuse)]
    assert [r.code for r in refusals] == [code]


def expect_error(p: LinkProtocol, data: bytes, code: str) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        p.receive_data(data)
    assert info.value.code == code
    return info.value


def test_gossip_before_hello_is_bad_handshake() -> None:
    expect_error(proto(HIGH), encode_message(gossip(1)), "bad_handshake")


def test_gossip_before_accept_is_bad_handshake() -> None:
    p = proto(HIGH)
    p.receive_data(encode_message(hello(LOW)))
    p.proceed()
    expect_error(p, encode_message(gossip(1)), "bad_handshake")


@pytest.mark.parametrize("msg", [Accept(), Bye("x")], ids=["accept", "bye"])
def test_other_messages_before_hello_are_bad_handshake(msg: WireMessage) -> None:
    expect_error(proto(HIGH), encode_message(msg), "bad_handshake")


def test_second_hello_while_waiting_for_accept_is_bad_handshake() -> None:
    p = proto(HIGH)
    p.receive_data(encode_message(hello(LOW)))
    p.proceed()
    expect_error(p, encode_message(hello(LOW)), "bad_handshake")


def test_hello_on_open_link_is_unexpected_message() -> None:
    low, high = open_pair()
    expect_error(low.proto, encode_message(hello(HIGH)), "unexpected_message")
    expect_error(high.proto, encode_message(hello(LOW)), "unexpected_message")


def test_accept_on_the_deciding_side_is_unexpected_message() -> None:
    low, _high = open_pair()
    expect_error(low.proto, encode_message(Accept()), "unexpected_message")


def test_batch_body_is_checked_by_the_verifier_not_the_link() -> None:
    # The link does not decode a batch's body (that waits until the batch is known to be
    # new); the payload limit is enforced when the body is verified.
    _low, high = open_pair()
    ok = gossip(1, data=b"x" * MAX_PAYLOAD)
    big = gossip(2, data=b"x" * (MAX_PAYLOAD + 1))
    assert high.proto.receive_data(encode_message(ok) + encode_message(big)) == [ok, big]
    assert high.proto.state is LinkState.OPEN
    verifier = Verifier(MAX_PAYLOAD)
    assert verifier.verify(ok).items[0].data == b"x" * MAX_PAYLOAD
    with pytest.raises(RemoteProtocolError) as info:
        verifier.verify(big)
    assert info.value.code == "too_large"


def test_batch_with_a_garbage_body_passes_the_link() -> None:
    _low, high = open_pair()
    junk = msgspec.structs.replace(gossip(1), body=b"\xc1 not msgpack")
    assert high.proto.receive_data(encode_message(junk)) == [junk]
    with pytest.raises(RemoteProtocolError) as info:
        Verifier(MAX_PAYLOAD).verify(junk)
    assert info.value.code == "bad_signature"  # the signature was over the real body


def test_ping_is_answered_with_pong_and_pong_is_not_an_event() -> None:
    low, high = open_pair()
    high.proto.local_links = 3
    chunk = encode_message(Ping(12.5, 7, True)) + encode_message(gossip(1))
    assert high.proto.receive_data(chunk) == [gossip(1)]
    assert (high.proto.peer_links, high.proto.peer_keep) == (7, True)
    assert decode_all(high.proto.data_to_send()) == [Pong(12.5, 3, False)]
    assert low.proto.receive_data(encode_message(Pong(12.5, 3, False))) == []
    assert (low.proto.last_echo, low.proto.peer_links, low.proto.pongs_received) == (12.5, 3, 1)


def test_many_pings_get_one_pong_for_the_newest() -> None:
    """A peer cannot make the machine produce more than one Pong per read: Pings are
    counted (the caller rate-limits them) and only the newest is echoed."""
    _low, high = open_pair()
    pings = b"".join(encode_message(Ping(float(k), k)) for k in range(1000))
    assert high.proto.receive_data(pings) == []
    assert high.proto.pings_received == 1000
    assert high.proto.peer_links == 999
    assert decode_all(high.proto.data_to_send()) == [Pong(999.0, 0, False)]
    assert not high.proto.has_output
    assert high.proto.data_to_send() == b""
    high.proto.receive_data(encode_message(Ping(5.0)))
    assert high.proto.has_output
    assert high.proto.pings_received == 1001
    assert decode_all(high.proto.data_to_send()) == [Pong(5.0, 0, False)]


def test_frame_over_max_frame_is_too_large() -> None:
    low, _high = open_pair()
    expect_error(low.proto, (MAX_FRAME + 1).to_bytes(4, "big"), "too_large")


def test_garbage_frame_is_bad_message() -> None:
    expect_error(proto(LOW), b"\x00\x00\x00\x01\xc1", "bad_message")
    low, _high = open_pair()
    expect_error(low.proto, b"\x00\x00\x00\x02\x91\x63", "bad_message")


def test_bye_gives_peer_bye_and_closed() -> None:
    low, high = open_pair()
    chunk = encode_message(gossip(1)) + encode_message(Bye("going")) + encode_message(gossip(2))
    assert high.proto.receive_data(chunk) == [gossip(1), PeerBye("going")]
    assert high.proto.state is LinkState.CLOSED
    assert high.proto.receive_data(encode_message(gossip(3))) == []
    low.say(low.proto.bye())
    assert low.proto.state is LinkState.CLOSED


def test_misuse_is_a_local_error() -> None:
    p = proto(LOW)
    with pytest.raises(LocalError):
        _ = p.decides
    with pytest.raises(LocalError):
        p.proceed()
    p.receive_data(encode_message(hello(HIGH)))
    p.proceed()
    with pytest.raises(LocalError):
        p.proceed()


def transcript_for_high() -> bytes:
    msgs: list[WireMessage] = [hello(LOW), Accept(), *(gossip(i) for i in range(5)), Bye("end")]
    return b"".join(encode_message(m) for m in msgs)


def transcript_for_low() -> bytes:
    msgs: list[WireMessage] = [hello(HIGH), *(gossip(i, ORIGIN_B) for i in range(5)), Bye("end")]
    return b"".join(encode_message(m) for m in msgs)


@pytest.mark.parametrize(
    ("node_id", "transcript"),
    [(HIGH, transcript_for_high()), (LOW, transcript_for_low())],
    ids=["high", "low"],
)
def test_byte_at_a_time_gives_the_same_events(node_id: bytes, transcript: bytes) -> None:
    whole = Side(proto(node_id))
    whole.receive(transcript)
    bytewise = Side(proto(node_id))
    for i in range(len(transcript)):
        bytewise.receive(transcript[i : i + 1])
    assert whole.events == bytewise.events
    assert len(whole.events) >= 7  # PeerHello, (LinkOpen), 5 x Batch, PeerBye
    assert isinstance(whole.events[-1], PeerBye)
    assert whole.sent == bytewise.sent
    assert whole.proto.state is bytewise.proto.state is LinkState.CLOSED
