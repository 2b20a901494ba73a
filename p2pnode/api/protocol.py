"""The local API's messages, without I/O: request parsing and validation, replies, events.

One UTF-8 JSON object per line. Any request may carry ``"id"`` (a JSON scalar),
echoed in its reply. Errors are ``ApiError`` with a code from ``ERROR_CODES``; an error
reply also carries ``"req"``, the number of the request on its connection (1 for the
first), so that a client that sent publishes with ``"ack": false`` (answered only when
refused) knows which one was refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, get_args

import msgspec

from ..errors import RemoteProtocolError
from ..ids import id_to_hex, parse_id
from ..wire.messages import Gossip, Item
from ..wire.topics import name_problem, pattern_problem, published_topic_problem
from .member_requests import MembersOp, TagsOp

ERROR_CODES = (
    "bad_json", "bad_request", "unknown_op", "too_large", "too_many_clients", "timeout",
    "rate_limited", "forbidden", "unknown_node", "retained_full", "request_gone",
    "too_many_requests", "store_full", "store_off", "unknown_durable", "durable_busy",
    "too_many_durables", "store_failed",
)
#: A durable subscription's name: 1-64 of these.
DURABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TOPICS_PER_REQUEST = 1024
Scalar = str | int | float | bool | None


class ApiError(RemoteProtocolError):
    """A request that cannot be served. ``req_id`` is echoed in the error reply."""

    def __init__(self, code: str, message: str, req_id: Scalar = None) -> None:
        super().__init__(code, message)
        self.req_id = req_id
        self.req = 0  # the request's number on its connection (0: not known)


class Publish(msgspec.Struct, tag="publish", tag_field="op", kw_only=True,
              forbid_unknown_fields=True):
    id: Scalar = None
    topic: str
    data: str | None = None
    data_b64: str | None = None
    to: str | None = None
    #: False: answer only if the message is refused (a pipelining client's publishes;
    #: a later reply, such as to ``sync``, says that they were all taken).
    ack: bool = True
    #: True: it becomes the retained message of its topic (an empty payload clears it).
    retain: bool = False


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="op", kw_only=True,
                forbid_unknown_fields=True):
    """Subscribe to ``topics`` (all if empty). With ``since`` (a message id, or a Unix
    time in seconds), first replay the matching messages of the node's history that
    came after it, then go on live."""

    id: Scalar = None
    topics: list[str]
    since: str | float | None = None
    #: With ``since``: per run of an origin (a message id's first 8 bytes), the last
    #: message id the app got of it. Those and earlier ones of their runs are not
    #: replayed, nor delivered live (a reconnecting app's exact position).
    seen: list[str] | None = None
    #: False: do not send the topics' retained messages first.
    retained: bool = True
    #: A durable subscription's name (docs/store.md): created or resumed, fed from the
    #: message store after its last ack.
    durable: str | None = None
    #: ... with at most this many messages delivered and not acked (default and most:
    #: the node's ``durable_max_unacked``).
    max_unacked: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="op", kw_only=True,
                  forbid_unknown_fields=True):
    """Stop ``topics`` (all if empty); or stop durable subscription ``durable`` on this
    connection (its position is kept), and with ``delete`` remove it from the store."""

    id: Scalar = None
    topics: list[str] | msgspec.UnsetType = msgspec.UNSET
    durable: str | None = None
    delete: bool = False


class Ack(msgspec.Struct, tag="ack", tag_field="op", kw_only=True,
          forbid_unknown_fields=True):
    """Confirm the messages of durable subscription ``durable`` delivered up to and
    including ``msg_id`` (cumulative)."""

    id: Scalar = None
    durable: str
    msg_id: str


class Peers(msgspec.Struct, tag="peers", tag_field="op", kw_only=True,
            forbid_unknown_fields=True):
    """List the peers; with ``wait_min``/``wait_max``, first wait (up to ``timeout``
    seconds) until the number of peers is within those bounds."""

    id: Scalar = None
    wait_min: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    wait_max: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0

    @property
    def waits(self) -> bool:
        return self.wait_min is not None or self.wait_max is not None


class Status(msgspec.Struct, tag="status", tag_field="op", kw_only=True,
             forbid_unknown_fields=True):
    id: Scalar = None


class Mesh(msgspec.Struct, tag="mesh", tag_field="op", kw_only=True,
           forbid_unknown_fields=True):
    """The node's view of the whole mesh: nodes, their links, when each was heard of."""

    id: Scalar = None


class StoreOp(msgspec.Struct, tag="store", tag_field="op", kw_only=True,
              forbid_unknown_fields=True):
    """The message store: its size, oldest and newest message, messages per origin,
    durable subscriptions and their lag (``p2pnode store``; docs/store.md, "Tooling")."""

    id: Scalar = None


class Monitor(msgspec.Struct, tag="monitor", tag_field="op", kw_only=True,
              forbid_unknown_fields=True):
    """Stream the node's log records at ``level`` or above (``log`` events), link
    changes (``link`` events) and, with ``messages``, a ``delivered`` event (without
    the payload) for every message the node delivers."""

    id: Scalar = None
    level: Literal["debug", "info", "warning", "error"] = "info"
    messages: bool = False


class Sync(msgspec.Struct, tag="sync", tag_field="op", kw_only=True,
           forbid_unknown_fields=True):
    """Answered at once. The node answers a connection's requests in order, so its
    reply says that every request sent before it was handled (and any refusal of a
    publish sent with ``"ack": false`` already came)."""

    id: Scalar = None


class Will(msgspec.Struct, tag="will", tag_field="op", kw_only=True,
           forbid_unknown_fields=True):
    """This connection's last will: published by the node (``retain`` as in
    ``publish``) if the connection ends without ``bye``. Replaces an earlier will; without
    ``topic`` (and data), clears it (``api.wills``)."""

    id: Scalar = None
    topic: str | None = None
    data: str | None = None
    data_b64: str | None = None
    retain: bool = False


class Bye(msgspec.Struct, tag="bye", tag_field="op", kw_only=True,
          forbid_unknown_fields=True):
    """The app is leaving on purpose: no will is published. Answered, then the node
    closes the connection (it reads no further request)."""

    id: Scalar = None


class RequestOp(msgspec.Struct, tag="request", tag_field="op", kw_only=True,
                forbid_unknown_fields=True):
    """Send a request on ``topic`` to the apps that subscribe to it on every node, and
    answer with their replies once ``max_replies`` came or ``timeout`` seconds passed
    (``api.requests``; docs/api.md, "request")."""

    id: Scalar = None
    topic: str
    data: str | None = None
    data_b64: str | None = None
    timeout: float = 5.0
    max_replies: int = 1


class ReplyOp(msgspec.Struct, tag="reply", tag_field="op", kw_only=True,
              forbid_unknown_fields=True):
    """Answer the request whose event carried ``reply_to``: with ``data`` (or
    ``data_b64``), or with an ``error`` text (the app could not serve it)."""

    id: Scalar = None
    reply_to: str
    data: str | None = None
    data_b64: str | None = None
    error: str | None = None


Request = (Publish | Subscribe | Unsubscribe | Peers | Status | Monitor | Mesh | Sync | Will
           | Bye | RequestOp | ReplyOp | Ack | StoreOp | MembersOp | TagsOp)
#: Every op, taken from the request types themselves so that a new one cannot be left out.
OPS: tuple[str, ...] = tuple(str(kind.__struct_config__.tag) for kind in get_args(Request))

_request_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
_encoder = msgspec.json.Encoder()


#: ``parse_request`` without its explanations: raises msgspec's errors (the API's hot
#: path calls ``parse_request`` again with a line that this refused, for the error).
decode_request: Callable[[bytes], Request] = _request_decoder.decode


def parse_request(line: bytes) -> Request:
    """Parse one request line. Raises ``ApiError`` (bad_json, bad_request, unknown_op)."""
    try:
        return _request_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise _explain(line, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError("bad_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError("bad_json", "JSON nested too deeply") from None


def _explain(line: bytes, detail: str) -> ApiError:
    """Work out why a syntactically valid line is not a valid request."""
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # pragma: no cover
        return ApiError("bad_json", str(exc))
    except RecursionError:
        return ApiError("bad_request", "JSON nested too deeply")
    if not isinstance(obj, dict):
        return ApiError("bad_request", "a request must be a JSON object")
    raw_id = obj.get("id")
    req_id = raw_id if isinstance(raw_id, str | int | float | bool) else None
    op = obj.get("op")
    if op is None:
        return ApiError("bad_request", 'missing "op"', req_id)
    if not isinstance(op, str) or op not in OPS:
        return ApiError("unknown_op", f"unknown op {op!r}; known: {', '.join(OPS)}", req_id)
    return ApiError("bad_request", detail, req_id)


def check_topic(topic: str, req_id: Scalar = None) -> str:
    """Validate a topic to publish to: 1-256 UTF-8 bytes, no control characters, not
    reserved, no wildcard (``+``, ``#``). The last ``TOPICS_CHECKED`` topics found
    good are remembered (a publisher mostly repeats its topics)."""
    if topic in _good_topics:
        return topic
    _check_name(topic, req_id)
    problem = published_topic_problem(topic)
    if problem is not None:
        raise ApiError("bad_request", f"topic {topic!r}: {problem}", req_id)
    if len(_good_topics) >= TOPICS_CHECKED:
        _good_topics.clear()
    _good_topics[topic] = None
    return topic


#: Topics that ``check_topic`` remembers as good, at most (256 KiB of them at most).
TOPICS_CHECKED = 1024
_good_topics: dict[str, None] = {}


def check_pattern(pattern: str, req_id: Scalar = None) -> str:
    """Validate a subscription: a topic name, or a pattern with wildcards each alone in
    its level and ``#`` last (``topics.pattern_problem``)."""
    _check_name(pattern, req_id)
    problem = pattern_problem(pattern)
    if problem is not None:
        raise ApiError("bad_request", f"pattern {pattern!r}: {problem}", req_id)
    return pattern


def _check_name(topic: str, req_id: Scalar) -> None:
    """What topics and patterns share: 1-256 UTF-8 bytes, printable, not reserved."""
    problem = name_problem(topic)
    if problem is not None:
        raise ApiError("bad_request", problem, req_id)


def check_topics(topics: list[str], req_id: Scalar = None) -> list[str]:
    """Validate the subscriptions of a ``subscribe``/``unsubscribe`` (at most
    ``MAX_TOPICS_PER_REQUEST`` topic names and patterns)."""
    if len(topics) > MAX_TOPICS_PER_REQUEST:
        raise ApiError("bad_request", f"at most {MAX_TOPICS_PER_REQUEST} topics", req_id)
    return [check_pattern(t, req_id) for t in topics]


def check_durable_name(name: str, req_id: Scalar = None) -> str:
    """Validate a durable subscription's name: 1-64 of ``A-Z a-z 0-9 _ . -``."""
    if not DURABLE_NAME.fullmatch(name):
        raise ApiError("bad_request", f"durable name {name[:80]!r}: 1-64 characters of "
                       "A-Z, a-z, 0-9, '_', '.' and '-'", req_id)
    return name


def unsubscribe_topics(req: Unsubscribe) -> list[str]:
    """The topics of an ``unsubscribe`` without ``durable``. Raises ``ApiError``."""
    if isinstance(req.topics, msgspec.UnsetType):
        raise ApiError("bad_request", 'give "topics" (or "durable")', req.id)
    return req.topics


def publish_payload(req: Publish | Will | RequestOp | ReplyOp, max_payload: int) -> bytes:
    """Return the payload of a publish request, validated. Raises ``ApiError``."""
    if (req.data is None) == (req.data_b64 is None):
        raise ApiError("bad_request", 'give exactly one of "data" or "data_b64"', req.id)
    if req.data is not None:
        try:
            payload = req.data.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError("bad_request", '"data" is not valid UTF-8 text', req.id) from None
    else:
        assert req.data_b64 is not None
        try:
            payload = base64.b64decode(req.data_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("bad_request", '"data_b64" is not valid base64', req.id) from None
    if len(payload) > max_payload:
        raise ApiError(
            "too_large", f"payload of {len(payload)} bytes exceeds {max_payload}", req.id
        )
    return payload


def check_retain(req: Publish, topic: str, size: int,
                 refusal: Callable[[str, int], str | None]) -> None:
    """Check a publish with ``retain`` of ``size`` payload bytes on ``topic``; ``refusal``
    says why the node could not keep it (None: it could). Raises ``ApiError``:
    ``bad_request`` (with ``to``), ``retained_full``."""
    if req.to is not None:
        raise ApiError("bad_request", 'a retained message goes to everyone: give no "to" '
                       'with "retain"', req.id)
    why = refusal(topic, size)
    if why is not None:
        raise ApiError("retained_full", why, req.id)


def publish_target(req: Publish) -> bytes | None:
    """The node id of a direct message's target, or None. Raises ``ApiError``."""
    if req.to is None:
        return None
    try:
        return parse_id(req.to)
    except ValueError as exc:
        raise ApiError("bad_request", f'"to": {exc}', req.id) from None


def encode_reply(req_id: Scalar, fields: dict[str, Any]) -> bytes:
    """A success reply line: ``{"id":…, "ok":true, …}`` (``id`` only if the request had one)."""
    body: dict[str, Any] = {"id": req_id} if req_id is not None else {}
    body["ok"] = True
    body.update(fields)
    return _encoder.encode(body) + b"\n"


def encode_error(err: ApiError) -> bytes:
    """An error reply line."""
    body: dict[str, Any] = {"id": err.req_id} if err.req_id is not None else {}
    body["ok"] = False
    body["error"] = {"code": err.code, "message": err.message}
    if err.req:
        body["req"] = err.req
    return _encoder.encode(body) + b"\n"


class MessageEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A message delivered to a subscriber."""

    event: str
    msg_id: str
    origin: str
    topic: str
    hops: int
    data: str | None = None
    data_b64: str | None = None
    to: str | None = None
    replay: bool = False  # from history, in answer to a subscribe with "since"
    retained: bool = False  # the topic's retained message, not a new publish
    reply_to: str | None = None  # a request: the token of its replies ("reply" op)
    timeout: float | None = None  # ... and how long its asker waits (seconds)
    durable: str | None = None  # from the store, for this durable subscription (to ack)


def encode_delivered(msg: Gossip) -> bytes:
    """The ``delivered`` event of a monitoring session: a message's metadata and size."""
    body: dict[str, Any] = {
        "event": "delivered", "msg_id": id_to_hex(msg.id), "origin": id_to_hex(msg.origin),
        "topic": msg.topic, "hops": msg.hops, "size": len(msg.data),
    }
    if msg.to is not None:
        body["to"] = id_to_hex(msg.to)
    return _encoder.encode(body) + b"\n"


def encode_gap(durable: str, lost: int) -> bytes:
    """The event of a durable subscription that fell behind the store's retention:
    ``lost`` of its messages were removed before it acked them."""
    return _encoder.encode({"event": "gap", "durable": durable, "lost": lost}) + b"\n"


def encode_closing(reason: str, handled: int) -> bytes:
    """The last line a client gets when the node closes its connection on purpose:
    why, and how many of the connection's requests it handled (those with ``"ack":
    false`` included), so that the client knows its quiet publishes were taken."""
    return _encoder.encode({"event": "closing", "reason": reason, "handled": handled}) + b"\n"


def parse_since(since: str | float, req_id: Scalar = None) -> bytes | float:
    """A subscribe's ``since``: a message id (bytes) or a Unix time (float).
    Raises ``ApiError("bad_request")``."""
    if isinstance(since, str):
        try:
            return parse_id(since)
        except ValueError:
            raise ApiError("bad_request", "since is a message id (32 hex digits) or a Unix "
                           "time in seconds", req_id) from None
    if not since >= 0 or since == float("inf"):
        raise ApiError("bad_request", "since must be a Unix time >= 0", req_id)
    return float(since)


#: Message ids a ``subscribe``'s ``seen`` may list at most.
MAX_SEEN = 1024


def parse_seen(seen: list[str], req_id: Scalar = None) -> dict[bytes, bytes]:
    """A subscribe's ``seen``: per run (the ids' first 8 bytes), the highest id given.
    Raises ``ApiError("bad_request")``."""
    if len(seen) > MAX_SEEN:
        raise ApiError("bad_request", f"seen lists at most {MAX_SEEN} message ids", req_id)
    out: dict[bytes, bytes] = {}
    for text in seen:
        try:
            msg_id = parse_id(text)
        except ValueError:
            raise ApiError("bad_request", f"seen holds message ids (32 hex digits), not "
                           f"{text[:40]!r}", req_id) from None
        out[msg_id[:8]] = max(msg_id, out.get(msg_id[:8], msg_id))
    return out


def encode_event(msg: Gossip, *, replay: bool = False, retained: bool = False,
                 reply_to: bytes | None = None, timeout: float | None = None,
                 durable: str | None = None) -> bytes:
    """The event line for a delivered message (``data_b64`` when not UTF-8); marked
    ``retained`` with ``retained`` or when ``msg.retained``; for a request, with its
    ``reply_to`` token (``reply_to``: its origin + message id) and its ``timeout``."""
    try:
        text: str | None = msg.data.decode("utf-8")
        b64 = None
    except UnicodeDecodeError:
        text, b64 = None, base64.b64encode(msg.data).decode("ascii")
    ev = MessageEvent(
        event="message", msg_id=id_to_hex(msg.id), origin=id_to_hex(msg.origin), topic=msg.topic,
        hops=msg.hops, data=text, data_b64=b64,
        to=id_to_hex(msg.to) if msg.to is not None else None, replay=replay,
        retained=retained or msg.retained,
        reply_to=reply_to.hex() if reply_to is not None else None,
        timeout=round(timeout, 3) if timeout is not None else None, durable=durable,
    )
    return _encoder.encode(ev) + b"\n"


def encode_events(origin: bytes, hops: int, to: bytes | None, items: Sequence[Item], *,
                  durable: str | None = None) -> bytes:
    """The event lines of ``items``, messages of one batch of ``origin`` (``durable``:
    stored ones, for that durable subscription): what ``encode_event`` gives for each,
    in one encoding (the hot path of delivery and of durable feeds)."""
    origin_hex = origin.hex()
    to_hex = to.hex() if to is not None else None
    events = []
    for item in items:
        try:
            text: str | None = item.data.decode("utf-8")
            b64 = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(item.data).decode("ascii")
        events.append(MessageEvent(event="message", msg_id=item.id.hex(), origin=origin_hex,
                                   topic=item.topic, hops=hops, data=text, data_b64=b64,
                                   to=to_hex, durable=durable))
    return _encoder.encode_lines(events)
