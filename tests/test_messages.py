"""The wire message codec: every message type round-trips; invalid bodies are bad_message.
Batch bodies (what an origin signs) round-trip too, and are checked when decoded."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from p2pnode import PROTOCOL_VERSION
from p2pnode.config import MAX_TOPIC_BYTES, NodeConfig
from p2pnode.errors import ConfigError, RemoteProtocolError
from p2pnode.gossip.signing import sign_batch
from p2pnode.testing import make_identity
from p2pnode.wire.frames import HEADER_LEN, FrameDecoder
from p2pnode.wire.messages import (
    MAX_MEANT,
    MEANT_PREFIX,
    Accept,
    Announce,
    Batch,
    BatchBody,
    Bye,
    Digest,
    DigestEntry,
    Gossip,
    Graft,
    Hello,
    IHave,
    Item,
    Ping,
    Pong,
    Prune,
    Refuse,
    Reply,
    WireMessage,
    decode_body,
    decode_message,
    encode_body,
    encode_message,
    topic_problem,
)

A = bytes(range(16))
B = bytes(range(16, 32))
MID = b"\xaa" * 16
KEY = b"\x0b" * 32
SIG = b"\x5a" * 64
MAX_PAYLOAD = 1024
ORIGIN = make_identity(random.Random(1))


def pack(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


def body_of(msg: WireMessage) -> bytes:
    framed = encode_message(msg)
    assert int.from_bytes(framed[:4], "big") == len(framed) - 4
    return framed[4:]


MESSAGES: list[WireMessage] = [
    Hello(PROTOCOL_VERSION, A, "alpha", "10.0.0.1:7420"),
    Hello(PROTOCOL_VERSION, B, "b" * 64, "", network="net-tag"),
    Hello(65535, A, "é✓", "[::1]:1", network="x" * 256),
    Accept(),
    Refuse("duplicate", "already linked to this node"),
    Refuse("", ""),
    Batch(MID, A, 0, KEY, b"", SIG),
    Batch(MID, A, 255, KEY, b"\x00\xff" * 100, SIG),
    sign_batch(ORIGIN, MID, None, [Item(A, "default", b"payload")]),
    sign_batch(ORIGIN, MID, B, [Item(A, "t" * 256, b""), Item(B, "chat", b"\x00\xff" * 100)]),
    Bye(),
    Bye("shutting down"),
    Ping(0.0),
    Ping(123456.789, 16, True),
    Pong(-1.5),
    Pong(1e9, 1_000_000, True),
    IHave([]),
    IHave([Announce(A + MID, 0), Announce(B + MID, 255)], repair=True),
    IHave([Announce(A + MID, 3)] * 4096),
    Graft([]),
    Graft([A + MID, B + MID], [A]),
    Prune([A, B]),
    Digest([]),
    Digest([DigestEntry(A, 1764100000000000, [1, 5, 7, 7]), DigestEntry(B, 0, [])]),
    Reply(A, MID, B, 1, KEY, b"body", SIG),
    Reply(A, MID, B, 255, KEY, b"", SIG),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: WireMessage) -> None:
    decoded = decode_message(body_of(msg))
    assert type(decoded) is type(msg)
    assert decoded == msg


def test_round_trip_through_the_frame_decoder() -> None:
    stream = b"".join(encode_message(m) for m in MESSAGES)
    bodies = FrameDecoder(1 << 20).feed(stream)
    assert [decode_message(b) for b in bodies] == MESSAGES


def test_batch_fields_are_in_order() -> None:
    msg = decode_message(pack([4, MID, A, 3, KEY, b"body", SIG]))
    assert msg == Batch(MID, A, 3, KEY, b"body", SIG)
    assert isinstance(msg, Batch)


def test_ping_and_pong_defaults() -> None:
    assert decode_message(pack([6, 1.5])) == Ping(1.5, 0, False)
    assert decode_message(pack([7, 2.5])) == Pong(2.5, 0, False)


def test_gossip_is_not_a_wire_message() -> None:
    # Gossip is what local apps get; messages travel only inside batches.
    delivered = Gossip(MID, A, "t", b"d", 1)
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(msgspec.msgpack.encode(delivered))
    assert info.value.code == "bad_message"


def test_a_per_message_gossip_frame_of_the_old_layout_is_bad_message() -> None:
    # [4, id, origin, topic, data, hops, to]: tag 4 is now a Batch, which it does not fit.
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(pack([4, MID, A, "t", b"d", 1, None]))
    assert info.value.code == "bad_message"


def test_hello_from_a_future_version_with_extra_fields_decodes() -> None:
    body = pack([1, 7, A, "future", "h:1", "net", "new-field", 42, [1, {"k": b"v"}]])
    msg = decode_message(body)
    assert msg == Hello(7, A, "future", "h:1", network="net")


def test_hello_from_an_older_version_without_network_decodes() -> None:
    assert decode_message(pack([1, 1, A, "old", ""])) == Hello(1, A, "old", "")


def test_bye_without_reason_decodes() -> None:
    assert decode_message(pack([5])) == Bye("")


def batch_fields(**over: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "id": MID, "origin": A, "hops": 0, "key": KEY, "body": b"body", "sig": SIG
    }
    fields.update(over)
    return [4, *fields.values()]


def body_fields(**over: Any) -> list[Any]:
    fields: dict[str, Any] = {"id": MID, "origin": A, "to": None, "items": [[B, "t", b"d"]]}
    fields.update(over)
    return list(fields.values())


def hello_fields(**over: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "version": 1, "node_id": A, "name": "n", "listen": "", "network": ""
    }
    fields.update(over)
    return [1, *fields.values()]


INVALID: list[Any] = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(b"garbage, not msgpack at all", id="garbage"),
    pytest.param(b"\x95\x01", id="truncated-array"),
    pytest.param(pack([1, 1, A, "n", "l", "x"])[:-1], id="truncated-string"),
    pytest.param(pack({"tag": 1}), id="map-not-array"),
    pytest.param(pack([]), id="empty-array"),
    pytest.param(pack(42), id="bare-int"),
    pytest.param(pack([99]), id="unknown-tag"),
    pytest.param(pack([0]), id="tag-zero"),
    pytest.param(pack(["hello", 1, A, "n", ""]), id="string-tag"),
    pytest.param(pack([-1, 1, A, "n", ""]), id="negative-tag"),
    pytest.param(pack(hello_fields(version="1")), id="hello-version-str"),
    pytest.param(pack(hello_fields(version=-1)), id="hello-version-negative"),
    pytest.param(pack(hello_fields(version=65536)), id="hello-version-too-big"),
    pytest.param(pack(hello_fields(node_id="a" * 16)), id="hello-node-id-str"),
    pytest.param(pack(hello_fields(node_id=A[:15])), id="hello-node-id-15"),
    pytest.param(pack(hello_fields(node_id=A + b"x")), id="hello-node-id-17"),
    pytest.param(pack(hello_fields(node_id=b"")), id="hello-node-id-empty"),
    pytest.param(pack(hello_fields(name="")), id="hello-name-empty"),
    pytest.param(pack(hello_fields(name="n" * 65)), id="hello-name-too-long"),
    pytest.param(pack(hello_fields(listen=None)), id="hello-listen-none"),
    pytest.param(pack(hello_fields(network="x" * 257)), id="hello-network-too-long"),
    pytest.param(pack([1, 1, A, "n"]), id="hello-missing-field"),
    pytest.param(pack([3, "code"]), id="refuse-missing-message"),
    pytest.param(pack([3, "c" * 257, "m"]), id="refuse-code-too-long"),
    pytest.param(pack([3, 1, "m"]), id="refuse-code-int"),
    pytest.param(pack([5, 7]), id="bye-reason-int"),
    pytest.param(pack(batch_fields(hops=-1)), id="batch-negative-hops"),
    pytest.param(pack(batch_fields(hops=256)), id="batch-hops-256"),
    pytest.param(pack(batch_fields(hops=1.0)), id="batch-hops-float"),
    pytest.param(pack(batch_fields(hops="1")), id="batch-hops-str"),
    pytest.param(pack(batch_fields(id=MID[:8])), id="batch-id-8"),
    pytest.param(pack(batch_fields(id=None)), id="batch-id-none"),
    pytest.param(pack(batch_fields(origin=A * 2)), id="batch-origin-32"),
    pytest.param(pack(batch_fields(origin="a" * 16)), id="batch-origin-str"),
    pytest.param(pack(batch_fields(key=KEY[:31])), id="batch-key-31"),
    pytest.param(pack(batch_fields(key=KEY + b"x")), id="batch-key-33"),
    pytest.param(pack(batch_fields(key="k" * 32)), id="batch-key-str"),
    pytest.param(pack(batch_fields(sig=SIG[:63])), id="batch-sig-63"),
    pytest.param(pack(batch_fields(sig=SIG + b"x")), id="batch-sig-65"),
    pytest.param(pack(batch_fields(body="text")), id="batch-body-str"),
    pytest.param(pack(batch_fields(body=[1, 2])), id="batch-body-list"),
    pytest.param(pack([4, MID, A, 0, KEY, b"body"]), id="batch-missing-sig"),
    pytest.param(pack([6]), id="ping-missing-time"),
    pytest.param(pack([6, "1"]), id="ping-time-str"),
    pytest.param(pack([6, 1.0, -1]), id="ping-links-negative"),
    pytest.param(pack([7, 1.0, 1_000_001]), id="pong-links-too-big"),
    pytest.param(pack([7, 1.0, 0, "yes"]), id="pong-keep-str"),
    pytest.param(pack([8]), id="ihave-missing-batches"),
    pytest.param(pack([8, [[A, 1]]]), id="ihave-key-16"),
    pytest.param(pack([8, [[A + MID, 256]]]), id="ihave-hops-256"),
    pytest.param(pack([8, [[A + MID, 1]] * 4097]), id="ihave-too-many"),
    pytest.param(pack([8, [A + MID]]), id="ihave-entry-not-array"),
    pytest.param(pack([9, [A]]), id="graft-key-16"),
    pytest.param(pack([9, [A + MID] * 4097]), id="graft-too-many"),
    pytest.param(pack([9, [], [A[:15]]]), id="graft-origin-15"),
    pytest.param(pack([10]), id="prune-missing-origins"),
    pytest.param(pack([10, [A + MID]]), id="prune-origin-32"),
    pytest.param(pack([11, [[A, 1, [1, "2"]]]]), id="digest-range-str"),
    pytest.param(pack([11, [[A, -1, []]]]), id="digest-epoch-negative"),
    pytest.param(pack([11, [[A, 1]]]), id="digest-entry-missing-ranges"),
    pytest.param(pack([11, {"a": 1}]), id="digest-entries-map"),
]


@pytest.mark.parametrize("body", INVALID)
def test_invalid_body_is_bad_message(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(body)
    assert info.value.code == "bad_message"
    assert type(info.value) is RemoteProtocolError


def test_accept_with_extra_trailing_fields_decodes() -> None:
    # Trailing fields unknown to this version are ignored, for every message type.
    assert decode_message(pack([2, "extra", 1])) == Accept()
    assert decode_message(pack([*batch_fields(), [], "future"])) == Batch(
        MID, A, 0, KEY, b"body", SIG)


def test_a_batch_says_whom_a_copy_is_meant_for_and_older_nodes_ignore_it() -> None:
    meant = [b"m" * MEANT_PREFIX, b"n" * MEANT_PREFIX]
    frame = encode_message(Batch(MID, A, 2, KEY, b"body", SIG, meant))
    assert decode_message(frame[HEADER_LEN:]) == Batch(MID, A, 2, KEY, b"body", SIG, meant)
    assert decode_message(pack(batch_fields())).meant == []  # a node without the field

    class OldBatch(msgspec.Struct, tag=4, array_like=True):  # a node of before
        id: bytes
        origin: bytes
        hops: int
        key: bytes
        body: bytes
        sig: bytes

    old = msgspec.msgpack.decode(frame[HEADER_LEN:], type=OldBatch)
    assert (old.id, old.hops, old.body) == (MID, 2, b"body")


@pytest.mark.parametrize("meant", [[b"short"], [b"x" * 9], [b"m" * MEANT_PREFIX] * (MAX_MEANT + 1)])
def test_a_bad_meant_list_is_bad_message(meant: list[bytes]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(pack([*batch_fields(), meant]))
    assert info.value.code == "bad_message"


# -- Regressions: a peer's bytes once raised something other than RemoteProtocolError.


def test_invalid_utf8_in_a_string_is_bad_message() -> None:
    body = pack(hello_fields(name="nXme")).replace(b"nXme", b"n\xffme")
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(body)
    assert info.value.code == "bad_message"


def test_deeply_nested_trailing_field_is_bad_message() -> None:
    depth = 100_000
    head = pack(hello_fields())
    body = bytes([head[0] + 1]) + head[1:] + b"\x91" * depth + b"\xc0"
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(body)
    assert info.value.code == "bad_message"


def test_topic_over_max_topic_bytes_is_bad_message() -> None:
    topic = "€" * 100  # 100 characters, 300 UTF-8 bytes > MAX_TOPIC_BYTES (256)
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(pack(body_fields(items=[[MID, topic, b"d"]])), MAX_PAYLOAD)
    assert info.value.code == "bad_message"


@pytest.mark.parametrize("bad", ["", "a\nb", "€" * 100])
def test_a_bad_topic_after_good_ones_is_bad_message(bad: str) -> None:
    # Each topic is checked once per run of equal topics: a new one is checked again,
    # and so is a topic that comes back after another.
    items = [[MID, "t", b"d"], [MID, "t", b"d"], [MID, "u", b"d"], [MID, bad, b"d"]]
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(pack(body_fields(items=items)), MAX_PAYLOAD)
    assert info.value.code == "bad_message"
    items = [[MID, "t", b"d"], [MID, bad, b"d"], [MID, "t", b"d"]]
    with pytest.raises(RemoteProtocolError):
        decode_body(pack(body_fields(items=items)), MAX_PAYLOAD)


def test_a_payload_over_the_limit_after_a_good_one_of_the_same_topic_is_too_large() -> None:
    items = [[MID, "t", b"d"], [MID, "t", b"x" * (MAX_PAYLOAD + 1)]]
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(pack(body_fields(items=items)), MAX_PAYLOAD)
    assert info.value.code == "too_large"


def test_deeply_nested_body_is_bad_message() -> None:
    depth = 100_000
    head = pack(body_fields())
    data = bytes([head[0] + 1]) + head[1:] + b"\x91" * depth + b"\xc0"
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(data, MAX_PAYLOAD)
    assert info.value.code == "bad_message"


def test_invalid_utf8_in_a_topic_is_bad_message() -> None:
    data = pack(body_fields(items=[[MID, "tXpic", b"d"]])).replace(b"tXpic", b"t\xffpic")
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(data, MAX_PAYLOAD)
    assert info.value.code == "bad_message"


# -- Batch bodies ---------------------------------------------------------------------------


BODIES = [
    BatchBody(MID, A, None, []),
    BatchBody(MID, A, None, [Item(B, "default", b"payload")]),
    BatchBody(MID, A, B, [Item(B, "t" * 256, b""), Item(MID, "é✓", b"\x00" * MAX_PAYLOAD)]),
    BatchBody(MID, A, None, [Item(B, "é" * 128, b"x")]),  # a topic of 256 UTF-8 bytes
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_body_round_trip(body: BatchBody) -> None:
    assert decode_body(encode_body(body), MAX_PAYLOAD) == body


def test_body_fields_are_in_order() -> None:
    data = pack([MID, A, B, [[B, "t", b"d"], [MID, "u", b""]]])
    assert decode_body(data, MAX_PAYLOAD) == BatchBody(
        MID, A, B, [Item(B, "t", b"d"), Item(MID, "u", b"")]
    )
    assert decode_body(pack([MID, A, None, []]), MAX_PAYLOAD).to is None


def test_body_with_extra_trailing_fields_decodes() -> None:
    data = pack([MID, A, None, [[B, "t", b"d", "future"]], 7, 3, 9, 2, "future"])
    assert decode_body(data, MAX_PAYLOAD) == BatchBody(MID, A, None, [Item(B, "t", b"d")],
                                                       epoch=7, seq=3, retain=9, tprev=2)
    # A body without the sequence fields is unnumbered (seq 0).
    assert decode_body(pack([MID, A, None, []]), MAX_PAYLOAD).seq == 0


INVALID_BODIES: list[Any] = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xc1", id="reserved-byte"),
    pytest.param(pack({"id": MID}), id="map-not-array"),
    pytest.param(pack([MID, A, None]), id="missing-items"),
    pytest.param(pack([4, *body_fields()]), id="tagged"),
    pytest.param(pack(body_fields(id=MID[:15])), id="id-15"),
    pytest.param(pack(body_fields(origin=None)), id="origin-none"),
    pytest.param(pack(body_fields(to=B[:15])), id="to-15"),
    pytest.param(pack(body_fields(to="b" * 16)), id="to-str"),
    pytest.param(pack(body_fields(items=None)), id="items-none"),
    pytest.param(pack(body_fields(items=[B, "t", b"d"])), id="items-not-nested"),
    pytest.param(pack(body_fields(items=[[B, "t"]])), id="item-missing-data"),
    pytest.param(pack(body_fields(items=[[B[:8], "t", b"d"]])), id="item-id-8"),
    pytest.param(pack(body_fields(items=[[B, "", b"d"]])), id="item-topic-empty"),
    pytest.param(pack(body_fields(items=[[B, "t" * 257, b"d"]])), id="item-topic-257"),
    pytest.param(pack(body_fields(items=[[B, b"t", b"d"]])), id="item-topic-bytes"),
    pytest.param(pack(body_fields(items=[[B, "a\x00b", b"d"]])), id="item-topic-nul"),
    pytest.param(pack(body_fields(items=[[B, "line\n", b"d"]])), id="item-topic-newline"),
    pytest.param(pack(body_fields(items=[[B, "t", "text"]])), id="item-data-str"),
    pytest.param(
        pack(body_fields(items=[[B, "t", b"d"], [B, "bad\x7f", b"d"]])), id="second-item-bad"
    ),
]


@pytest.mark.parametrize("data", INVALID_BODIES)
def test_invalid_batch_body_is_bad_message(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(data, MAX_PAYLOAD)
    assert info.value.code == "bad_message"
    assert type(info.value) is RemoteProtocolError


def test_payload_over_max_payload_is_too_large() -> None:
    at_limit = pack(body_fields(items=[[B, "t", b"x" * MAX_PAYLOAD]]))
    assert decode_body(at_limit, MAX_PAYLOAD).items[0].data == b"x" * MAX_PAYLOAD
    over = pack(body_fields(items=[[B, "t", b"d"], [B, "t", b"x" * (MAX_PAYLOAD + 1)]]))
    with pytest.raises(RemoteProtocolError) as info:
        decode_body(over, MAX_PAYLOAD)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("a", True),
        ("chat/room-1 with spaces", True),
        ("t" * MAX_TOPIC_BYTES, True),
        ("é" * (MAX_TOPIC_BYTES // 2), True),
        ("é" * (MAX_TOPIC_BYTES // 2) + "x", False),
        ("€" * 100, False),
        ("", False),
        ("a\x00", False),
        ("tab\there", False),
        ("zero\u200bwidth", False),
    ],
)
def test_topic_problem(topic: str, ok: bool) -> None:
    problem = topic_problem(topic)
    assert (problem is None) is ok
    if not ok:
        assert isinstance(problem, str)
        assert problem



# -- Known bugs (see the report) ------------------------------------------------------------


def test_a_batch_of_one_largest_message_fits_the_smallest_allowed_frame() -> None:
    payload = 512 * 1024
    margin = MAX_TOPIC_BYTES + 256  # the smallest max_frame - max_payload the config allows
    with pytest.raises(ConfigError):
        NodeConfig(max_payload=payload, max_frame=payload + margin - 1)
    cfg = NodeConfig(max_payload=payload, max_frame=payload + margin)
    item = Item(A, "t" * MAX_TOPIC_BYTES, b"x" * cfg.max_payload)
    batch = msgspec.structs.replace(sign_batch(ORIGIN, MID, B, [item]), hops=255)
    (frame,) = FrameDecoder(cfg.max_frame).feed(encode_message(batch))
    assert decode_message(frame) == batch
