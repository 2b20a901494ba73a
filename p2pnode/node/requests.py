"""Request/reply for a node (docs/protocol.md, "Requests and replies").

- A local app's request goes out as a signed, unnumbered batch of its own (one
  ``wire.requests`` item), after what the node had queued to publish; the node's own
  subscribers get it too. Its replies are handed to the app's ``RequestSink`` until it
  has enough or its timeout passes (this module's timer task).
- A request from the mesh is checked (``RequestFilter`` refuses a replayed copy), its
  reverse path is remembered (``gossip.replies.ReplyPaths``), and it is handed to local
  apps with a ``reply_to`` token: the request's origin and message id.
- A reply of a local app is signed and sent on the path back (or handed to a local
  request); a reply from a peer is routed first, checked (signature, body) only if it is
  to go somewhere, then sent on or taken. A peer that sends a forged reply is
  disconnected, as for a forged batch.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import trio

from ..api.requests import RequestSink
from ..config import NodeConfig
from ..errors import RemoteProtocolError
from ..gossip.actions import Action, Disconnect, Send
from ..gossip.replies import Drop, ReplyPaths, RequestFilter, ToPeer, sign_reply, verify_reply
from ..gossip.router import Router
from ..gossip.signing import make_batch
from ..identity.keypair import NodeIdentity
from ..wire.messages import Batch, BatchBody, Gossip, Item, Reply
from ..wire.requests import (
    REQUEST_TOPIC,
    ReplyBody,
    RequestBody,
    decode_reply_body,
    decode_request,
    encode_request,
)

if TYPE_CHECKING:
    from .engine import Engine
    from .publisher import Publisher

#: Hands a request to local apps: the message, its reply token, its timeout (seconds).
ToApps = Callable[[Gossip, bytes, float], None]

#: Why a local app's reply is refused, by ``ReplyPaths.route``'s reason.
REFUSED = {
    "unknown": "no request with this reply_to is waiting on this node: its timeout "
               "passed, or it never came here",
    "duplicate": "this node already replied to that request (a reply_to is single-use)",
    "over_limit": "that request already has all the replies it asked for",
}


@dataclass
class RequestStats:
    """Counters of request/reply (``status`` section ``requests``)."""

    asked: int = 0  # requests sent by local apps
    delivered: int = 0  # requests from other nodes handed to local apps
    replayed: int = 0  # request copies dropped: already taken (a replay)
    bad: int = 0  # request items that did not decode
    replies_sent: int = 0  # replies of local apps
    replies_in: int = 0  # replies received from peers
    replies_taken: int = 0  # replies handed to requests of local apps
    replies_forwarded: int = 0  # replies sent on towards the node that asked
    replies_rejected: int = 0  # replies with a bad signature or body
    replies_dropped: Counter[str] = field(default_factory=Counter)  # by reason


class Requests:
    """A node's requests and replies.

    Args:
        config: the node's settings (the ``request_*`` limits, ``max_hops``, ``name``).
        identity: signs requests and replies.
        router: spreads requests like any batch.
        engine: carries out actions, delivers other messages, checks signatures.
        publisher: message ids, the node's run (``epoch``), and what it has queued.
        to_apps: hands a request to local apps.
    """

    def __init__(self, config: NodeConfig, identity: NodeIdentity, router: Router,
                 engine: Engine, publisher: Publisher, to_apps: ToApps) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.router = router
        self.engine = engine
        self.publisher = publisher
        self.to_apps = to_apps
        self.paths = ReplyPaths(config.request_paths, config.request_paths_per_peer)
        self.filter = RequestFilter(config.max_origins_per_peer)
        self.stats = RequestStats()
        self._pending: dict[bytes, tuple[float, RequestSink]] = {}
        self._deadlines: list[tuple[float, bytes]] = []
        self._scheduled = math.inf  # when the timer task wakes next
        self._wake = trio.Event()

    @property
    def pending(self) -> int:
        """Requests of local apps waiting for replies."""
        return len(self._pending)

    # -- asked here -------------------------------------------------------------------

    def ask(self, topic: str, data: bytes, timeout: float, max_replies: int,
            sink: RequestSink) -> bytes:
        """Send a request of a local app (the caller checked its arguments and limits).
        Its replies go to ``sink`` until it has enough or ``timeout`` passes (then
        ``sink.done()``). Returns the request's key (origin + message id)."""
        now = trio.current_time()
        ids = self.publisher.ids
        msg_id = ids.next()
        key = self.node_id + msg_id
        payload = encode_request(RequestBody(topic, max(1, math.ceil(timeout * 1000)),
                                             max_replies, data))
        self.publisher.flush()  # what the app published before goes first
        batch, body = make_batch(self.identity, ids.next(), None,
                                 [Item(msg_id, REQUEST_TOPIC, payload)],
                                 epoch=self.publisher.epoch, seq=0)
        self.paths.add(key, None, timeout, max_replies, now)
        self._pending[key] = (now + timeout, sink)
        heapq.heappush(self._deadlines, (now + timeout, key))
        self._schedule(now + timeout)
        self.stats.asked += 1
        self.to_apps(Gossip(id=msg_id, origin=self.node_id, topic=topic, data=data, hops=0),
                     key, timeout)
        if self.config.max_hops > 0:
            self.engine.apply(self.router.publish(batch, body, now))
            if self.router.has_announcements:
                self.engine.wake_flusher()
        return key

    def cancel(self, key: bytes) -> None:
        """Forget request ``key`` of a local app (its client went): its sink gets nothing
        more, and replies still coming are dropped."""
        if self._pending.pop(key, None) is not None:
            self.paths.remove(key)
        if len(self._deadlines) > 2 * len(self._pending) + 64:  # entries of cancelled ones
            self._deadlines = [(when, k) for k, (when, _) in self._pending.items()]
            heapq.heapify(self._deadlines)

    def finish_all(self) -> None:
        """Answer every waiting request now, with the replies it has (the node stops)."""
        for key in list(self._pending):
            self._finish(key)

    def _finish(self, key: bytes) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            entry[1].done()

    # -- serving: requests from the mesh, replies of local apps ---------------------------

    def on_batch(self, batch: Batch, body: BatchBody, from_peer: bytes | None) -> None:
        """An unnumbered batch from the mesh is delivered here: its request items are
        taken, its other items delivered as usual."""
        for item in body.items:
            if item.topic == REQUEST_TOPIC:
                self._take_request(batch, body, item, from_peer)
            else:
                self.engine.deliver(Gossip(id=item.id, origin=batch.origin, topic=item.topic,
                                           data=item.data, hops=batch.hops, to=body.to))

    def _take_request(self, batch: Batch, body: BatchBody, item: Item,
                      from_peer: bytes | None) -> None:
        try:
            req = decode_request(item.data)
        except RemoteProtocolError:
            self.stats.bad += 1
            return
        if from_peer is None or not self.filter.accept(
                batch.origin, body.epoch, int.from_bytes(item.id[8:], "big")):
            self.stats.replayed += 1
            return
        now = trio.current_time()
        timeout = min(req.timeout_ms / 1000, self.config.request_timeout_max)
        key = batch.origin + item.id
        self.paths.add(key, from_peer, timeout, min(req.max_replies,
                                                    self.config.request_max_replies), now)
        self._schedule(now + timeout)
        self.stats.delivered += 1
        self.to_apps(Gossip(id=item.id, origin=batch.origin, topic=req.topic, data=req.data,
                            hops=batch.hops, to=body.to), key, timeout)

    def reply(self, token: bytes, data: bytes, error: str) -> str | None:
        """A local app answers request ``token`` (its origin + message id) with ``data``,
        or fails with ``error``. Returns why it is refused (the request is not waiting
        here, or this node already answered it), or None: sent."""
        route = self.paths.route(token, self.node_id, None, trio.current_time())
        if isinstance(route, Drop):
            return REFUSED.get(route.reason, route.reason)
        body = ReplyBody(token[:16], token[16:], self.node_id, self.config.name, data, error)
        self.paths.commit(token, self.node_id)
        self.stats.replies_sent += 1
        if isinstance(route, ToPeer):
            self._send(route.peer, sign_reply(self.identity, body))
        else:
            self._take_reply(token, body)
        return None

    # -- replies from peers ---------------------------------------------------------------

    def on_reply(self, reply: Reply, from_peer: bytes, now: float, *,
                 authenticated: bool = False) -> list[Action]:
        """A reply from ``from_peer``: route it, check it, send it on or take it.
        Returns the actions to take (a Disconnect for a forged one).

        ``authenticated``: the link proves who ``from_peer`` is (TLS). A reply for a
        request asked here that comes straight from its replier is taken on the
        strength of the link (its body is checked, not its signature), as a batch
        straight from its origin is; one that goes on to another node is always
        checked first, since that node cannot trust this link."""
        stats = self.stats
        stats.replies_in += 1
        key = reply.origin + reply.request
        route = self.paths.route(key, reply.replier, from_peer, now)
        if isinstance(route, ToPeer) and reply.hops >= self.config.max_hops:
            route = Drop("hop_limited")
        if isinstance(route, Drop):
            stats.replies_dropped[route.reason] += 1
            return []
        try:
            if authenticated and reply.replier == from_peer and not isinstance(route, ToPeer):
                body = decode_reply_body(reply, self.config.max_payload)
            else:
                body = verify_reply(self.engine.verifier, reply, self.config.max_payload)
        except RemoteProtocolError as exc:
            stats.replies_rejected += 1
            return [Disconnect(from_peer, exc.code)] if exc.code == "bad_signature" else []
        self.paths.commit(key, reply.replier)
        if isinstance(route, ToPeer):
            stats.replies_forwarded += 1
            self._send(route.peer, msgspec.structs.replace(reply, hops=reply.hops + 1))
        else:
            self._take_reply(key, body)
        return []

    def _send(self, peer: bytes, reply: Reply) -> None:
        links = self.engine.links
        if links is None or peer not in links.links:
            self.stats.replies_dropped["link_down"] += 1
            return
        self.engine.apply([Send(peer, [reply])])

    def _take_reply(self, key: bytes, body: ReplyBody) -> None:
        entry = self._pending.get(key)
        if entry is None:
            self.stats.replies_dropped["late"] += 1
            return
        self.stats.replies_taken += 1
        if entry[1].reply(body):
            self._finish(key)

    # -- time ---------------------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        if when < self._scheduled:
            self._scheduled = when
            self._wake.set()

    async def run(self) -> None:
        """Answer the requests of local apps whose timeout passed, and forget the reverse
        paths whose time is up. Runs until cancelled."""
        while True:
            now = trio.current_time()
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now:
                when, key = heapq.heappop(deadlines)
                entry = self._pending.get(key)
                if entry is not None and entry[0] == when:
                    self._finish(key)
            self.paths.expire(now)
            nexts = [deadlines[0][0]] if deadlines else []
            path_expiry = self.paths.next_expiry()
            if path_expiry is not None:
                nexts.append(path_expiry)
            self._scheduled = min(nexts, default=math.inf)
            with trio.move_on_at(self._scheduled):
                await self._wake.wait()
            self._wake = trio.Event()
