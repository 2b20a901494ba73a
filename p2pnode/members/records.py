"""Member records and claims: what they hold, their bounds, how they are signed and checked.

A member's record of itself (``MemberBody``) travels signed by the member
(``wire.messages.SignedMember``); what one member says about another (suspect, dead:
``ClaimBody``) travels signed by the one who says it (``SignedClaim``). The signature
covers a domain prefix and the body's msgpack bytes, so that neither can pass for the
other, nor for a signed batch. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..config.settings import MAX_TOPIC_BYTES
from ..config.tags import MAX_TAGS, tags_problem
from ..config.tags import MAX_VALUE as MAX_TAG_VALUE
from ..errors import RemoteProtocolError
from ..gossip.interest import MAX_PATTERNS
from ..identity.keypair import NodeIdentity, node_id_of
from ..ids import ID_LEN
from ..wire.messages import MAX_MEMBER_RECORD, SignedClaim, SignedMember
from ..wire.topics import subscription_problem

#: A tag key's pattern on the wire (\\Z: no final newline either); the full rules of
#: tags, which records are checked against too, are ``config.tags``'s.
TAG_KEY_PATTERN: Final = r"\A[A-Za-z0-9_.-]{1,64}\Z"
#: The most addresses in one record (``HOST:PORT`` each, at most 262 characters).
MAX_ADDRS: Final = 8
#: A state's code in a digest, and its rank in the merge rules at equal incarnation.
STATE_CODES: Final = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}

_MEMBER_DOMAIN = b"p2pnode member record\x00"
_CLAIM_DOMAIN = b"p2pnode member claim\x00"

Incarnation = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
TagKey = Annotated[str, msgspec.Meta(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_VALUE)]
Addr = Annotated[str, msgspec.Meta(min_length=1, max_length=262)]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_BYTES)]


class MemberBody(msgspec.Struct, array_like=True, frozen=True):
    """What a member says of itself (signed by it): its name, the addresses it accepts
    links on, its protocol version and network tag, its tags, its incarnation (higher
    is newer), whether it is ``alive`` or has ``left``, and its ``interest`` (protocol
    7): the topic names and patterns its apps and durable subscriptions subscribe to,
    at most ``MAX_PATTERNS`` (each one a subscription an app could make: checked on
    decode), or nil for every topic. A record without it (an older node's) is read as
    nil: a member that does not say what it wants gets everything."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    addrs: Annotated[list[Addr], msgspec.Meta(max_length=MAX_ADDRS)]
    version: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    network: Annotated[str, msgspec.Meta(max_length=256)]
    tags: Annotated[dict[TagKey, TagValue], msgspec.Meta(max_length=MAX_TAGS)]
    incarnation: Incarnation
    state: Literal["alive", "left"] = "alive"
    interest: Annotated[list[Pattern], msgspec.Meta(max_length=MAX_PATTERNS)] | None = None


class ClaimBody(msgspec.Struct, array_like=True, frozen=True):
    """What the claimer (the signer) says of member ``about`` at ``incarnation``."""

    about: Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
    incarnation: Incarnation
    state: Literal["suspect", "dead"]


_Body = TypeVar("_Body", MemberBody, ClaimBody)
_encoder = msgspec.msgpack.Encoder()
_member_decoder = msgspec.msgpack.Decoder(MemberBody)
_claim_decoder = msgspec.msgpack.Decoder(ClaimBody)


def sign_member(identity: NodeIdentity, body: MemberBody) -> SignedMember:
    """``body`` signed by ``identity`` (the member itself). Raises ``ValueError`` if the
    record would be over ``MAX_MEMBER_RECORD`` bytes."""
    data = _encoder.encode(body)
    if len(data) + 96 + 8 > MAX_MEMBER_RECORD:
        raise ValueError(f"a member record is at most {MAX_MEMBER_RECORD} bytes")
    return SignedMember(identity.public, data, identity.sign(_MEMBER_DOMAIN + data))


def sign_claim(identity: NodeIdentity, body: ClaimBody) -> SignedClaim:
    """``body`` signed by ``identity`` (the claimer)."""
    data = _encoder.encode(body)
    return SignedClaim(identity.public, data, identity.sign(_CLAIM_DOMAIN + data))


def check_signature(key: bytes, domain: bytes, data: bytes, sig: bytes) -> None:
    """Raise ``RemoteProtocolError("bad_signature")`` unless ``sig`` signs ``data``."""
    try:
        VerifyKey(key).verify(domain + data, sig)
    except (BadSignatureError, ValueError, TypeError):
        raise RemoteProtocolError("bad_signature", "a member record's signature does not "
                                  "match") from None


def _decode(decoder: msgspec.msgpack.Decoder[_Body], data: bytes, what: str) -> _Body:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
            RecursionError) as exc:
        raise RemoteProtocolError("bad_message", f"member {what}: {exc}") from None


def decode_member(record: SignedMember) -> MemberBody:
    """The record's body (types and bounds checked, the tags by ``config.tags``'s
    rules, the interest by the API's rules for subscriptions, signature not). Raises
    ``RemoteProtocolError("bad_message")``."""
    body = _decode(_member_decoder, record.body, "record")
    if (problem := tags_problem(body.tags)) is not None:
        raise RemoteProtocolError("bad_message", f"member record: {problem}")
    for pattern in body.interest or ():
        if (problem := subscription_problem(pattern)) is not None:
            raise RemoteProtocolError("bad_message", f"member record: interest: {problem}")
    return body


def decode_claim(claim: SignedClaim) -> ClaimBody:
    """The claim's body (types checked, signature not). Raises ``RemoteProtocolError``."""
    return _decode(_claim_decoder, claim.body, "claim")


def verify_member(record: SignedMember) -> MemberBody:
    """Check the record's signature, then decode it. Raises ``RemoteProtocolError``."""
    check_signature(record.key, _MEMBER_DOMAIN, record.body, record.sig)
    return decode_member(record)


def verify_claim(claim: SignedClaim) -> ClaimBody:
    """Check the claim's signature, then decode it. Raises ``RemoteProtocolError``."""
    check_signature(claim.key, _CLAIM_DOMAIN, claim.body, claim.sig)
    return decode_claim(claim)


def member_id(record: SignedMember | SignedClaim) -> bytes:
    """The node id of the record's signer."""
    return node_id_of(record.key)


def beats(inc: int, state: str, other_inc: int, other_state: str) -> bool:
    """Whether (``inc``, ``state``) overrides (``other_inc``, ``other_state``): a higher
    incarnation wins; at equal ones suspect beats alive, dead and left beat both, left
    beats dead (a member that said goodbye is not reported dead)."""
    if inc != other_inc:
        return inc > other_inc
    return STATE_CODES[state] > STATE_CODES[other_state]
