"""Publishing: what local apps publish is delivered here at once, collected into signed
batches (one signature per batch: docs/security.md), numbered in this node's run, and
handed to the router; publishers wait while a link is slow (backpressure).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio

from ..config import NodeConfig
from ..gossip.router import Router
from ..gossip.signing import make_batch
from ..identity.keypair import NodeIdentity
from ..ids import MsgIdFactory
from ..net.link import PeerLink
from ..net.manager import LinkManager
from ..wire.messages import Item
from .engine import Engine

if TYPE_CHECKING:
    from .retaining import Retaining

MAX_STREAMS = 65_536  # topics whose last batch an origin in interest mode remembers


class Publisher:
    """This node's own messages, on their way into signed batches.

    Args:
        config: the node's settings (``max_frame``, ``max_hops``, ``publish_wait_max``).
        identity: the key that signs the batches.
        router: takes each batch (``Router.publish``).
        engine: delivers locally, carries out the router's actions, runs the flusher.
    """

    def __init__(self, config: NodeConfig, identity: NodeIdentity, router: Router,
                 engine: Engine) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.router = router
        self.engine = engine
        #: This run of the node, in the numbering of its batches (docs/protocol.md).
        self.epoch = time.time_ns() // 1000
        self.seq = 0
        self.ids = MsgIdFactory()
        #: Queued messages per target (``to``), or per topic (a str) for the routed
        #: batches of interest mode (docs/interest.md).
        self._pending: dict[bytes | str | None, list[Item]] = {}
        self.routing = config.gossip == "interest"
        #: Interest mode: per stream, the seq of its last batch (``BatchBody.tprev``):
        #: per topic for routed batches (the most recent topics), None for the rest.
        self._tprev: OrderedDict[str | None, int] = OrderedDict()
        self._retained: list[Item] = []  # retained messages: a batch of their own
        self._pending_bytes = 0
        self.published = 0  # messages published by local apps
        #: Stamps and keeps the batches of retained messages published here.
        self.retaining: Retaining | None = None

    def publish(self, topic: str, payload: bytes, to: bytes | None = None, *,
                defer_flush: bool = False, retain: bool = False) -> tuple[str, int]:
        """Publish a message from a local app: deliver it to local subscribers now, and
        queue it for the next signed batch (sent when the publishing task yields, or
        when the batch is full; with ``defer_flush`` only when the caller flushes).
        ``retain``: it becomes the retained message of its topic (``to`` must be None).
        Returns (msg id hex, number of peers it goes to)."""
        msg_id = self.ids.next()
        self.published += 1
        if to is None or to == self.node_id:
            self.engine.deliver_new(msg_id, topic, payload, to)
        retain = retain and to is None and self.retaining is not None
        if (to == self.node_id or self.config.max_hops == 0) and not retain:
            return msg_id.hex(), 0
        self.queue(to, Item(msg_id, topic, payload), wake=not defer_flush, retain=retain)
        return msg_id.hex(), self.router.peer_count

    def queue(self, to: bytes | None, item: Item, *, wake: bool = True,
              retain: bool = False) -> None:
        """Add ``item`` to the next signed batch for ``to``; ``wake``: have the flusher
        task send it once this task yields (the API flushes itself, in
        ``wait_links_writable``, and saves that wake-up). Retained messages (``retain``)
        go in batches of their own; a switch between them and ordinary messages to
        everyone starts a new batch, so that the origin's order holds."""
        size = len(item.data) + len(item.topic) * 4 + 64
        key: bytes | str | None = to
        if self.routing and to is None and not retain and not item.topic.startswith("$"):
            key = item.topic
        switch = (None in self._pending or any(isinstance(k, str) for k in self._pending)
                  if retain else (to is None and bool(self._retained)))
        if switch or self._pending_bytes + size > self.config.max_frame // 2:
            self.flush()
        if retain:
            self._retained.append(item)
        else:
            self._pending.setdefault(key, []).append(item)
        self._pending_bytes += size
        if wake:
            self.engine.wake_flusher()

    def flush(self) -> None:
        """Sign the queued messages (one batch per target) and send them."""
        if not self._pending and not self._retained:
            return
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        retained, self._retained = self._retained, []
        now = trio.current_time()
        for key, items in pending.items():
            self.seq += 1
            to = None if isinstance(key, str) else key
            batch, body = make_batch(self.identity, self.ids.next(), to, items,
                                     epoch=self.epoch, seq=self.seq,
                                     tprev=self._next_tprev(key))
            # Sent first (a lone batch is written at once: net.direct), kept after.
            self.engine.apply(self.router.spread_new(batch, now, body))
            self.router.keep_new(batch, body, now)
        if retained and self.retaining is not None:
            self.seq += 1
            stamp = self.retaining.stamp([item.topic for item in retained])
            batch, body = make_batch(self.identity, self.ids.next(), None, retained,
                                     epoch=self.epoch, seq=self.seq, retain=stamp,
                                     tprev=self._next_tprev(None))
            self.retaining.keep(batch, body)
            if self.config.max_hops > 0:
                self.engine.apply(self.router.publish(batch, body, now))
        if self.router.has_announcements:
            self.engine.wake_flusher()  # the IHaves for lazy peers go once this task yields

    def _next_tprev(self, key: bytes | str | None) -> int | None:
        """In interest mode, the ``tprev`` of the batch numbered ``self.seq`` whose
        pending key is ``key`` (a topic: a routed batch; else the broadcast stream), and
        note it as its stream's last; None in the other modes. The most recent 65,536
        topics are remembered: a forgotten one starts again from 0."""
        if not self.routing:
            return None
        stream = key if isinstance(key, str) else None
        tprev = self._tprev.pop(stream, 0)
        self._tprev[stream] = self.seq
        if len(self._tprev) > MAX_STREAMS:
            self._tprev.popitem(last=False)
        return tprev

    async def wait_links_writable(self, links: LinkManager | None) -> None:
        """Backpressure for local publishers: flush, then wait while a link's queue is
        over half full, at most ``publish_wait_max`` per link. A link that stays full is
        marked lagging and not waited for (it drops, and is closed if it stays stuck:
        docs/failures.md)."""
        self.flush()
        if links is None:
            return
        for link in list(links.links.values()):
            half = link.out.limit // 2
            if link.lagging:
                link.lagging = len(link.out) > half
            elif len(link.out) > half:
                link.lagging = not await self._wait_moving(link)

    async def _wait_moving(self, link: PeerLink) -> bool:
        """Wait until ``link``'s queue is at most half full, while its writer makes progress
        (at most ``publish_wait_max``). False if it made none for a fifth of that."""
        total = self.config.publish_wait_max
        step = total / 5
        deadline = trio.current_time() + total
        while trio.current_time() < deadline:
            sent = link.out.sent_bytes
            with trio.move_on_after(step):
                await link.out.wait_writable()
                return True
            if link.out.sent_bytes == sent:
                return False
        return False
