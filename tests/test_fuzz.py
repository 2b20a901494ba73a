"""Property tests: whatever bytes arrive, the parsers raise only the protocol's own errors.

Peers and local clients control these bytes, so any other exception is a bug that can end a
link, a client session, or (where nobody catches it) the node. Runs are deterministic
(``derandomize=True``, no example database) and the file stays well under 30 s.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pnode import PROTOCOL_VERSION
from p2pnode.api.protocol import (
    OPS,
    ApiError,
    Publish,
    Subscribe,
    Unsubscribe,
    check_topic,
    check_topics,
    encode_error,
    encode_reply,
    parse_request,
    publish_payload,
    publish_target,
)
from p2pnode.errors import RemoteProtocolError
from p2pnode.gossip.signing import Verifier, sign_batch
from p2pnode.testing import make_identity
from p2pnode.wire.frames import FrameDecoder, encode_frame
from p2pnode.wire.link import LinkEvent, LinkProtocol, LinkState, PeerBye, PeerHello, check_hello
from p2pnode.wire.messages import (
    Accept,
    Announce,
    Batch,
    BatchBody,
    Bye,
    Digest,
    DigestEntry,
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
)

FUZZ = settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_FRAME = 512
MAX_PAYLOAD = 96
#: Origins of the signed batches in the pools (seeded, so the same keys every run).
ORIGINS = [make_identity(random.Random(seed)) for seed in range(3)]
#: Codes verification may raise (gossip/signing.py).
VERIFY_CODES = ("bad_signature", "bad_message", "too_large")


# -- Strategies -----------------------------------------------------------------------------

node_ids = st.binary(min_size=16, max_size=16)
short_text = st.text(max_size=12)

wire_messages: st.SearchStrategy[WireMessage] = st.one_of(
    st.builds(
        Hello,
        st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION + 1, 0]),
        st.sampled_from([b"\x01" * 16, b"\x02" * 16, b"\x03" * 16]) | node_ids,
        st.text(min_size=1, max_size=12),
        short_text,
        network=st.sampled_from(["", "other"]),
    ),
    st.just(Accept()),
    st.builds(Refuse, short_text, short_text),
    # The wire codec does not look inside a batch's body or check its signature.
    st.builds(
        Batch,
        node_ids,
        node_ids,
        st.integers(0, 255),
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=MAX_PAYLOAD + 4),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(Bye, short_text),
    st.builds(Ping, st.floats(allow_nan=False), st.integers(0, 1_000_000), st.booleans()),
    st.builds(Pong, st.floats(allow_nan=False), st.integers(0, 1_000_000), st.booleans()),
    st.builds(IHave, st.lists(st.builds(Announce, st.binary(min_size=32, max_size=32),
                                        st.integers(0, 255)), max_size=4), st.booleans()),
    st.builds(Graft, st.lists(st.binary(min_size=32, max_size=32), max_size=3),
              st.lists(node_ids, max_size=2)),
    st.builds(Prune, st.lists(node_ids, max_size=3)),
    st.builds(Digest, st.lists(st.builds(DigestEntry, node_ids, st.integers(0, 1 << 62),
                                         st.lists(st.integers(0, 1 << 62), max_size=4)),
                               max_size=3)),
    st.builds(Reply, node_ids, node_ids, node_ids, st.integers(0, 255),
              st.binary(min_size=32, max_size=32), st.binary(max_size=MAX_PAYLOAD + 4),
              st.binary(min_size=64, max_size=64)),
)


# Mutations and chunkings are drawn as plain data and applied in Python: strategies built per
# example (flatmap, composites with arguments) cost more than the code under test.
Edit = tuple[str, int, bytes]
edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set", "truncate"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=4),
    ),
    max_size=4,
)
cut_points = st.lists(st.integers(0, 1 << 16), max_size=8)


def mutate(base: bytes, changes: list[Edit]) -> bytes:
    """Flip, insert, delete, overwrite or truncate a few bytes of ``base``."""
    data = bytearray(base)
    for op, where, blob in changes:
        pos = where % (len(data) + 1)
        if op == "insert":
            data[pos:pos] = blob
        elif op == "truncate":
            del data[pos:]
        elif pos < len(data):
            if op == "flip":
                data[pos] ^= 1 << (blob[0] % 8)
            elif op == "delete":
                del data[pos]
            else:
                data[pos] = (0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xFF)[blob[0] % 6]
    return bytes(data)


def chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given points (taken modulo its length)."""
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def mutated(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(mutate, base, edits)


def _signed_batch(rng: random.Random, rid: Callable[[], bytes], text: Callable[[int, int], str],
                  ) -> Batch:
    """A signed batch of up to 3 messages, with edge values; one in four is tampered with
    (a body or signature changed after signing, or a key that is not the origin's)."""
    origin = rng.choice(ORIGINS)
    msgs = [
        Item(rid(), text(1, 64) if rng.random() < 0.9 else text(1, 256),
             rng.randbytes(rng.choice([0, 1, 10, MAX_PAYLOAD, MAX_PAYLOAD + 1])))
        for _ in range(rng.choice([0, 1, 1, 2, 3]))
    ]
    to = rid() if rng.random() < 0.3 else None
    batch = sign_batch(origin, rid(), to, msgs)
    batch = msgspec.structs.replace(batch, hops=rng.choice([0, 1, 254, 255]))
    tamper = rng.randrange(8)
    if tamper == 0:
        body = encode_body(BatchBody(batch.id, batch.origin, rid(), msgs))
        batch = msgspec.structs.replace(batch, body=body)
    elif tamper == 1:
        batch = msgspec.structs.replace(batch, sig=rng.randbytes(64))
    elif tamper == 2:
        batch = msgspec.structs.replace(batch, key=rng.choice(ORIGINS).public)
    return batch


def _frame_pool(seed: int, count: int) -> list[bytes]:
    """Valid framed messages of every type, with edge values, made once (generating them with
    hypothesis for every example costs ten times more than the code under test)."""
    rng = random.Random(seed)
    ids = [b"\x01" * 16, b"\x02" * 16, b"\x03" * 16, *(o.node_id for o in ORIGINS)]
    texts = ["", "a", "é✓", "n" * 64, "t" * 256, "\x00", "\U0001f600" * 3]

    def rid() -> bytes:
        return rng.choice(ids) if rng.random() < 0.5 else rng.randbytes(16)

    def text(lo: int, hi: int) -> str:
        return rng.choice([t for t in texts if lo <= len(t) <= hi] or ["x" * lo])

    pool: list[WireMessage] = [Accept(), Bye(), Refuse("duplicate", "x"), Ping(1.0), Pong(2.0)]
    while len(pool) < count:
        kind = rng.randrange(7)
        if kind == 0:
            version = rng.choice([PROTOCOL_VERSION, PROTOCOL_VERSION + 1, 0])
            network = rng.choice(["", "other"])
            pool.append(Hello(version, rid(), text(1, 64), text(0, 256), network=network))
        elif kind == 1:
            pool.append(Refuse(text(0, 256), text(0, 256)))
        elif kind == 2:
            pool.append(Bye(text(0, 256)))
        elif kind == 3:
            links = rng.choice([0, 1, 1_000_000])
            when, keep = rng.random() * 1e6, rng.random() < 0.5
            pool.append(Ping(when, links, keep) if rng.random() < 0.5 else Pong(when, links, keep))
        else:
            pool.append(_signed_batch(rng, rid, text))
    return [encode_message(m) for m in pool]


FRAME_POOL = _frame_pool(20240601, 400)


_frames = st.sampled_from(FRAME_POOL)
#: Valid frames, mutated frames and random bytes, one after another.
wire_streams = st.lists(
    st.one_of(
        _frames,
        mutated(_frames),
        st.binary(max_size=24),
        st.binary(max_size=24).map(encode_frame),
    ),
    max_size=4,
).map(b"".join)


# -- Frames and messages --------------------------------------------------------------------


def decode_stream(chunks: list[bytes]) -> list[WireMessage]:
    """Frame and decode; returns the messages decoded before any protocol error."""
    dec = FrameDecoder(MAX_FRAME)
    out: list[WireMessage] = []
    fed = 0
    try:
        for chunk in chunks:
            frames = dec.feed(chunk)
            fed += len(chunk)
            assert sum(4 + len(f) for f in frames) <= fed
            for body in frames:
                assert len(body) <= MAX_FRAME
                out.append(decode_message(body))
    except RemoteProtocolError as exc:
        if exc.code not in ("too_large", "bad_message"):
            raise
    return out


@FUZZ
@given(st.binary(max_size=300) | wire_streams, cut_points)
def test_frames_and_messages_raise_only_protocol_errors(stream: bytes, cuts: list[int]) -> None:
    decode_stream(chunk(stream, cuts))


@settings(FUZZ, max_examples=1500)
@given(st.lists(wire_messages, max_size=4), cut_points)
def test_valid_streams_round_trip_in_any_chunking(msgs: list[WireMessage], cuts: list[int]) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    assert decode_stream(chunk(stream, cuts)) == msgs
    assert decode_stream([stream[i : i + 1] for i in range(len(stream))]) == msgs


# -- Signed batches -------------------------------------------------------------------------


def _batch_pool(seed: int, count: int) -> list[tuple[int, Batch]]:
    """Genuine signed batches (with the index of their origin in ORIGINS), made once."""
    rng = random.Random(seed)
    topics = ["a", "é✓", "t" * 64, "\U0001f600" * 3]
    pool: list[tuple[int, Batch]] = []
    for _ in range(count):
        k = rng.randrange(len(ORIGINS))
        msgs = [
            Item(rng.randbytes(16), rng.choice(topics),
                 rng.randbytes(rng.choice([0, 1, 10, MAX_PAYLOAD])))
            for _ in range(rng.choice([0, 1, 2, 3]))
        ]
        to = rng.choice([None, rng.randbytes(16), ORIGINS[0].node_id])
        batch = sign_batch(ORIGINS[k], rng.randbytes(16), to, msgs)
        pool.append((k, msgspec.structs.replace(batch, hops=rng.choice([0, 1, 255]))))
    return pool


BATCH_POOL = _batch_pool(20240602, 64)
_batches = st.sampled_from(BATCH_POOL)


def signed_fields(batch: Batch) -> tuple[bytes, ...]:
    """Everything in a batch that forwarders must not change (all but hops)."""
    return (batch.id, batch.origin, batch.key, batch.body, batch.sig)


@settings(FUZZ, max_examples=2000)
@given(_batches, edits)
def test_tampered_batches_are_rejected(entry: tuple[int, Batch], changes: list[Edit]) -> None:
    """Bytes of a genuine batch's frame changed on the way: the batch verifies if and only if
    nothing but its hops changed, and then gives the body the origin signed."""
    _, genuine = entry
    wire = mutate(encode_message(genuine)[4:], changes)
    try:
        msg = decode_message(wire)
    except RemoteProtocolError as exc:
        if exc.code != "bad_message":
            raise
        return
    if not isinstance(msg, Batch):
        return
    body = check_batch(msg)
    if signed_fields(msg) == signed_fields(genuine):
        assert body == VERIFIER.verify(genuine)
    else:
        assert body is None, "a tampered batch passed verification"


@settings(FUZZ, max_examples=2000)
@given(_batches, edits, st.binary(max_size=40))
def test_signed_bodies_raise_only_protocol_errors(
    entry: tuple[int, Batch], changes: list[Edit], junk: bytes
) -> None:
    """A body the origin itself signed may still be malformed (a buggy or hostile origin):
    the checks behind the signature raise only the protocol's errors."""
    k, genuine = entry
    origin = ORIGINS[k]
    for data in (mutate(genuine.body, changes), junk):
        batch = msgspec.structs.replace(genuine, body=data, sig=origin.sign(data))
        body = check_batch(batch)
        try:
            decoded = decode_body(data, MAX_PAYLOAD)
        except RemoteProtocolError as exc:
            if exc.code not in ("bad_message", "too_large"):
                raise
            decoded = None
        if body is not None:
            assert decoded == body
        elif decoded is not None:
            # Well-formed, so only the batch's own id/origin can disagree with it.
            assert (decoded.id, decoded.origin) != (batch.id, batch.origin)


# -- Local API ------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(["op", "id", "topic", "topics", "data", "data_b64", "to", "x"])
field_values = st.one_of(
    json_values,
    st.sampled_from([*OPS, "nope", "", "t", "a" * 300, "\x00", "AAE=", "!!", "ab" * 16]),
    st.lists(st.sampled_from(["a", "", "b\n", "é" * 130]), max_size=3),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
)
json_requests = st.dictionaries(field_names, field_values, max_size=6)


def request_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


valid_lines = st.one_of(
    st.builds(
        lambda i, t, d: request_line({"op": "publish", "id": i, "topic": t, "data": d}),
        json_scalars, st.text(max_size=8), st.text(max_size=8),
    ),
    st.builds(
        lambda t, to: request_line({"op": "publish", "topic": t, "data_b64": "AAE=", "to": to}),
        st.text(max_size=4), st.sampled_from(["00" * 16, "AB" * 16, "zz"]),
    ),
    st.builds(
        lambda op, ts: request_line({"op": op, "topics": ts}),
        st.sampled_from(["subscribe", "unsubscribe"]), st.lists(st.text(max_size=4), max_size=3),
    ),
    st.sampled_from([b'{"op":"peers"}', b'{"op":"status","id":1}']),
)

api_inputs = st.one_of(
    st.binary(max_size=200),
    valid_lines,
    mutated(valid_lines),
    json_requests.map(request_line),
    mutated(json_requests.map(request_line)),
)


def serve(line: bytes) -> bytes:
    """What the API server does with one line, without I/O; returns the reply line."""
    try:
        req = parse_request(line)
        if isinstance(req, Publish):
            check_topic(req.topic, req.id)
            payload = publish_payload(req, 64)
            assert len(payload) <= 64
            publish_target(req)
        elif isinstance(req, Subscribe | Unsubscribe):
            check_topics(req.topics, req.id)
        return encode_reply(req.id, {})
    except ApiError as err:
        return encode_error(err)


@FUZZ
@given(api_inputs, st.text(max_size=10))
def test_api_raises_only_api_errors(line: bytes, topic: str) -> None:
    reply = serve(line)
    assert reply.endswith(b"\n")
    assert reply.count(b"\n") == 1
    obj = json.loads(reply)
    assert isinstance(obj["ok"], bool)
    if not obj["ok"]:
        assert obj["error"]["code"] in ("bad_json", "bad_request", "unknown_op", "too_large")
    try:
        checked = check_topic(topic)
    except ApiError as err:
        if err.code != "bad_request":
            raise
    else:
        assert checked == topic


# -- Link state machine ----------------------------------------------------------------------


def drive(proto: LinkProtocol, chunks: list[bytes]) -> tuple[list[LinkEvent], str | None]:
    """Feed chunks; decide every PeerHello with check_hello. Returns (events, error code)."""
    events: list[LinkEvent] = []
    try:
        for chunk in chunks:
            new = proto.receive_data(chunk)
            while new:
                events.extend(new)
                if not isinstance(new[-1], PeerHello):
                    break
                problem = check_hello(proto.local, new[-1].hello)
                if problem is not None:
                    proto.refuse(*problem)
                    break
                proto.proceed()
                new = proto.receive_data(b"")
    except RemoteProtocolError as exc:
        return events, exc.code
    return events, None


#: One verifier for every example, with a small key cache, so that cache hits, misses and
#: evictions all happen (results must not depend on them).
VERIFIER = Verifier(MAX_PAYLOAD, cache_size=2)


def check_batch(batch: Batch) -> BatchBody | None:
    """Verify ``batch`` as a node would: only the verifier's own errors may escape; what
    passes agrees with the batch and keeps the limits."""
    try:
        body = VERIFIER.verify(batch)
    except RemoteProtocolError as exc:
        if exc.code not in VERIFY_CODES:
            raise
        return None
    assert (body.id, body.origin) == (batch.id, batch.origin)
    assert all(len(item.data) <= MAX_PAYLOAD for item in body.items)
    return body


def check_events(events: list[LinkEvent], proto: LinkProtocol) -> None:
    for i, ev in enumerate(events):
        if isinstance(ev, Batch):
            check_batch(ev)
        if isinstance(ev, PeerBye):
            assert i == len(events) - 1
            assert proto.state is LinkState.CLOSED


LINK_PREFIXES = [
    b"",
    encode_message(Hello(PROTOCOL_VERSION, b"\x02" * 16, "hi", "")),
    encode_message(Hello(PROTOCOL_VERSION, b"\x01" * 16, "lo", "")) + encode_message(Accept()),
]
link_inputs = st.tuples(
    st.sampled_from([b"\x01" * 16, b"\x02" * 16]),
    st.builds(bytes.__add__, st.sampled_from(LINK_PREFIXES), wire_streams),
)


@FUZZ
@given(link_inputs, cut_points)
def test_link_raises_only_protocol_errors(inp: tuple[bytes, bytes], cuts: list[int]) -> None:
    local_id, stream = inp

    def new() -> LinkProtocol:
        hello = Hello(PROTOCOL_VERSION, local_id, "me", "")
        return LinkProtocol(hello, max_frame=MAX_FRAME, max_payload=MAX_PAYLOAD)

    chunks = chunk(stream, cuts)
    split = new()
    split_events, split_error = drive(split, chunks)
    whole = new()
    whole_events, whole_error = drive(whole, [stream])
    check_events(split_events, split)
    check_events(whole_events, whole)
    if split_error is None and whole_error is None:
        assert split_events == whole_events
        assert split.state is whole.state
    elif split_error is None:
        # Bytes after a Bye or Refuse are ignored once the link is closed, unless they came
        # in the same read as the goodbye (then the frame decoder still sees them).
        assert split.state is LinkState.CLOSED
    if whole_error is None and split_error is not None:
        pytest.fail(f"only the chunked feed failed: {split_error}")
