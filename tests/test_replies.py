"""Request/reply without I/O: the reverse-path table, the request filter, reply
signatures, the wire bodies, and the order of a connection's replies."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.api.requests import ReplyOrder, encode_replies
from p2pnode.config import NodeConfig
from p2pnode.errors import ConfigError, RemoteProtocolError
from p2pnode.gossip.replies import (
    HERE,
    Drop,
    ReplyPaths,
    RequestFilter,
    ToPeer,
    sign_reply,
    verify_reply,
)
from p2pnode.gossip.signing import Verifier
from p2pnode.net.outqueue import OutQueue
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Reply, decode_message, encode_message
from p2pnode.wire.requests import (
    ReplyBody,
    RequestBody,
    decode_reply_body,
    decode_request,
    encode_request,
)

P, Q, R = b"P" * 16, b"Q" * 16, b"R" * 16  # peers
K1, K2, K3 = b"1" * 32, b"2" * 32, b"3" * 32  # request keys (origin + message id)
X, Y = b"X" * 16, b"Y" * 16  # repliers
REPLIER = make_identity(random.Random(7))
OTHER = make_identity(random.Random(8))


# -- reverse paths -----------------------------------------------------------------------


def test_a_path_routes_one_reply_per_replier_up_to_max_replies() -> None:
    paths = ReplyPaths(100, 50)
    paths.add(K1, P, 5.0, 2, now=0.0)
    assert paths.route(K1, X, Q, 1.0) == ToPeer(P)
    assert paths.route(K1, X, Q, 1.0) == ToPeer(P)  # routing alone changes nothing
    paths.commit(K1, X)
    assert paths.route(K1, X, R, 1.0) == Drop("duplicate")
    assert paths.route(K1, Y, P, 1.0) == Drop("loop")  # from the link it would go back by
    paths.commit(K1, Y)
    assert paths.route(K1, b"Z" * 16, Q, 1.0) == Drop("over_limit")
    assert paths.route(K2, X, Q, 1.0) == Drop("unknown")


def test_a_request_asked_here_routes_its_replies_here() -> None:
    paths = ReplyPaths(100, 50)
    paths.add(K1, None, 5.0, 1, now=0.0)
    assert paths.route(K1, X, P, 0.0) == HERE
    assert paths.route(K1, X, None, 0.0) == HERE  # a local app's reply


def test_paths_expire_with_their_request() -> None:
    paths = ReplyPaths(100, 50)
    paths.add(K1, P, 1.0, 1, now=0.0)
    paths.add(K2, P, 3.0, 1, now=0.0)
    paths.add(K1, Q, 9.0, 1, now=0.5)  # a second copy keeps the first path
    assert paths.next_expiry() == 1.0
    assert paths.route(K1, X, Q, 0.99) == ToPeer(P)
    assert paths.route(K1, X, Q, 1.0) == Drop("unknown")
    assert paths.get(K1, 1.0) is None
    assert len(paths) == 2  # until expire() forgets it
    paths.expire(1.0)
    assert len(paths) == 1
    paths.expire(3.0)
    assert len(paths) == 0
    assert paths.evicted == 0


def test_a_peer_over_its_share_pushes_out_only_its_own_paths() -> None:
    paths = ReplyPaths(max_paths=6, max_per_peer=3)
    paths.add(K1, None, 5.0, 1, now=0.0)  # asked here
    paths.add(K2, Q, 5.0, 1, now=0.0)
    for i in range(10):
        paths.add(bytes([i]) * 32, P, 5.0, 1, now=0.0)
    assert len(paths) == 5  # P keeps its last 3
    assert paths.evicted == 7
    assert paths.get(K1, 0.0) is not None
    assert paths.get(K2, 0.0) is not None
    assert paths.get(bytes([9]) * 32, 0.0) is not None
    assert paths.get(bytes([6]) * 32, 0.0) is None


def test_a_full_table_takes_from_the_peer_with_the_most() -> None:
    paths = ReplyPaths(max_paths=4, max_per_peer=4)
    paths.add(K1, None, 5.0, 1, now=0.0)
    paths.add(K2, Q, 5.0, 1, now=0.0)
    paths.add(b"a" * 32, P, 5.0, 1, now=0.0)
    paths.add(b"b" * 32, P, 5.0, 1, now=0.0)
    paths.add(b"c" * 32, R, 5.0, 1, now=0.0)  # full: P (two) gives up its oldest
    assert paths.get(b"a" * 32, 0.0) is None
    assert {k for k in (K1, K2, b"b" * 32, b"c" * 32) if paths.get(k, 0.0)} == {
        K1, K2, b"b" * 32, b"c" * 32}
    paths.remove(K1)
    assert paths.get(K1, 0.0) is None


def test_the_expiry_heap_stays_bounded_under_churn() -> None:
    paths = ReplyPaths(max_paths=8, max_per_peer=8)
    for i in range(10_000):
        paths.add(i.to_bytes(32, "big"), P, 60.0, 1, now=0.0)
    assert len(paths) == 8
    assert len(paths._heap) <= 2 * 8 + 64


# -- the request filter ----------------------------------------------------------------------


def test_the_filter_takes_each_request_once_and_refuses_older_runs() -> None:
    seen = RequestFilter(max_origins=2, window=4)
    assert seen.accept(P, 10, 5)
    assert not seen.accept(P, 10, 5)  # a replay
    assert seen.accept(P, 10, 3)  # an earlier one that came later: still new
    assert not seen.accept(P, 9, 100)  # the origin's previous run
    for n in (6, 7, 8):
        assert seen.accept(P, 10, n)
    assert not seen.accept(P, 10, 2)  # below the window: counted as taken
    assert not seen.accept(P, 10, 3)
    assert seen.accept(P, 11, 1)  # a new run starts afresh
    assert seen.accept(Q, 1, 1)
    assert seen.accept(R, 1, 1)  # P, the least recently active, is forgotten
    assert seen.accept(P, 11, 1)


# -- replies on the wire ---------------------------------------------------------------------


def reply_body(**changes: object) -> ReplyBody:
    body = ReplyBody(origin=P, request=Q, replier=REPLIER.node_id, name="c", data=b"done")
    return msgspec.structs.replace(body, **changes)


def test_a_signed_reply_round_trips_and_verifies() -> None:
    reply = sign_reply(REPLIER, reply_body())
    assert (reply.origin, reply.request, reply.replier, reply.hops) == (
        P, Q, REPLIER.node_id, 1)
    decoded = decode_message(encode_message(reply)[4:])
    assert decoded == reply
    assert verify_reply(Verifier(1024), reply, 1024) == reply_body()


@pytest.mark.parametrize(("change", "code"), [
    ({"sig": b"\x00" * 64}, "bad_signature"),
    ({"key": OTHER.public}, "bad_signature"),  # a key that is not the replier's
    ({"origin": R}, "bad_message"),  # outer fields that do not match the body
    ({"body": b"\xc1"}, "bad_signature"),
])
def test_a_forged_or_altered_reply_is_refused(change: dict[str, object], code: str) -> None:
    reply = msgspec.structs.replace(sign_reply(REPLIER, reply_body()), **change)
    with pytest.raises(RemoteProtocolError) as info:
        verify_reply(Verifier(1024), reply, 1024)
    assert info.value.code == code


def test_a_reply_body_over_the_payload_limit_is_too_large() -> None:
    reply = sign_reply(REPLIER, reply_body(data=b"x" * 101))
    with pytest.raises(RemoteProtocolError) as info:
        decode_reply_body(reply, 100)
    assert info.value.code == "too_large"


def test_reply_fields_are_in_order() -> None:
    raw = msgspec.msgpack.encode([15, P, Q, R, 3, b"k" * 32, b"body", b"s" * 64])
    assert decode_message(raw) == Reply(P, Q, R, 3, b"k" * 32, b"body", b"s" * 64)


def test_request_bodies_are_checked() -> None:
    body = RequestBody("lights", 5000, 3, b"on")
    assert decode_request(encode_request(body)) == body
    for bad in (RequestBody("$mesh", 1, 1, b""), RequestBody("a\nb", 1, 1, b"")):
        with pytest.raises(RemoteProtocolError, match=r"topic|reserved") as info:
            decode_request(encode_request(bad))
        assert info.value.code == "bad_message"
    for raw in (b"", b"\x93\xa1t\x00\x01", msgspec.msgpack.encode(["t", 0, 1, b""])):
        with pytest.raises(RemoteProtocolError) as info:
            decode_request(raw)
        assert info.value.code == "bad_message"


# -- a connection's replies in request order -------------------------------------------------


async def test_replies_wait_behind_a_waiting_request() -> None:
    out = OutQueue(1 << 20)
    order = ReplyOrder(out)
    order.put(b"1\n")
    first = order.hold()
    order.put(b"3\n")
    second = order.hold()
    order.put(b"5\n")
    assert bytes(out._buf) == b"1\n"
    assert order.held_bytes == 4
    order.fill(second, b"4\n")  # answered first, sent in its turn
    assert bytes(out._buf) == b"1\n"
    order.fill(first, b"2\n")
    assert bytes(out._buf) == b"1\n2\n3\n4\n5\n"
    assert (order.waiting, order.held_bytes) == (False, 0)
    await order.wait_answered()
    await order.wait_room(0)


def test_an_answer_lists_its_replies() -> None:
    line = encode_replies(7, [b'{"from":"aa","name":"x","data":"y"}'], dropped=2)
    assert json.loads(line) == {"id": 7, "ok": True, "replies": [
        {"from": "aa", "name": "x", "data": "y"}], "dropped": 2}
    assert json.loads(encode_replies(None, [])) == {"ok": True, "replies": []}


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=200))
def test_request_and_reply_bodies_raise_only_protocol_errors(raw: bytes) -> None:
    codes = []
    for decode in (decode_request,
                   lambda data: decode_reply_body(Reply(P, Q, R, 1, b"k" * 32, data,
                                                        b"s" * 64), 64)):
        try:
            decode(raw)
        except RemoteProtocolError as exc:  # anything else fails the test
            codes.append(exc.code)
    assert set(codes) <= {"bad_message", "too_large"}


@pytest.mark.parametrize(("field", "value", "why"), [
    ("request_timeout_max", 0.0, "request_timeout_max must be greater than 0"),
    ("request_timeout_max", 3601.0, "at most 3600"),
    ("request_max_replies", 0, "request_max_replies must be at least 1"),
    ("request_max_replies", 65536, "at most 65535"),
    ("request_paths_per_peer", 20_000, "request_paths_per_peer must be at most"),
    ("client_requests", 0, "client_requests must be at least 1"),
    ("reply_bytes_total", 0, "reply_bytes_total must be at least 1"),
])
def test_request_limits_are_checked(field: str, value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        NodeConfig(**{field: value})  # type: ignore[arg-type]
