"""A node's retained messages: the store (``gossip.retained``) fed by the gossip path and
by local publishes, the sync with peers when links open (``gossip.retained_sync``), its
timer, and what local subscribers get (docs/api.md, "Retained messages").

The engine hands this part the retained batches it delivers (``keep``) and the sync
messages that links bring (``on_message``, registered in ``Engine.handlers``); it
carries out the actions returned. Stamps, tombstone ages and the skew limit use the
Unix clock (``wall``); the sync's timeouts use trio's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from ..config import NodeConfig
from ..errors import RemoteProtocolError
from ..gossip.actions import Action
from ..gossip.retained import RetainedEntry, RetainedReplay, RetainedStore
from ..gossip.retained_sync import RetainedSync
from ..gossip.router import Router
from ..gossip.signing import Verifier
from ..net.link import PeerLink
from ..wire.messages import (
    Batch,
    BatchBody,
    GossipMessage,
    Retained,
    RetainedDigest,
    RetainedWant,
)
from ..wire.topics import TopicFilter, is_pattern
from .engine import Engine

#: The sync messages this part handles (``Engine.handlers``).
SYNC_TYPES = (RetainedDigest, RetainedWant, Retained)


class Retaining:
    """The retained messages of one node.

    Args:
        config: the limits (``retained_*``) and ``max_frame``.
        router: its history says which delivered batches had their signature checked.
        verifier: checks the batches that were not (and every batch the sync brings).
        wall: the Unix clock (tests may pass another).
    """

    def __init__(self, config: NodeConfig, router: Router, verifier: Verifier, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.node_id = router.node_id
        self.router = router
        self.verify = verifier.verify
        self.wall = wall
        self.store = RetainedStore(config.retained_max_topics, config.retained_max_bytes,
                                   config.retained_tombstone_age, config.retained_max_skew)
        self.sync = RetainedSync(self.store, chunk_bytes=config.max_frame // 2)
        self._engine: Engine | None = None
        self._wake = trio.Event()
        self.rejected = 0  # retained batches from the gossip path whose signature failed
        self.wants_busy = 0  # RetainedWants not answered: that link's queue was over half full

    def attach(self, engine: Engine) -> None:
        """Take the sync messages, the delivered retained batches and the link changes
        of ``engine``, and carry out actions through it."""
        self._engine = engine
        for kind in SYNC_TYPES:
            engine.handlers[kind] = self.on_message
        engine.keep_retained = self.keep
        engine.on_link_change.append(self.link_changed)

    # -- the gossip path -------------------------------------------------------------

    def keep(self, batch: Batch, body: BatchBody) -> None:
        """A batch of retained messages was delivered here (or published here): keep what
        is newer. Its signature is checked first unless the router did already."""
        if not self.store.newer_in(batch, body):
            self.store.stats.stale += len(body.items)
            return
        if batch.origin != self.node_id and not self._verified(batch):
            try:
                self.verify(batch)
            except RemoteProtocolError:
                self.rejected += 1
                return
        self.store.offer(batch, body, self.wall())

    def _verified(self, batch: Batch) -> bool:
        entry = self.router.history.get(batch.origin + batch.id)
        return entry is not None and entry.verified

    def on_message(self, msg: GossipMessage, peer: bytes, now: float) -> list[Action]:
        """A sync message from ``peer``: the actions to take. Retained messages it brings
        that are newer than the ones held go to local subscribers, marked retained."""
        if type(msg) is RetainedWant and self._busy(peer):
            self.wants_busy += 1
            return []
        actions, kept = self.sync.on_message(msg, peer, now, self.wall(), self.verify)
        if kept:
            self._hand_out(kept)
        self._wake.set()
        return actions

    def _busy(self, peer: bytes) -> bool:
        links = self._engine.links if self._engine is not None else None
        link = links.links.get(peer) if links is not None else None
        return link is None or len(link.out) > link.out.limit // 2

    def _hand_out(self, kept: list[RetainedEntry]) -> None:
        assert self._engine is not None
        replay = RetainedReplay(kept)
        for msg in replay.step(1 << 62):
            self._engine.to_apps(msg)

    def link_changed(self, link: PeerLink, up: bool) -> None:
        now = trio.current_time()
        if up:
            actions = self.sync.peer_up(link.peer_id, now, self.wall())
        else:
            actions = self.sync.peer_down(link.peer_id, now)
        if actions and self._engine is not None:
            self._engine.apply(actions)
        self._wake.set()

    # -- local apps ------------------------------------------------------------------

    def replay(self, topics: list[str]) -> RetainedReplay:
        """The retained messages a new subscription to ``topics`` gets first (a snapshot,
        handed out a step at a time)."""
        self.store.expire(self.wall())
        return RetainedReplay(self._matching(topics))

    def has(self, topics: list[str]) -> bool:
        """Whether a subscription to ``topics`` gets any retained message."""
        return bool(self._matching(topics))

    def _matching(self, topics: list[str]) -> list[RetainedEntry]:
        """The retained messages of ``topics``: names, or patterns (``+``, ``#``)."""
        if any(is_pattern(t) for t in topics):
            return self.store.matching(topics, TopicFilter(topics).__contains__)
        return self.store.matching(topics)

    def refusal(self, topic: str, size: int) -> str | None:
        """Why a local retained publish would not be kept (None: it would)."""
        self.store.expire(self.wall())
        return self.store.refusal(topic, size)

    def stamp(self, topics: list[str]) -> int:
        """The stamp of a batch of retained messages published here."""
        return self.store.next_stamp(topics, self.wall())

    # -- the timer -------------------------------------------------------------------

    async def run(self) -> None:
        """Ask elsewhere what a peer did not answer in time, while anything is asked."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while (deadline := self.sync.next_deadline()) is not None:
                await trio.sleep_until(deadline)
                actions = self.sync.tick(trio.current_time())
                if actions and self._engine is not None:
                    self._engine.apply(actions)

