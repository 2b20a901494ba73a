"""The client side of the local API without I/O, shared by the three clients.

``ClientProtocol`` encodes requests into an output buffer, matches the node's replies
to the requests in order (the node answers the requests of a connection in the order
it read them), and collects the events that arrive in between. The trio, asyncio and
blocking clients only move bytes: they write ``take_out()`` to the socket and hand
what they read to ``feed()``.

Each request gets a number on its connection (1, 2, ...). A publish that nobody
waits for (a *pipelined* publish) is remembered only by that number, its topic and
its size until its reply comes; an error reply for it is kept as a ``PublishError``
naming the message, for the client to raise from its next call.

Most pipelined publishes go with ``"ack": false``: the node answers them only if it
refuses them (the error reply names the request's number, ``"req"``), which spares
the node a reply and this client a parse per message. One publish in ``window // 4``
(and the one that fills the window) asks for a reply; as the node answers in order,
that reply acknowledges every quiet publish before it. ``flush_target`` adds a
``sync`` request when the last request was quiet, so that there is a reply to wait for.
"""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import msgspec

from ..errors import P2PError

MAX_LINE: Final = 4 << 20  # a reply or event line longer than this is refused (bytes)
#: Requests sent and not yet answered before ``publish`` waits (the window). With the
#: store on, a reply waits for the node's write (about 1 ms alone, more at full speed):
#: the window must cover that much publishing, or the app stalls and the node's reads,
#: signed batches and writes get smaller (docs/store.md).
DEFAULT_WINDOW: Final = 4000
#: The same bound in bytes of request lines (one larger request may go alone).
DEFAULT_WINDOW_BYTES: Final = 1 << 20
#: Events kept for ``next_event`` before the oldest are dropped (``events_dropped``).
DEFAULT_MAX_EVENTS: Final = 100_000
#: Seconds that closing a client waits for the replies to what it published.
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
#: Refusals listed in one ``PublishError`` (later ones are only counted).
MAX_REFUSALS: Final = 1000
#: Bytes of buffered requests past which the async clients write without waiting
#: for their loop's next turn.
WRITE_BATCH: Final = 64 << 10

#: A publish that comes this long (seconds) after the one before is written at once by
#: the async clients, not at their loop's next turn: an app that publishes now and then
#: gets the lowest latency, one that publishes in a burst gets batched writes.
LONE_GAP: Final = 0.0002

#: A waiting request's sink: called with its reply, or with None if the connection
#: ended first.
Sink = Callable[[dict[str, Any] | None], None]


class ApiReplyError(P2PError):
    """The node answered a request with an error (``code``, ``message``: docs/api.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Refusal(NamedTuple):
    """One pipelined publish that the node refused."""

    seq: int  # its number on the connection (what ``publish`` returned)
    topic: str
    code: str
    message: str


class PublishError(ApiReplyError):
    """The node refused a pipelined publish: ``seq`` (the message's number on its
    connection, what ``publish`` returned), ``topic``, ``code`` and ``message`` say
    which and why. Refusals of later publishes that came before this error was raised
    are not raised separately: ``refusals`` lists them all, this one first (up to
    ``MAX_REFUSALS``), ``later_errors`` counts the later ones."""

    def __init__(self, code: str, message: str, seq: int, topic: str) -> None:
        super().__init__(code, message)
        self.seq = seq
        self.topic = topic
        self.later_errors = 0
        self.refusals = [Refusal(seq, topic, code, message)]

    def __str__(self) -> str:
        more = f" (and {self.later_errors} later publishes)" if self.later_errors else ""
        return (f"publish #{self.seq} to {self.topic!r} refused{more}: "
                f"{self.code}: {self.message}")


class ConnectionClosed(P2PError, ConnectionError):
    """The node closed the connection (asyncio and blocking clients; the trio client
    raises ``trio.EndOfChannel``). ``events()`` ends on it."""


class ProtocolViolation(P2PError):
    """The node sent something that is not the local API: the connection is unusable."""


class _Publish(msgspec.Struct, tag="publish", tag_field="op", omit_defaults=True):
    topic: str
    data: str | None = None
    data_b64: bytes | None = None  # msgspec writes bytes as base64
    to: str | None = None
    retain: bool = False  # the topic's retained message
    ack: bool = True  # False: the node answers only if it refuses it (stays last)


_encode = msgspec.json.Encoder().encode
#: How a quiet publish line ends (``ack`` is _Publish's last field); cut to ask for a reply.
_QUIET_TAIL: Final = b',"ack":false}\n'
_SYNC: Final = b'{"op":"sync"}\n'
#: What a client sends when it is closed normally: the node then publishes no will.
_BYE: Final = b'{"op":"bye"}\n'
_decode_lines = msgspec.json.Decoder().decode_lines
#: The start of a publish line per topic (``encode_publish``), for this many topics at most.
MAX_HEADS: Final = 256
_heads: dict[str, bytes] = {}


def publish_request(topic: str, data: str | bytes, to: str | None = None,
                    req_id: Any = None, *, retain: bool = False) -> dict[str, Any]:
    """Build a publish request: text goes as ``data``, other bytes as ``data_b64``;
    ``retain``: the topic's retained message (docs/api.md)."""
    req: dict[str, Any] = {"op": "publish", "topic": topic}
    _put_data(req, data)
    if to is not None:
        req["to"] = to
    if retain:
        req["retain"] = True
    if req_id is not None:
        req["id"] = req_id
    return req


def will_request(topic: str | None = None, data: str | bytes = "", *,
                 retain: bool = False) -> dict[str, Any]:
    """Build a ``will`` request: the message the node publishes if this connection ends
    without ``bye`` (a crash); ``topic`` None clears the will."""
    if topic is None:
        return {"op": "will"}
    req: dict[str, Any] = {"op": "will", "topic": topic}
    _put_data(req, data)
    if retain:
        req["retain"] = True
    return req


def _put_data(req: dict[str, Any], data: str | bytes) -> None:
    if isinstance(data, str):
        req["data"] = data
    else:
        try:
            req["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            req["data_b64"] = base64.b64encode(data).decode("ascii")


def peers_request(wait_min: int | None = None, wait_max: int | None = None,
                  timeout: float = 10.0) -> dict[str, Any]:
    """Build a peers request, with optional waiting bounds."""
    req: dict[str, Any] = {"op": "peers"}
    if wait_min is not None:
        req["wait_min"] = wait_min
    if wait_max is not None:
        req["wait_max"] = wait_max
    if wait_min is not None or wait_max is not None:
        req["timeout"] = timeout
    return req


def subscribe_request(topics: list[str] | None, since: str | float | None,
                      retained: bool = True, durable: str | None = None,
                      max_unacked: int | None = None, *,
                      seen: list[str] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "subscribe", "topics": list(topics or [])}
    if since is not None:
        request["since"] = since
    if seen:
        request["seen"] = list(seen)
    if not retained:
        request["retained"] = False
    if durable is not None:
        request["durable"] = durable
    if max_unacked is not None:
        request["max_unacked"] = max_unacked
    return request


def unsubscribe_request(topics: list[str] | None, durable: str | None = None,
                        delete: bool = False) -> dict[str, Any]:
    if durable is None:
        return {"op": "unsubscribe", "topics": list(topics or [])}
    return {"op": "unsubscribe", "durable": durable, "delete": delete}


def ack_request(event: dict[str, Any]) -> dict[str, Any]:
    """The ``ack`` of a message event of a durable subscription (and all before it)."""
    durable, msg_id = event.get("durable"), event.get("msg_id")
    if not isinstance(durable, str) or not isinstance(msg_id, str):
        raise ValueError("ack takes a message event of a durable subscription (with "
                         "\"durable\" and \"msg_id\")")
    return {"op": "ack", "durable": durable, "msg_id": msg_id}


def event_payload(event: dict[str, Any]) -> bytes:
    """The payload of a message event as bytes, whichever way it was encoded."""
    if "data_b64" in event:
        return base64.b64decode(event["data_b64"])
    return str(event.get("data", "")).encode("utf-8")


def check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` if it says ``ok``; else raises ``ApiReplyError``."""
    if reply.get("ok") is not True:
        err = reply.get("error")
        err = err if isinstance(err, dict) else {}
        raise ApiReplyError(str(err.get("code", "unknown")), str(err.get("message", "")))
    return reply


def encode_publish(topic: str, data: str | bytes, to: str | None = None, *,
                   ack: bool = True, retain: bool = False) -> bytes:
    """One publish request line (``ack=False``: answered only if refused; ``retain``:
    the topic's retained message). Raises ``TypeError`` or ``ValueError`` (text that is
    not encodable, such as a lone surrogate) before anything is queued."""
    if type(data) is str and to is None and not retain:  # the usual: the line's start kept
        head = _heads.get(topic)
        if head is None:
            head = _encode(_Publish(topic, ""))[:-3]  # '{"op":...,"data":' without '""}'
            if len(_heads) >= MAX_HEADS:
                _heads.clear()
            _heads[topic] = head
        return head + _encode(data) + (b"}\n" if ack else _QUIET_TAIL)
    if isinstance(data, str):
        msg = _Publish(topic, data, None, to, retain, ack)
    else:
        try:
            msg = _Publish(topic, bytes(data).decode("utf-8"), None, to, retain, ack)
        except UnicodeDecodeError:
            msg = _Publish(topic, None, bytes(data), to, retain, ack)
    return _encode(msg) + b"\n"


def _ignore(reply: dict[str, Any] | None) -> None:
    """The sink of a ``sync`` request: its reply only moves ``acked``."""


def encode_request(request: dict[str, Any]) -> bytes:
    """One request line (UTF-8 JSON, non-ASCII text as it is). Raises ``TypeError`` or
    ``ValueError`` for what JSON cannot carry."""
    if not isinstance(request, dict):
        raise TypeError(f"a request is a dict, not {type(request).__name__}")
    return _encode(request) + b"\n"


class ClientProtocol:
    """One connection's requests, replies and events (no I/O).

    ``window``/``window_bytes``: the requests (and their bytes) sent but not yet
    answered past which ``has_room`` says no. ``max_events``: events kept for the
    application; past it the oldest are dropped and counted in ``events_dropped``.
    """

    def __init__(self, *, window: int = DEFAULT_WINDOW,
                 window_bytes: int = DEFAULT_WINDOW_BYTES,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if window < 1 or window_bytes < 1 or max_events < 1:
            raise ValueError("window, window_bytes and max_events must be at least 1")
        self.window = window
        self.window_bytes = window_bytes
        self.max_events = max_events
        self.out = bytearray()  # request lines not yet handed to the socket
        self.queued_bytes = 0  # every byte ever put in ``out``
        self.sent = 0  # requests queued so far (the number of the last one)
        self.acked = 0  # requests answered so far
        self.unacked_bytes = 0
        # per request not yet answered: (its size, its topic if it is a pipelined
        # publish, its sink if someone waits for it, None if ``replies`` gets it;
        # whether it went with "ack": false)
        self._pending: collections.deque[tuple[int, str | Sink | None, bool]] = (
            collections.deque())
        # a reply is asked for at least every ``_ack_every`` requests / bytes
        self._ack_every = max(1, window // 4)
        self._ack_bytes = max(1, window_bytes // 4)
        self._since_ack = self._since_ack_bytes = 0  # quiet requests since the last other
        self._last_publish = 0.0
        #: Whether the last publish came more than ``LONE_GAP`` after the one before.
        self.lone = False
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.events_dropped = 0
        self.replies: collections.deque[dict[str, Any]] = collections.deque()
        self.error: PublishError | None = None  # the first refusal not yet raised
        self.lost = 0  # pipelined publishes that the connection's end left unanswered
        self.eof = False
        self.closing_reason = ""  # what the node's ``closing`` event said
        self._rest = b""

    # -- requests ---------------------------------------------------------------

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    def has_room(self) -> bool:
        """Whether another request fits in the window."""
        return self.sent - self.acked < self.window and (
            self.unacked_bytes < self.window_bytes or self.sent == self.acked)

    def below_half(self) -> bool:
        """Whether the window is at most half full (where a full window waits for)."""
        return (self.sent - self.acked <= self.window // 2
                and self.unacked_bytes <= self.window_bytes // 2)

    def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                retain: bool = False) -> int:
        """Queue a pipelined publish; returns its number. It goes quiet (``"ack":
        false``) unless a reply is due: after ``window // 4`` quiet requests (or their
        bytes), or when it fills the window."""
        line = encode_publish(topic, data, to, ack=False, retain=retain)
        n = len(line)
        unacked = self.sent - self.acked
        quiet = (self._since_ack + 1 < self._ack_every and unacked + 1 < self.window
                 and self._since_ack_bytes + n < self._ack_bytes
                 and self.unacked_bytes + n < self.window_bytes)
        if not quiet:
            line = line[: -len(_QUIET_TAIL)] + b"}\n"
        now = time.perf_counter()
        self.lone = now - self._last_publish > LONE_GAP
        self._last_publish = now
        return self._queue(line, topic, quiet)

    def queue(self, line: bytes, sink: Sink | None) -> int:
        """Queue an encoded request line whose reply goes to ``sink`` (or, with None,
        to ``replies``); returns its number."""
        return self._queue(line, sink, False)

    def flush_target(self) -> int:
        """The number of the request whose reply means that everything queued so far
        was handled; queues a ``sync`` first if the last request was quiet."""
        if self._since_ack:
            self._queue(_SYNC, _ignore, False)
        return self.sent

    def close_target(self) -> int:
        """The number of the request whose reply ends a normal close: a ``bye``, queued
        after everything else, so that the node publishes no will for this connection
        (it answers, then closes the connection)."""
        return self._queue(_BYE, _ignore, False)

    def _queue(self, line: bytes, what: str | Sink | None, quiet: bool) -> int:
        if self.eof:
            raise ProtocolViolation("the node closed the connection")
        self.out += line
        n = len(line)
        self.queued_bytes += n
        self.unacked_bytes += n
        self._pending.append((n, what, quiet))
        self.sent += 1
        if quiet:
            self._since_ack += 1
            self._since_ack_bytes += n
        else:
            self._since_ack = self._since_ack_bytes = 0
        return self.sent

    def take_out(self) -> bytearray:
        """The bytes to write now (``out`` starts again empty)."""
        data = self.out
        self.out = bytearray()
        return data

    def eof_message(self) -> str:
        """What to say once the node closed the connection."""
        lost = self.lost
        text = "the node closed the connection"
        if self.closing_reason:
            text += f": {self.closing_reason},"
        if lost:
            text += (f" before it confirmed {lost} publish{'es' if lost != 1 else ''} "
                     "(each may or may not have gone out)")
        return text.rstrip(",")

    def pop_error(self) -> PublishError | None:
        """The refusal to raise now, if any (then forgotten)."""
        err, self.error = self.error, None
        return err

    # -- what the node sends ----------------------------------------------------

    def feed(self, data: bytes | bytearray) -> None:
        """Take bytes from the node: replies go to their requests, events to
        ``events``. Raises ``ProtocolViolation`` (a line that is not JSON, not an
        object, longer than ``MAX_LINE``, or a reply to no request)."""
        if not data:
            self.feed_eof()
            return
        buf = self._rest + data if self._rest else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            self._rest = bytes(buf)
        else:
            self._rest = bytes(buf[cut:])
            try:
                objs = _decode_lines(memoryview(buf)[:cut])
            except msgspec.DecodeError as exc:
                raise ProtocolViolation(f"the node sent a line that is not JSON: {exc}") from None
            self._dispatch(objs)
        if len(self._rest) > MAX_LINE:
            raise ProtocolViolation(f"a line from the node is longer than {MAX_LINE} bytes")

    def _dispatch(self, objs: list[Any]) -> None:
        events = self.events
        for obj in objs:
            if type(obj) is not dict:
                raise ProtocolViolation(f"the node sent a line that is not an object: {obj!r:.80}")
            if "event" in obj:
                if obj["event"] == "closing":
                    self._closing(obj)
                    continue
                if len(events) >= self.max_events:
                    events.popleft()
                    self.events_dropped += 1
                events.append(obj)
            elif self._pending:
                self._skip_quiet(obj)
                size, what, _ = self._pending.popleft()
                self.acked += 1
                self.unacked_bytes -= size
                if type(what) is str:
                    if obj.get("ok") is not True:
                        self._refused(obj, what)
                elif what is None:
                    self.replies.append(obj)
                else:
                    what(obj)  # type: ignore[operator]
            elif len(self.replies) < self.max_events:
                # a reply to bytes written on the socket directly: as for ``send``
                self.replies.append(obj)
            else:
                raise ProtocolViolation(f"the node sent too many replies to no request: "
                                        f"{obj!r:.80}")

    def _closing(self, event: dict[str, Any]) -> None:
        """The node's last line before it closes the connection on purpose: the quiet
        publishes it counts as handled were taken; its reason goes in ``eof_message``."""
        self.closing_reason = str(event.get("reason", ""))[:200]
        handled = event.get("handled")
        pending = self._pending
        if type(handled) is int:
            while pending and pending[0][2] and self.acked < handled:
                size = pending.popleft()[0]
                self.acked += 1
                self.unacked_bytes -= size

    def _skip_quiet(self, reply: dict[str, Any]) -> None:
        """Before ``reply``: the quiet publishes that it shows were taken (the node
        answers in order, and a quiet one only when it refuses it: then ``req`` names
        it). Leaves at least one request pending."""
        pending = self._pending
        req = reply.get("req") if reply.get("ok") is False else None
        last = req - 1 if type(req) is int and req > self.acked else None
        while len(pending) > 1 and pending[0][2] and (last is None or self.acked < last):
            size = pending.popleft()[0]
            self.acked += 1
            self.unacked_bytes -= size

    def _refused(self, reply: dict[str, Any], topic: str) -> None:
        err = reply.get("error")
        err = err if isinstance(err, dict) else {}
        code, message = str(err.get("code", "unknown")), str(err.get("message", ""))
        if self.error is None:
            self.error = PublishError(code, message, self.acked, topic)
        else:
            self.error.later_errors += 1
            if len(self.error.refusals) < MAX_REFUSALS:
                self.error.refusals.append(Refusal(self.acked, topic, code, message))

    def feed_eof(self) -> None:
        """The node closed the connection: the requests still waiting get None, and the
        pipelined publishes left unanswered are counted in ``lost``."""
        if self.eof:
            return
        self.eof = True
        self.out.clear()
        while self._pending:
            _, what, _ = self._pending.popleft()
            if type(what) is str:
                self.lost += 1
            elif what is not None:
                what(None)  # type: ignore[operator]
