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


class LinkList(msgspec.Struct, array_like=True, frozen=True):
    """The payload of a ``$mesh`` message: who the origin is and whom it links to."""

    name: Annotated[str, msgspec.Meta(max_length=64)]
    listen: Annotated[str, msgspec.Meta(max_length=256)]
    links: Annotated[list[NodeId], msgspec.Meta(max_length=4096)]
    stamp: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] = 0  # newer lists: higher


_decoder = msgspec.msgpack.Decoder(LinkList)
_encoder = msgspec.msgpack.Encoder()


def encode_link_list(name: str, listen: str, links: list[bytes], stamp: int) -> bytes:
    """A link list as the payload of a ``$mesh`` message."""
    return _encoder.encode(LinkList(name, listen, sorted(links), stamp))


def decode_link_list(payload: bytes) -> LinkList:
    """A ``$mesh`` payload. Raises ``msgspec.DecodeError``/``ValidationError``."""
    return _decoder.decode(payload)
