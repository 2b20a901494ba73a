"""The ``request`` and ``reply`` operations of the local API (docs/api.md, "request").

A ``request`` waits for its replies, up to its timeout, but does not hold up the
connection: the server goes on reading and handling the requests after it, and only
their reply lines wait behind its answer (``ReplyOrder``), so that replies still come
in request order. A connection can therefore ask and serve at once, and answer a
request it asked itself. While a request waits, its replies are collected here,
encoded as they come and bounded in bytes (per request and in all).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable
from typing import Protocol

import msgspec
import trio

from ..config.settings import NodeConfig
from ..net.outqueue import OutQueue
from ..wire.requests import MAX_ERROR, REQUEST_OVERHEAD, ReplyBody
from .protocol import (
    ApiError,
    ReplyOp,
    RequestOp,
    Scalar,
    check_topic,
    encode_reply,
    publish_payload,
)
from .waiting import hung_up

__all__ = ["Held", "ReplyOrder", "RequestBackend", "RequestDesk", "RequestSink", "answer_waiting",
           "encode_replies"]


class RequestSink(Protocol):
    """Where the node hands the replies of a request of a local app."""

    def reply(self, body: ReplyBody) -> bool:
        """A reply came; returns True once the request has all it asked for."""
        ...

    def done(self) -> None:
        """No more replies: the timeout passed, enough came, or the node stops."""
        ...


class RequestBackend(Protocol):
    """What requests need from the node (``node.requests.Requests``, through the node)."""

    def ask(self, topic: str, data: bytes, timeout: float, max_replies: int,
            sink: RequestSink) -> bytes: ...
    def cancel_request(self, key: bytes) -> None: ...
    def send_reply(self, token: bytes, data: bytes, error: str) -> str | None: ...
    def finish_requests(self) -> None: ...


class Held:
    """A reply line not known yet: the answer to a waiting request, or a publish's reply
    that waits for the store (``confirming.StoreGate``; b"": no line)."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: bytes | None = None


class ReplyOrder:
    """A connection's reply lines, in the order of its requests, while some wait.

    ``put`` queues a reply at once unless an earlier request still waits; then it is
    held until every request before it is answered (``fill``). Events do not pass
    through here: they are queued as they come.
    """

    def __init__(self, out: OutQueue) -> None:
        self.out = out
        self._queue: collections.deque[bytes | Held] = collections.deque()
        self.held_bytes = 0  # reply lines held behind a waiting request
        self._changed = trio.Event()

    @property
    def waiting(self) -> bool:
        """Whether a request of this connection waits for its replies."""
        return bool(self._queue)

    def put(self, line: bytes, *, wake: bool = True) -> None:
        """Queue a reply line, behind the answers of waiting requests (``wake``: see
        ``OutQueue.put_force``)."""
        if self._queue:
            self._queue.append(line)
            self.held_bytes += len(line)
        else:
            self.out.put_force(line, wake=wake)

    def hold(self, held: Held | None = None) -> Held:
        """Keep the place of a reply that will come later (``fill``): ``held``, or a new
        ``Held``."""
        if held is None:
            held = Held()
        self._queue.append(held)
        return held

    @property
    def last(self) -> bytes | Held | None:
        """The newest reply queued (None: none)."""
        return self._queue[-1] if self._queue else None

    def fill(self, held: Held, line: bytes) -> None:
        """The reply for ``held`` is ``line``: send it, and what waited behind it, as far
        as the next request that still waits."""
        held.line = line
        self.release()

    def release(self, *, wake: bool = True) -> None:
        """Send the replies at the head of the queue whose lines are known (``Held``
        places filled by setting their ``line``), as far as the next that is not
        (``wake``: see ``OutQueue.put_force``)."""
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, Held):
                if head.line is None:
                    break
                if head.line:
                    self.out.put_force(head.line, wake=wake)
            else:
                self.out.put_force(head, wake=wake)
                self.held_bytes -= len(head)
            queue.popleft()
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_room(self, limit: int) -> None:
        """Wait while more than ``limit`` bytes of replies are held (the server reads no
        more from a client whose replies pile up)."""
        while self.held_bytes > limit:
            await self._changed.wait()

    async def wait_answered(self) -> None:
        """Wait until no request waits (at the end of a connection, before it closes)."""
        while self._queue:
            await self._changed.wait()


async def answer_waiting(order: ReplyOrder, stream: trio.SocketStream) -> None:
    """A client stopped sending: its requests that wait for replies are answered before
    its connection closes, unless it hung up altogether."""
    if not order.waiting:
        return
    async with trio.open_nursery() as nursery:

        async def watch_hangup() -> None:
            if await hung_up(stream):
                nursery.cancel_scope.cancel()

        nursery.start_soon(watch_hangup)
        await order.wait_answered()
        nursery.cancel_scope.cancel()


class _Ask:
    """One waiting request of a local app: it collects its replies as encoded JSON."""

    __slots__ = ("desk", "dropped", "entries", "held", "key", "max_replies", "order",
                 "owner", "req_id", "size")

    def __init__(self, desk: RequestDesk, owner: Hashable, order: ReplyOrder,
                 req_id: Scalar, max_replies: int) -> None:
        self.desk = desk
        self.owner = owner
        self.order = order
        self.held = order.hold()
        self.req_id = req_id
        self.max_replies = max_replies
        self.entries: list[bytes] = []
        self.size = 0
        self.dropped = 0  # replies that did not fit in the byte limits
        self.key = b""

    def reply(self, body: ReplyBody) -> bool:
        entry = _encode_entry(body)
        desk = self.desk
        if (self.size + len(entry) > desk.config.reply_bytes_per_request
                or desk.reply_bytes + len(entry) > desk.config.reply_bytes_total):
            self.dropped += 1
            desk.replies_dropped += 1
            return False
        self.entries.append(entry)
        self.size += len(entry)
        desk.reply_bytes += len(entry)
        return len(self.entries) >= self.max_replies

    def done(self) -> None:
        self.desk.forget(self)
        self.order.fill(self.held, encode_replies(self.req_id, self.entries, self.dropped))


class RequestDesk:
    """The ``request`` and ``reply`` operations of every connection of one server, and
    their limits: waiting requests per connection and in all, the bytes of the replies
    they collect."""

    def __init__(self, config: NodeConfig, backend: RequestBackend) -> None:
        self.config = config
        self.backend = backend
        self._asks: dict[Hashable, set[_Ask]] = {}
        self.waiting = 0  # requests of all connections waiting for replies
        self.reply_bytes = 0  # bytes of the replies they collected
        self.replies_dropped = 0  # replies that did not fit (``dropped`` in the answer)

    def request(self, owner: Hashable, order: ReplyOrder, req: RequestOp) -> None:
        """Send ``req`` for connection ``owner``; its answer will come through ``order``.
        Raises ``ApiError`` (bad_request, too_large, too_many_requests): nothing sent."""
        cfg = self.config
        topic = check_topic(req.topic, req.id)
        if not (0 < req.timeout <= cfg.request_timeout_max and math.isfinite(req.timeout)):
            raise ApiError("bad_request", "a request's timeout is greater than 0 and at most "
                           f"{cfg.request_timeout_max:g} seconds", req.id)
        if not 1 <= req.max_replies <= cfg.request_max_replies:
            raise ApiError("bad_request", f"max_replies is 1-{cfg.request_max_replies}", req.id)
        payload = publish_payload(req, cfg.max_payload - REQUEST_OVERHEAD)
        asks = self._asks.get(owner, set())
        if len(asks) >= cfg.client_requests:
            raise ApiError("too_many_requests", f"this connection already has "
                           f"{cfg.client_requests} requests waiting; wait for one", req.id)
        if self.waiting >= cfg.max_requests:
            raise ApiError("too_many_requests", f"the node already has {cfg.max_requests} "
                           "requests waiting; wait a moment and retry", req.id)
        ask = _Ask(self, owner, order, req.id, req.max_replies)
        self._asks.setdefault(owner, set()).add(ask)
        self.waiting += 1
        ask.key = self.backend.ask(topic, payload, req.timeout, req.max_replies, ask)

    def reply(self, req: ReplyOp) -> bytes:
        """Send a local app's reply; returns the reply line. Raises ``ApiError``
        (bad_request, too_large, request_gone)."""
        try:
            token = bytes.fromhex(req.reply_to)
            if len(token) != 32:
                raise ValueError
        except ValueError:
            raise ApiError("bad_request", '"reply_to" is the token of a request event '
                           "(64 hex digits)", req.id) from None
        if req.error is not None:
            if req.data is not None or req.data_b64 is not None:
                raise ApiError("bad_request", 'give "data", "data_b64" or "error", not two '
                               "of them", req.id)
            if not 1 <= len(req.error) <= MAX_ERROR:
                raise ApiError("bad_request", f'"error" is 1-{MAX_ERROR} characters', req.id)
            payload, error = b"", req.error
        else:
            payload, error = publish_payload(req, self.config.max_payload), ""
        problem = self.backend.send_reply(token, payload, error)
        if problem is not None:
            raise ApiError("request_gone", problem, req.id)
        return encode_reply(req.id, {})

    def forget(self, ask: _Ask) -> None:
        """``ask`` is answered (or its connection went): it no longer counts."""
        asks = self._asks.get(ask.owner)
        if asks is None or ask not in asks:
            return
        asks.discard(ask)
        if not asks:
            del self._asks[ask.owner]
        self.waiting -= 1
        self.reply_bytes -= ask.size

    def drop(self, owner: Hashable) -> None:
        """Connection ``owner`` ended: forget its waiting requests (no answers)."""
        for ask in list(self._asks.get(owner, ())):
            self.forget(ask)
            self.backend.cancel_request(ask.key)


class _Entry(msgspec.Struct, omit_defaults=True):
    """One reply in a request's answer."""

    from_: str = msgspec.field(name="from")
    name: str = ""
    data: str | None = None
    data_b64: bytes | None = None  # msgspec writes bytes as base64
    error: str | None = None


_encode = msgspec.json.Encoder().encode


def _encode_entry(body: ReplyBody) -> bytes:
    if body.error:
        return _encode(_Entry(body.replier.hex(), body.name, error=body.error))
    try:
        return _encode(_Entry(body.replier.hex(), body.name, data=body.data.decode("utf-8")))
    except UnicodeDecodeError:
        return _encode(_Entry(body.replier.hex(), body.name, data_b64=body.data))


def encode_replies(req_id: Scalar, entries: list[bytes], dropped: int = 0) -> bytes:
    """The answer to a request: ``{"id":…, "ok":true, "replies":[…]}``, with
    ``"dropped": N`` when N replies did not fit in the byte limits."""
    head = encode_reply(req_id, {})[:-2]  # without "}\n"
    tail = b',"dropped":%d}\n' % dropped if dropped else b"}\n"
    return head + b',"replies":[' + b",".join(entries) + b"]" + tail
