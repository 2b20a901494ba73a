"""The payload of a ``$mesh`` message: a node's name, address and links (msgpack).

``$mesh`` is a reserved topic: topics starting with ``RESERVED_PREFIX`` are the
nodes' own, never published or subscribed to by apps.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ids import ID_LEN

MESH_TOPIC = "$mesh"
RESERVED_PREFIX = "$"  # topics apps may not publish or subscribe to

NodeId = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class LinkList(msgspec.Struct, array_like=True, frozen=True):
    """The payload of a ``$mesh`` message: who the origin is and whom it links to."""

    name: Annotated[str, msgspec.Meta(max_length=64)]
    listen: Annotated[str, msgspec.Meta(max_length=256)]
    links: Annotated[list[NodeId], msgspec.Meta(max_length=4096)]
    stamp: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] = 0  # newer lists: higher
    #: Interest mode (protocol 7, absent before and in the other modes): routed batches
    #: the origin received for its own subscriptions, and only to pass on, since it started.
    wanted: Count | None = None
    relayed: Count | None = None


_decoder = msgspec.msgpack.Decoder(LinkList)
_encoder = msgspec.msgpack.Encoder()


def encode_link_list(name: str, listen: str, links: list[bytes], stamp: int,
                     counts: tuple[int, int] | None = None) -> bytes:
    """A link list as the payload of a ``$mesh`` message; ``counts``: (wanted,
    relayed) of an interest-mode node (None: not said)."""
    wanted, relayed = counts if counts is not None else (None, None)
    return _encoder.encode(LinkList(name, listen, sorted(links), stamp, wanted, relayed))


def decode_link_list(payload: bytes) -> LinkList:
    """A ``$mesh`` payload. Raises ``msgspec.DecodeError``/``ValidationError``."""
    return _decoder.decode(payload)
