"""The clients' shared core without I/O: replies matched to requests in order, events
collected, refusals named, the window; the input whole, byte by byte, and cut short."""

from __future__ import annotations

import json
from typing import Any

import pytest

from p2pnode.client.protocol import (
    MAX_LINE,
    ClientProtocol,
    ProtocolViolation,
    encode_publish,
    event_payload,
)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def ok(msg_id: str) -> bytes:
    return line({"ok": True, "msg_id": msg_id, "peers": 1})


def refused(code: str, req: int | None = None) -> bytes:
    """An error reply; ``req``: the refused request's number, as the node names it."""
    body: dict[str, Any] = {"ok": False, "error": {"code": code, "message": "no"}}
    if req is not None:
        body["req"] = req
    return line(body)


def event(data: str) -> bytes:
    return line({"event": "message", "msg_id": "m", "origin": "o", "topic": "t", "hops": 0,
                 "data": data})


def sent_lines(proto: ClientProtocol) -> list[dict[str, Any]]:
    return [json.loads(x) for x in bytes(proto.take_out()).splitlines()]


def test_encoding_text_bytes_and_direct() -> None:
    assert json.loads(encode_publish("t", "héllo")) == {"op": "publish", "topic": "t",
                                                        "data": "héllo"}
    assert "héllo".encode() in encode_publish("t", "héllo")  # not escaped: the line stays short
    assert json.loads(encode_publish("t", b"\xff\x00")) == {"op": "publish", "topic": "t",
                                                            "data_b64": "/wA="}
    assert json.loads(encode_publish("t", b"text", to="ab" * 16))["to"] == "ab" * 16
    assert encode_publish("t", "x").endswith(b"}\n")
    with pytest.raises(UnicodeEncodeError):
        encode_publish("t", "\ud800")  # refused before anything is queued
    assert event_payload({"data_b64": "/wA="}) == b"\xff\x00"


def test_encode_publish_lines_are_the_structs_encoding() -> None:
    # The shortcut for text without "to" or "retain" (a line's start kept per topic)
    # gives the bytes the full encoding gives, quiet or not, for any text.
    from p2pnode.client.protocol import _encode, _Publish
    for topic in ("t", "sensors/a", "é/\"q\"", "t"):
        for data in ("", "héllo", 'quote " and \\ and \n', "x" * 300, "\u2028"):
            for ack in (True, False):
                assert encode_publish(topic, data, ack=ack) == \
                    _encode(_Publish(topic, data, None, None, False, ack)) + b"\n"
    with pytest.raises((TypeError, ValueError)):
        encode_publish("t", "\ud800")  # a lone surrogate: refused before it is queued


@pytest.mark.parametrize("split", ["whole", "bytewise", "cut"])
def test_replies_match_requests_in_order_with_events_between(split: str) -> None:
    """Pipelined publishes go quiet: the node answers them only when it refuses one
    (naming it with ``req``); any later reply acknowledges the quiet ones before it."""
    proto = ClientProtocol()
    waited: list[dict[str, Any] | None] = []
    assert proto.publish("a", "1") == 1
    assert proto.queue(b'{"op":"status"}\n', waited.append) == 2
    assert proto.publish("$x", "2") == 3
    assert proto.publish("a", "3") == 4
    proto.queue(b'{"op":"peers"}\n', None)  # raw: its reply goes to ``replies``
    sent = sent_lines(proto)
    assert [r["op"] for r in sent] == ["publish", "status", "publish", "publish", "peers"]
    assert [r.get("ack") for r in sent] == [False, None, False, False, None]
    assert proto.unacked == 5
    wire = (event("e1") + line({"ok": True, "name": "n"}) + refused("bad_request", 3)
            + event("e2") + line({"ok": True, "peers": []}))
    if split == "whole":
        proto.feed(wire)
    elif split == "bytewise":
        for i in range(len(wire)):
            proto.feed(wire[i:i + 1])
    else:
        proto.feed(wire + b'{"event":"mess')  # a line not complete yet stays
        assert len(proto.events) == 2
        proto.feed(b'age","data":"e3"}\n')
    assert waited == [{"ok": True, "name": "n"}]
    assert [e["data"] for e in proto.events] == ["e1", "e2", "e3"][:len(proto.events)]
    assert proto.replies.popleft() == {"ok": True, "peers": []}
    err = proto.pop_error()
    assert err is not None
    assert (err.seq, err.topic, err.code) == (3, "$x", "bad_request")
    assert "publish #3 to '$x' refused" in str(err)
    assert proto.pop_error() is None
    assert proto.unacked == 0
    assert proto.unacked_bytes == 0


def test_later_refusals_are_counted_on_the_first() -> None:
    proto = ClientProtocol()
    for k in range(5):
        proto.publish("t", str(k))
    # #2 and #5 were taken (no reply); #1, #3 and #4 refused
    proto.feed(refused("too_large", 1) + refused("rate_limited", 3) + refused("x", 4))
    err = proto.pop_error()
    assert err is not None
    assert err.seq == 1
    assert err.later_errors == 2
    assert [r.seq for r in err.refusals] == [1, 3, 4]
    assert "and 2 later publishes" in str(err)
    assert proto.unacked == 1  # #5: nothing said about it yet
    assert proto.flush_target() == 6  # a sync, so that a reply confirms #5
    assert sent_lines(proto)[-1] == {"op": "sync"}
    proto.feed(line({"ok": True}))
    assert proto.unacked == 0
    assert proto.pop_error() is None


def test_a_reply_is_asked_for_every_quarter_window_and_when_the_window_fills() -> None:
    proto = ClientProtocol(window=8, window_bytes=1 << 20)
    for k in range(8):
        proto.publish("t", str(k))
    assert [r.get("ack") for r in sent_lines(proto)] == [False, None] * 4
    assert not proto.has_room()
    assert proto.flush_target() == 8  # the last one asks for a reply already: no sync
    assert proto.take_out() == b""
    by_bytes = ClientProtocol(window=1000, window_bytes=1000)
    for _ in range(9):
        by_bytes.publish("t", "x" * 100)  # lines of ~140 bytes: a reply every 250 bytes
    acks = [r.get("ack") for r in sent_lines(by_bytes)]
    assert acks[:2] == [False, None]
    assert None in acks[2:]
    assert not by_bytes.has_room() or acks[-1] is None


def test_a_closing_event_confirms_the_quiet_publishes_it_counts() -> None:
    proto = ClientProtocol()
    for k in range(3):
        proto.publish("t", str(k))
    proto.feed(line({"event": "closing", "reason": "the node is stopping", "handled": 2})
               + b"")
    assert not proto.events  # not an application event
    assert proto.unacked == 1
    proto.feed(b"")
    assert proto.lost == 1
    assert proto.eof_message().startswith(
        "the node closed the connection: the node is stopping, before it confirmed 1 publish ")


def test_the_window_and_its_half() -> None:
    proto = ClientProtocol(window=4, window_bytes=1 << 20)
    for k in range(3):
        proto.publish("t", str(k))
    assert proto.has_room()
    proto.publish("t", "3")
    assert not proto.has_room()
    proto.feed(ok("a"))
    assert proto.has_room()
    assert not proto.below_half()
    proto.feed(ok("b"))
    assert proto.below_half()
    small = ClientProtocol(window=100, window_bytes=100)
    small.publish("t", "x" * 500)  # one request larger than the window goes alone
    assert not small.has_room()
    small.feed(ok("a"))
    assert small.has_room()


def test_events_past_the_limit_drop_the_oldest() -> None:
    proto = ClientProtocol(max_events=3)
    proto.feed(b"".join(event(str(k)) for k in range(5)))
    assert [e["data"] for e in proto.events] == ["2", "3", "4"]
    assert proto.events_dropped == 2


@pytest.mark.parametrize("bad", [b"not json\n", b"[1, 2]\n", b"x" * (MAX_LINE + 1)])
def test_what_is_not_the_api_is_a_protocol_violation(bad: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        ClientProtocol().feed(bad)


def test_the_end_of_the_connection_fails_waiters_and_counts_lost_publishes() -> None:
    proto = ClientProtocol()
    waited: list[dict[str, Any] | None] = []
    proto.publish("t", "1")
    proto.queue(b'{"op":"status"}\n', waited.append)
    proto.publish("t", "2")
    proto.feed(line({"ok": True, "name": "n"}))  # the status reply: #1 was taken too
    assert waited == [{"ok": True, "name": "n"}]
    waited.clear()
    proto.queue(b'{"op":"peers"}\n', waited.append)
    proto.feed(b"")
    assert proto.eof
    assert waited == [None]
    assert proto.lost == 1
    with pytest.raises(ProtocolViolation):
        proto.publish("t", "3")
