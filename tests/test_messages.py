"""The wire message codec: every message type round-trips; invalid bodies are bad_message."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from p2pnode import PROTOCOL_VERSION
from p2pnode.errors import RemoteProtocolError
from p2pnode.wire.frames import FrameDecoder
from p2pnode.wire.messages import (
    Accept,
    Bye,
    Gossip,
    Hello,
    Refuse,
    WireMessage,
    decode_message,
    encode_message,
)

A = bytes(range(16))
B = bytes(range(16, 32))
MID = b"\xaa" * 16


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
    Gossip(MID, A, "default", b"payload", 0),
    Gossip(MID, A, "t" * 256, b"", 255),
    Gossip(MID, A, "chat", b"\x00\xff" * 100, 3, to=B),
    Bye(),
    Bye("shutting down"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: WireMessage) -> None:
    decoded = decode_message(body_of(msg))
    assert type(decoded) is type(msg)
    assert decoded == msg


def test_round_trip_through_the_frame_decoder() -> None:
    stream = b"".join(encode_message(m) for m in MESSAGES)
    bodies = FrameDecoder(1 << 16).feed(stream)
    assert [decode_message(b) for b in bodies] == MESSAGES


def test_gossip_to_defaults_to_none() -> None:
    msg = decode_message(pack([4, MID, A, "t", b"d", 1]))
    assert msg == Gossip(MID, A, "t", b"d", 1)
    assert isinstance(msg, Gossip)
    assert msg.to is None


def test_hello_from_a_future_version_with_extra_fields_decodes() -> None:
    body = pack([1, 7, A, "future", "h:1", "net", "new-field", 42, [1, {"k": b"v"}]])
    msg = decode_message(body)
    assert msg == Hello(7, A, "future", "h:1", network="net")


def test_hello_from_an_older_version_without_network_decodes() -> None:
    assert decode_message(pack([1, 1, A, "old", ""])) == Hello(1, A, "old", "")


def test_bye_without_reason_decodes() -> None:
    assert decode_message(pack([5])) == Bye("")


def gossip_fields(**over: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "id": MID, "origin": A, "topic": "t", "data": b"d", "hops": 0, "to": None
    }
    fields.update(over)
    return [4, *fields.values()]


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
    pytest.param(pack(gossip_fields(hops=-1)), id="gossip-negative-hops"),
    pytest.param(pack(gossip_fields(hops=256)), id="gossip-hops-256"),
    pytest.param(pack(gossip_fields(hops=1.0)), id="gossip-hops-float"),
    pytest.param(pack(gossip_fields(hops="1")), id="gossip-hops-str"),
    pytest.param(pack(gossip_fields(topic="")), id="gossip-empty-topic"),
    pytest.param(pack(gossip_fields(topic="t" * 257)), id="gossip-topic-too-long"),
    pytest.param(pack(gossip_fields(topic=b"t")), id="gossip-topic-bytes"),
    pytest.param(pack(gossip_fields(data="text")), id="gossip-data-str"),
    pytest.param(pack(gossip_fields(id=MID[:8])), id="gossip-id-8"),
    pytest.param(pack(gossip_fields(origin=A * 2)), id="gossip-origin-32"),
    pytest.param(pack(gossip_fields(to=B[:15])), id="gossip-to-15"),
    pytest.param(pack(gossip_fields(to="b" * 16)), id="gossip-to-str"),
    pytest.param(pack([4, MID, A, "t", b"d"]), id="gossip-missing-hops"),
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
    assert decode_message(pack([*gossip_fields(), "future"])) == Gossip(MID, A, "t", b"d", 0)


# -- Known bugs (see the report): a peer's bytes raise something other than RemoteProtocolError.


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
        decode_message(pack(gossip_fields(topic=topic)))
    assert info.value.code == "bad_message"
