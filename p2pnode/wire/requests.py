"""Requests and replies on the wire (docs/protocol.md, "Requests and replies").

A **request** travels like any published message, inside a signed batch of its origin,
gossiped to every node: it is one item on the reserved topic ``REQUEST_TOPIC`` whose
payload is a ``RequestBody`` (the app's topic, how long the origin waits, how many
replies it wants, the app's data). Its batch is unnumbered (``seq`` 0): it is not held
for order and not announced by the digest exchange when a link opens, so a node that
was not linked when a request went out never receives it late.

A **reply** is a ``messages.Reply``: a ``ReplyBody`` signed by the replying node, sent
back along the path its request came by.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..errors import RemoteProtocolError
from .messages import NodeIdBytes, Reply, Topic, topic_problem

#: The reserved topic of request items (``$`` topics are the nodes' own).
REQUEST_TOPIC = "$request"
#: The longest timeout a request may carry on the wire (each node applies its own,
#: smaller, ``request_timeout_max``).
MAX_WIRE_TIMEOUT_MS = 3_600_000
#: The most bytes a ``RequestBody`` adds around the app's data: its topic (256 bytes
#: at most) and msgpack headers. A request's data is at most ``max_payload`` minus this.
REQUEST_OVERHEAD = 512
#: The longest error text of a reply (characters).
MAX_ERROR = 1024


class RequestBody(msgspec.Struct, array_like=True, frozen=True):
    """The payload of a request item: the app's ``topic`` and ``data``, how long the
    origin waits for replies (``timeout_ms``) and how many it takes (``max_replies``)."""

    topic: Topic
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_WIRE_TIMEOUT_MS)]
    max_replies: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    data: bytes


class ReplyBody(msgspec.Struct, array_like=True, frozen=True):
    """What a replier signs: which request it answers (``origin``, the asking node, and
    ``request``, the request's message id), who it is (``replier``, and its ``name``),
    and the answer: ``data``, or an ``error`` text (non-empty: the replier's app failed,
    and ``data`` is empty)."""

    origin: NodeIdBytes
    request: NodeIdBytes
    replier: NodeIdBytes
    name: Annotated[str, msgspec.Meta(max_length=64)]
    data: bytes
    error: Annotated[str, msgspec.Meta(max_length=MAX_ERROR)] = ""


_encoder = msgspec.msgpack.Encoder()
_request_decoder: msgspec.msgpack.Decoder[RequestBody] = msgspec.msgpack.Decoder(RequestBody)
_reply_decoder: msgspec.msgpack.Decoder[ReplyBody] = msgspec.msgpack.Decoder(ReplyBody)


def encode_request(body: RequestBody) -> bytes:
    """The payload of a request item."""
    return _encoder.encode(body)


def decode_request(data: bytes) -> RequestBody:
    """Decode and check a request item's payload (its topic must be an app's: printable,
    not reserved). Raises ``RemoteProtocolError("bad_message")``."""
    try:
        body = _request_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError("bad_message", f"request: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError("bad_message", "nested too deeply") from None
    problem = topic_problem(body.topic)
    if problem is None and body.topic.startswith("$"):
        problem = "a request's topic is not a reserved one"
    if problem is not None:
        raise RemoteProtocolError("bad_message", problem)
    return body


def encode_reply_body(body: ReplyBody) -> bytes:
    """The bytes a replier signs."""
    return _encoder.encode(body)


def decode_reply_body(reply: Reply, max_payload: int) -> ReplyBody:
    """Decode a reply's body and check it against the reply's outer fields and the
    payload limit. Raises ``RemoteProtocolError`` (``bad_message``, ``too_large``)."""
    try:
        body = _reply_decoder.decode(reply.body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError("bad_message", f"reply body: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError("bad_message", "nested too deeply") from None
    if (body.origin, body.request, body.replier) != (reply.origin, reply.request,
                                                     reply.replier):
        raise RemoteProtocolError("bad_message", "the reply does not match its body")
    if len(body.data) > max_payload:
        raise RemoteProtocolError("too_large", "a reply over the payload limit")
    return body
