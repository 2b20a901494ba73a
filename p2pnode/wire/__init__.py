"""The node-to-node wire protocol, without I/O: frames (``frames``), the messages and
their codec (``messages``), the link state machine (``link``).

This package never imports trio or zeroconf (tests/test_layering.py checks it).
"""

from .frames import HEADER_LEN, FrameDecoder, encode_frame
from .link import (
    LinkEvent,
    LinkOpen,
    LinkProtocol,
    LinkState,
    PeerBye,
    PeerHello,
    PeerRefused,
    check_hello,
)
from .messages import (
    GOSSIP_TYPES,
    MAX_KEYS,
    MAX_RETAINED_KEYS,
    Accept,
    Announce,
    Batch,
    BatchBody,
    Bye,
    Digest,
    DigestEntry,
    Fetch,
    Gossip,
    GossipMessage,
    Graft,
    Hello,
    IHave,
    Item,
    Ping,
    Pong,
    Prune,
    Refuse,
    Reply,
    Retained,
    RetainedDigest,
    RetainedKey,
    RetainedWant,
    WireMessage,
    decode_body,
    decode_kept_body,
    decode_message,
    encode_body,
    encode_message,
)

__all__ = [
    "GOSSIP_TYPES", "HEADER_LEN", "MAX_KEYS", "MAX_RETAINED_KEYS", "Accept", "Announce",
    "Batch", "BatchBody", "Bye",
    "Digest", "DigestEntry", "Fetch", "FrameDecoder", "Gossip", "GossipMessage", "Graft",
    "Hello", "IHave",
    "Item", "LinkEvent", "LinkOpen", "LinkProtocol", "LinkState", "PeerBye", "PeerHello",
    "PeerRefused", "Ping", "Pong", "Prune", "Refuse", "Reply", "Retained", "RetainedDigest",
    "RetainedKey", "RetainedWant", "WireMessage", "check_hello",
    "decode_body", "decode_kept_body", "decode_message", "encode_body", "encode_frame",
    "encode_message",
]
