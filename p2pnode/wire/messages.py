"""The messages two nodes exchange, as typed msgspec structs encoded with msgpack.

Each message is a msgpack array whose first element is an integer tag. Decoding
checks every type and size; anything else becomes ``RemoteProtocolError``.
Trailing array elements unknown to this version are ignored, so a later version
can add fields at the end of a message without breaking ``Hello`` parsing.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..config.settings import MAX_TOPIC_BYTES
from ..errors import RemoteProtocolError
from ..ids import ID_LEN
from .frames import encode_frame

NodeIdBytes = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_BYTES)]
Hops = Annotated[int, msgspec.Meta(ge=0, le=255)]
MEANT_PREFIX = 8  # bytes of a member's id in ``Batch.meant``
MemberPrefix = Annotated[bytes, msgspec.Meta(min_length=MEANT_PREFIX, max_length=MEANT_PREFIX)]
MAX_MEANT = 64  # members named in one ``Batch.meant``


class Hello(msgspec.Struct, tag=1, array_like=True, frozen=True):
    """First message on a link, sent by both sides at once."""

    version: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    node_id: NodeIdBytes
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    listen: ShortText  # "HOST:PORT" the sender accepts links on ("" if none)
    network: ShortText = ""  # network tag; the security issue makes it a key hash


class Accept(msgspec.Struct, tag=2, array_like=True, frozen=True):
    """Sent by the side with the lower node id: this connection is the link."""


class PxPeer(msgspec.Struct, array_like=True, frozen=True):
    """A member to try instead (peer exchange), in a ``Refuse``."""

    node_id: NodeIdBytes
    addrs: Annotated[list[ShortText], msgspec.Meta(max_length=8)]


class Refuse(msgspec.Struct, tag=3, array_like=True, frozen=True):
    """The sender will not link over this connection, and says why. A node refusing for
    want of room (``too_many_links``) names up to 16 live members to try instead (``px``,
    protocol 6)."""

    code: ShortText
    message: ShortText
    px: Annotated[list[PxPeer], msgspec.Meta(max_length=16)] = []


class Gossip(msgspec.Struct, frozen=True):
    """One published message, as delivered to local subscribers (not a wire message:
    messages travel inside signed ``Batch``es).

    ``hops`` is how many links it crossed; ``to`` is the target node id of a direct
    message (delivered only there), or ``None``.
    """

    id: NodeIdBytes
    origin: NodeIdBytes
    topic: Topic
    data: bytes
    hops: Hops
    to: NodeIdBytes | None = None
    #: Delivered as a topic's retained message (docs/api.md): its current value, not
    #: a new publish (set on values a node learned by the retained sync).
    retained: bool = False


class Item(msgspec.Struct, array_like=True, frozen=True):
    """One message inside a batch."""

    id: NodeIdBytes
    topic: Topic
    data: bytes


Seq = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class BatchBody(msgspec.Struct, array_like=True, frozen=True):
    """What an origin signs: the batch id, itself, the target (or None), the messages,
    and where the batch stands in the origin's sequence.

    ``epoch`` identifies one run of the origin (its start time in microseconds) and
    ``seq`` numbers its batches within that run from 1, with no gap: receivers deliver
    an origin's batches in that order (``gossip.order``). ``seq`` 0 means unnumbered
    (delivered as it comes).

    ``retain`` (protocol 5): 0 for ordinary messages; otherwise every message of the
    batch is the retained message of its topic, stamped with this time (the origin's
    clock, Unix microseconds): the newest stamp wins (``gossip.retained``).

    ``tprev`` (protocol 7): set by an origin in interest mode (docs/interest.md), where
    receivers get only some of its batches: the ``seq`` of the origin's previous batch
    of the same *stream* in this run (0: none, or forgotten), so that each stream can be
    put in order without the others. A batch is *routed* (``is_routed``: sent only
    toward the nodes that want its topic) when its messages share one app topic and it
    goes to everyone, not retained; its stream is that topic. Every other batch of such
    an origin is of its broadcast stream. None (the default): an origin in tree or
    flood mode; every node gets every batch.
    """

    id: NodeIdBytes
    origin: NodeIdBytes
    to: NodeIdBytes | None
    items: list[Item]
    epoch: Seq = 0
    seq: Seq = 0
    retain: Seq = 0
    tprev: Seq | None = None


class Batch(msgspec.Struct, tag=4, array_like=True, frozen=True):
    """Messages of one origin travelling together under one signature.

    ``body`` is the msgpack encoding of a ``BatchBody``, signed (Ed25519) by the
    origin's key ``key``; the node id ``origin`` must be the hash of ``key``. Only
    ``hops`` and ``meant`` change on the way, so forwarders re-send ``body`` and ``sig``
    as they came. ``id`` and ``origin`` are repeated outside the body so that duplicates
    are dropped before any signature is checked.

    ``meant`` (interest mode; a trailing field that nodes without it ignore): the
    interested members this copy of a routed batch was pushed for, by the first 8
    bytes of their ids (at most ``MAX_MEANT``; empty: not said). Not signed: it only
    narrows where a receiver off the origin's tree pushes the batch on
    (docs/interest.md), never beyond the members that want its topic.
    """

    id: NodeIdBytes
    origin: NodeIdBytes
    hops: Hops
    key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    body: bytes
    sig: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
    meant: Annotated[list[MemberPrefix], msgspec.Meta(max_length=MAX_MEANT)] = []


class Bye(msgspec.Struct, tag=5, array_like=True, frozen=True):
    """The sender is leaving (shutting down) and closes the link."""

    reason: ShortText = ""


class Ping(msgspec.Struct, tag=6, array_like=True, frozen=True):
    """Keepalive probe. ``time`` is the sender's clock, echoed in the Pong (for the
    round-trip time); ``links`` is the sender's link count (for degree management)."""

    time: float
    links: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    keep: bool = False  # the sender wants this link kept (it is a static peer there)


class Pong(msgspec.Struct, tag=7, array_like=True, frozen=True):
    """Answer to a Ping: its ``time`` echoed, and the sender's own link count."""

    time: float
    links: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    keep: bool = False  # the sender wants this link kept (it is a static peer there)


BatchKey = Annotated[bytes, msgspec.Meta(min_length=2 * ID_LEN, max_length=2 * ID_LEN)]
MAX_KEYS = 4096  # entries in one IHave or Graft
MAX_FETCH = 64  # numbers in one Fetch


class Announce(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """One entry of an ``IHave``: a batch's key (origin + batch id) and the hops it
    would have on arrival.

    ``age`` (protocol 7, interest mode): set only when a routed batch is announced to
    catch up a member whose interest the sender learned after the batch went by
    (``gossip.catchup``, docs/interest.md): how long ago it was published, in
    milliseconds, as the sender knows it (never more than the truth). The receiver
    grafts it at once and delivers it only if it was published after its own
    subscription began. Older nodes ignore the field.

    ``topic``, ``epoch`` and ``seq`` (interest mode, set together): a *tail notice*
    (``gossip.tails``, docs/interest.md): the batch is the newest of its origin's
    stream on ``topic`` that the sender knows of, number ``seq`` of run ``epoch``;
    the sender may not have it. A node that wants the topic and lacks the batch
    Fetches it; one that does not want it passes the notice on along its tree. Nodes
    of protocol 7 before these fields ignore them (and take it as an announcement)."""

    key: BatchKey
    hops: Hops
    age: Seq | None = None
    topic: Topic | None = None
    epoch: Seq | None = None
    seq: Seq | None = None


class IHave(msgspec.Struct, tag=8, array_like=True, frozen=True):
    """Lazy push (broadcast trees): the sender has these batches and did not send them
    on this link. A receiver that misses one asks with ``Graft`` after a timeout."""

    batches: Annotated[list[Announce], msgspec.Meta(max_length=MAX_KEYS)]
    repair: bool = False  # the answer to a Digest: the receiver waits longer, at random


class Graft(msgspec.Struct, tag=9, array_like=True, frozen=True):
    """Send these batches (keys from an ``IHave``) from history, and make this link
    eager (part of the tree) for their origins and for ``origins``."""

    keys: Annotated[list[BatchKey], msgspec.Meta(max_length=MAX_KEYS)]
    origins: Annotated[list[NodeIdBytes], msgspec.Meta(max_length=MAX_KEYS)] = []


class Prune(msgspec.Struct, tag=10, array_like=True, frozen=True):
    """Make this link lazy for batches of ``origins``: the sender got one of theirs
    twice and wants only ``IHave``s for them on this link from now on."""

    origins: Annotated[list[NodeIdBytes], msgspec.Meta(max_length=MAX_KEYS)]


class DigestEntry(msgspec.Struct, array_like=True, frozen=True):
    """What the sender's history holds of one origin run: ``ranges`` is a flat list
    ``[lo1, hi1, lo2, hi2, ...]`` of inclusive ranges of sequence numbers."""

    origin: NodeIdBytes
    epoch: Seq
    ranges: list[Seq]


class Digest(msgspec.Struct, tag=11, array_like=True, frozen=True):
    """Anti-entropy, sent once when a link opens: a summary of the sender's history.
    The receiver sends back every batch of its own history that the digest lacks."""

    entries: list[DigestEntry]


TopicKey = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
#: Keys in one RetainedDigest (about 51 bytes each: the message fits the smallest frame).
MAX_RETAINED_KEYS = 2048


class RetainedKey(msgspec.Struct, array_like=True, frozen=True):
    """One retained message as a ``RetainedDigest`` describes it: its topic's key (the
    first 16 bytes of SHA-256 of the topic), its stamp and origin (which one is newer),
    and the size of the batch that carries it (so that a node asks for a bounded
    amount at a time)."""

    topic: TopicKey
    stamp: Seq
    origin: NodeIdBytes
    size: Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)]


class RetainedDigest(msgspec.Struct, tag=12, array_like=True, frozen=True):
    """Retained messages the sender holds: all of them (in pieces) when a link opens;
    later, the ones it newly learned from a peer. The receiver asks (``RetainedWant``)
    for those newer than its own."""

    keys: Annotated[list[RetainedKey], msgspec.Meta(max_length=MAX_RETAINED_KEYS)]


class RetainedWant(msgspec.Struct, tag=13, array_like=True, frozen=True):
    """Send me the retained messages of these topics (keys from your digest). Answered
    by one or more ``Retained``, the last one marked ``last``."""

    topics: Annotated[list[TopicKey], msgspec.Meta(max_length=MAX_KEYS)]


class Retained(msgspec.Struct, tag=14, array_like=True, frozen=True):
    """(Part of) the answer to a ``RetainedWant``: the original signed batches that carry
    the retained messages asked for (a batch the sender no longer has is left out);
    ``last`` on the last part."""

    batches: list[Batch]
    last: bool = True


class Reply(msgspec.Struct, tag=15, array_like=True, frozen=True):
    """An answer to a request (``wire.requests``), sent back hop by hop along the path
    the request came by, to the node that asked (``origin``); never gossiped.

    ``body`` is the msgpack encoding of a ``wire.requests.ReplyBody``, signed (Ed25519)
    by the replier's key ``key``; the node id ``replier`` must be the hash of ``key``.
    ``origin``, ``request`` (the request's message id) and ``replier`` repeat the
    body's, so that a node routes a reply, and drops a second one from the same
    replier, before it checks any signature. Only ``hops`` changes on the way.
    """

    origin: NodeIdBytes
    request: NodeIdBytes
    replier: NodeIdBytes
    hops: Hops
    key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    body: bytes
    sig: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


PublicKey = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
#: The largest signed member record (key, body and signature), in bytes.
MAX_MEMBER_RECORD = 4096
#: Records, and claims, in one ``Members`` frame.
MAX_MEMBERS_PER_FRAME = 64
#: Entries in one ``MemberDigest`` (about 21 bytes each: it fits the smallest frame);
#: also the most members a node keeps (``NodeConfig.max_members``).
MAX_DIGEST_ENTRIES = 6000
Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)]


class SignedMember(msgspec.Struct, array_like=True, frozen=True):
    """A member's record of itself: ``body`` is the msgpack encoding of a
    ``members.records.MemberBody``, signed (Ed25519) by the member's key ``key`` (its
    node id is the hash of ``key``). Forwarded as it came."""

    key: PublicKey
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_MEMBER_RECORD - 96 - 8)]
    sig: Signature


class SignedClaim(msgspec.Struct, array_like=True, frozen=True):
    """What one member says about another (suspect, dead): ``body`` is the msgpack
    encoding of a ``members.records.ClaimBody``, signed by the claimer's key ``key``."""

    key: PublicKey
    body: Annotated[bytes, msgspec.Meta(max_length=64)]
    sig: Signature


class Members(msgspec.Struct, tag=17, array_like=True, frozen=True):
    """Member records and claims (protocol 6): flooded when they change the sender's
    member list, and the answer to a ``MemberDigest``."""

    records: Annotated[list[SignedMember], msgspec.Meta(max_length=MAX_MEMBERS_PER_FRAME)] = []
    claims: Annotated[list[SignedClaim], msgspec.Meta(max_length=MAX_MEMBERS_PER_FRAME)] = []


class MemberEntry(msgspec.Struct, array_like=True, frozen=True):
    """One member as a ``MemberDigest`` lists it: the first 8 bytes of its node id, its
    incarnation and its state (0 alive, 1 suspect, 2 dead, 3 left)."""

    id8: Annotated[bytes, msgspec.Meta(min_length=8, max_length=8)]
    incarnation: Seq
    state: Annotated[int, msgspec.Meta(ge=0, le=3)]


class MemberDigest(msgspec.Struct, tag=18, array_like=True, frozen=True):
    """The live (alive, suspect) members the sender knows. The receiver answers with
    ``Members`` holding what the sender lacks or has older; with ``ask`` it also sends
    its own digest back (the answer to a ``MemberHash`` that did not match)."""

    entries: Annotated[list[MemberEntry], msgspec.Meta(max_length=MAX_DIGEST_ENTRIES)]
    ask: bool = False


class MemberHash(msgspec.Struct, tag=19, array_like=True, frozen=True):
    """A summary of the sender's live members (periodic anti-entropy): a receiver whose
    own differs answers with its ``MemberDigest`` (``ask`` set)."""

    hash: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    count: Count


class ProbeReq(msgspec.Struct, tag=20, array_like=True, frozen=True):
    """Is ``target`` alive? (indirect probe): answered with a ``ProbeAck``."""

    target: NodeIdBytes
    nonce: Seq


class ProbeAck(msgspec.Struct, tag=21, array_like=True, frozen=True):
    """The answer to a ``ProbeReq``: ``alive`` if the sender has a link to ``target``
    that heard from it within one ping interval."""

    target: NodeIdBytes
    nonce: Seq
    alive: bool


MEMBER_TYPES = (Members, MemberDigest, MemberHash, ProbeReq, ProbeAck)
MemberMessage = Members | MemberDigest | MemberHash | ProbeReq | ProbeAck


class Fetch(msgspec.Struct, tag=22, array_like=True, frozen=True):
    """Send me, or ask on toward ``origin``, its batches numbered ``seqs`` in run
    ``epoch`` (interest mode: a gap in a stream that no announcement filled;
    docs/interest.md). Answered with the Batches, from history, by the first node on
    the way that has them."""

    origin: NodeIdBytes
    epoch: Seq
    seqs: Annotated[list[Seq], msgspec.Meta(min_length=1, max_length=MAX_FETCH)]


WireMessage = (Hello | Accept | Refuse | Batch | Bye | Ping | Pong | IHave | Graft | Prune
               | Digest | RetainedDigest | RetainedWant | Retained | Reply | Members
               | MemberDigest | MemberHash | ProbeReq | ProbeAck | Fetch)
GossipMessage = (Batch | IHave | Graft | Prune | Digest | RetainedDigest | RetainedWant | Retained
                 | Reply | Members | MemberDigest | MemberHash | ProbeReq | ProbeAck | Fetch)
GOSSIP_TYPES = (Batch, IHave, Graft, Prune, Digest, RetainedDigest, RetainedWant, Retained, Reply,
                *MEMBER_TYPES, Fetch)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[WireMessage] = msgspec.msgpack.Decoder(WireMessage)


def encode_message(msg: WireMessage) -> bytes:
    """Return the framed bytes of ``msg``, ready to send."""
    return encode_frame(_encoder.encode(msg))


def decode_message(body: bytes) -> WireMessage:
    """Decode one frame body. Raises ``RemoteProtocolError("bad_message")`` if invalid."""
    try:
        msg = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError("bad_message", str(exc)) from None
    except RecursionError:
        raise RemoteProtocolError("bad_message", "nested too deeply") from None
    return msg


_body_decoder: msgspec.msgpack.Decoder[BatchBody] = msgspec.msgpack.Decoder(BatchBody)


def encode_body(body: BatchBody) -> bytes:
    """The bytes an origin signs."""
    return _encoder.encode(body)


def decode_body(data: bytes, max_payload: int) -> BatchBody:
    """Decode and check a batch body (topics, payload sizes).
    Raises ``RemoteProtocolError("bad_message")`` or ``("too_large")``."""
    try:
        body = _body_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError("bad_message", f"batch body: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError("bad_message", "nested too deeply") from None
    checked = None  # the topic of the item before, already checked (a batch repeats them)
    for item in body.items:
        if item.topic != checked:
            problem = topic_problem(item.topic)
            if problem is not None:
                raise RemoteProtocolError("bad_message", problem)
            checked = item.topic
        if len(item.data) > max_payload:
            raise RemoteProtocolError("too_large", "a payload over the limit")
    if body.tprev is not None:
        problem = routed_problem(body)
        if problem is not None:
            raise RemoteProtocolError("bad_message", problem)
    return body


def routed_problem(body: BatchBody) -> str | None:
    """Why ``body``, with ``tprev`` set, is not a valid batch of a stream, or None: it
    must be numbered and not empty, and ``tprev`` must come before its ``seq``."""
    if not body.items or not body.seq:
        return "a batch with tprev must be numbered and not empty"
    if body.tprev is not None and body.tprev >= body.seq:
        return "a batch's tprev must come before its seq"
    return None


def is_routed(body: BatchBody) -> bool:
    """Whether ``body`` is a routed batch (see ``BatchBody``): ``tprev`` set, to
    everyone, not retained, every message on one topic that is not reserved (``$``)."""
    if body.tprev is None or body.to is not None or body.retain or not body.items:
        return False
    topic = body.items[0].topic
    return not topic.startswith("$") and all(item.topic == topic for item in body.items)


def decode_kept_body(data: bytes) -> BatchBody:
    """Decode a batch body that ``decode_body`` already checked (one kept in history):
    the same result without checking every topic and payload again."""
    return _body_decoder.decode(data)


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid topic name (1-256 UTF-8 bytes, printable), or None."""
    if len(topic) > MAX_TOPIC_BYTES // 4 and len(topic.encode("utf-8", "surrogatepass")) > (
        MAX_TOPIC_BYTES
    ):
        return f"a topic is at most {MAX_TOPIC_BYTES} UTF-8 bytes"
    if not topic or not topic.isprintable():
        return "a topic is non-empty and has no control characters"
    return None
