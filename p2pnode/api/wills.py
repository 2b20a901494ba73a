"""Last wills: a message the node publishes for an app whose connection ends without a
``bye`` (the app crashed or was killed), as MQTT does.

``{"op":"will","topic":T,"data":...,"retain":bool}`` sets the connection's will (it
replaces an earlier one); ``{"op":"will"}`` clears it. ``{"op":"bye"}`` says the app is
leaving on purpose: the node answers, publishes no will, and closes the connection. One
will per connection, its payload at most ``will_max_bytes`` (64 KiB by default). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .protocol import ApiError, Bye, Will, check_topic, encode_reply, publish_payload

#: The requests ``will_request`` answers.
WILL_OPS = (Will, Bye)


@dataclass(frozen=True, slots=True)
class LastWill:
    """A connection's will: what the node publishes if the connection ends without bye."""

    topic: str
    payload: bytes
    retain: bool


def parse_will(req: Will, max_bytes: int,
               retained_refusal: Callable[[str, int], str | None]) -> LastWill | None:
    """The will a ``will`` request sets (None: it clears it). Raises ``ApiError``:
    ``bad_request`` (a bad topic; data or ``retain`` without a topic; not exactly one of
    ``data`` and ``data_b64``), ``too_large`` (a payload over ``max_bytes``),
    ``retained_full`` (a retained will this node could not keep now:
    ``retained_refusal(topic, size)`` says why)."""
    if req.topic is None:
        if req.data is not None or req.data_b64 is not None or req.retain:
            raise ApiError("bad_request", 'a will without "topic" clears the will: give '
                           'no "data", "data_b64" or "retain" with it', req.id)
        return None
    topic = check_topic(req.topic, req.id)
    try:
        payload = publish_payload(req, max_bytes)
    except ApiError as err:
        if err.code != "too_large":
            raise
        raise ApiError("too_large", f"a will's payload is at most {max_bytes} bytes "
                       f"({err.message})", req.id) from None
    if req.retain and (why := retained_refusal(topic, len(payload))) is not None:
        raise ApiError("retained_full", why, req.id)
    return LastWill(topic, payload, req.retain)


class WillHolder(Protocol):
    """A connection, as far as its will goes."""

    will: LastWill | None
    said_bye: bool


class WillBackend(Protocol):
    """What publishing a will takes from the node."""

    def publish(self, topic: str, payload: bytes, to: bytes | None, *,
                defer_flush: bool = False, retain: bool = False) -> tuple[str, int]: ...
    def flush(self) -> None: ...
    def retained_refusal(self, topic: str, size: int) -> str | None: ...


def will_request(holder: WillHolder, req: Will | Bye, max_bytes: int,
                 backend: WillBackend) -> bytes:
    """Answer a ``will`` (set or clear the will) or a ``bye`` (no will will be published;
    the caller reads nothing more from the connection). Raises ``ApiError``
    (``parse_will``)."""
    if type(req) is Bye:
        holder.said_bye = True
    else:
        assert type(req) is Will
        holder.will = parse_will(req, max_bytes, backend.retained_refusal)
    return encode_reply(req.id, {})


def publish_will(holder: WillHolder, backend: WillBackend) -> bool:
    """The connection ended: publish its will, unless the app said bye. Returns whether
    it published one. The batch is signed and queued at once, so that it goes out
    before the Byes of a node that is stopping."""
    will = holder.will
    if will is None or holder.said_bye:
        return False
    holder.will = None
    backend.publish(will.topic, will.payload, None, retain=will.retain)
    backend.flush()
    return True
