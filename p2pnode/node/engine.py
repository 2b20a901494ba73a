"""The node's gossip path: what links bring goes through the rate limits into the router,
and the router's actions go out to links, to local apps and to the mesh view.

This is the hot path (docs/architecture.md): ``on_gossip`` handles every message of
one read synchronously, and whatever it makes the node send is queued on the links
without an await. Two tasks run beside it: the flusher, which sends what local apps
published and the router's lazy announcements once the tasks that made them yield,
and the timers (grafts of announced batches that did not come, held batches).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Protocol

import trio

from ..config import NodeConfig
from ..gossip.reroute import reroute
from ..gossip.router import (
    Action,
    Deliver,
    Disconnect,
    Forward,
    Router,
    RouterConfig,
    Send,
    gossip_mode,
)
from ..gossip.signing import Verifier
from ..mesh.linklist import MESH_TOPIC
from ..mesh.view import MeshView
from ..net.link import PeerLink
from ..net.manager import LinkManager
from ..wire.messages import (
    MEMBER_TYPES,
    Batch,
    BatchBody,
    Digest,
    Fetch,
    Gossip,
    GossipMessage,
    Graft,
    IHave,
    Item,
    Prune,
    Reply,
    Retained,
    RetainedDigest,
    RetainedWant,
    encode_message,
)
from ..wire.requests import REQUEST_TOPIC

#: Takes a gossip message of a kind the router does not handle: ``(msg, peer, now)``
#: to the actions to take.
Handler = Callable[[GossipMessage, bytes, float], list[Action]]

log = logging.getLogger("p2pnode.node")
#: Seconds between two warnings that one link sends over its rate limit.
RATE_LOG_INTERVAL = 60.0


class OnReply(Protocol):
    """Takes a reply from a peer (``Requests.on_reply``); returns actions."""

    def __call__(self, reply: Reply, from_peer: bytes, now: float, *,
                 authenticated: bool = False) -> list[Action]: ...


class Engine:
    """Moves gossip between the links, the router and local apps.

    Args:
        config: the node's settings.
        router: the node's gossip router (its only caller).
        mesh: the mesh view, fed with the link lists of other nodes.
        to_apps: hands a message to local apps (the API server and any callbacks).
    """

    def __init__(self, config: NodeConfig, router: Router, mesh: MeshView,
                 to_apps: Callable[[Gossip], None]) -> None:
        self.config = config
        self.router = router
        self.node_id = router.node_id
        self.mesh = mesh
        self.to_apps = to_apps
        #: Hands the messages of one batch (origin, hops, to, items) to local apps at
        #: once; None: ``to_apps`` for each.
        self.items_to_apps: Callable[[bytes, int, bytes | None, list[Item]], None] | None = None
        #: Whether a local app takes messages of a topic (None: assume so).
        self.apps_want: Callable[[str], bool] | None = None
        #: Callbacks given every message delivered here (the node's ``on_deliver``):
        #: while there is one, each message published here is built for it.
        self.listeners: list[Callable[[Gossip], None]] = []
        self.verifier = Verifier(config.max_payload)
        self.links: LinkManager | None = None  # set when the node runs
        self.on_link_change: list[Callable[[PeerLink, bool], None]] = []
        #: The parts that take the gossip messages the router does not, by type.
        self.handlers: dict[type, Handler] = {}
        #: Given each delivered batch of retained messages (``node.retaining``).
        self.keep_retained: Callable[[Batch, BatchBody], None] | None = None
        self._flush_wake = trio.Event()
        self._timer_wake = trio.Event()
        self.rate_limited = 0  # batches dropped because a peer sent too fast
        self.delivered = 0  # messages handed to local apps (their own included)
        #: Request/reply (``node.requests``): takes the unnumbered batches delivered here
        #: (requests travel in them), and the replies peers send.
        self.on_request: Callable[[Batch, BatchBody, bytes | None], None] | None = None
        self.on_reply: OnReply | None = None
        #: The API's hooks around each read of a link: one called as the read begins
        #: (``ApiServer.hold_wakes``), one once it is handled, and after each timer
        #: turn (it writes the events queued: ``ApiServer.send_touched``).
        self.read_hooks: tuple[Callable[[], None], Callable[[], None]] | None = None
        #: The peer whose messages are being handled (None: none, or a local publish).
        self.from_peer: bytes | None = None

    # -- the hot path ----------------------------------------------------------------

    def on_gossip(self, link: PeerLink, msgs: list[GossipMessage]) -> None:
        """The messages of one read from ``link``: charge them to its rate limits, and
        take the router's actions for each, synchronously."""
        now = trio.current_time()
        self.from_peer = link.peer_id
        if self.read_hooks is not None:
            self.read_hooks[0]()
        try:
            self._take(link, msgs, now)
        finally:  # the events queued so far go out even if something failed
            self.from_peer = None
            self.after_gossip()

    def _take(self, link: PeerLink, msgs: list[GossipMessage], now: float) -> None:
        """``on_gossip``'s work, message by message."""
        on_message = self.router.on_message
        verify = self.verifier.verify
        peer = link.peer_id
        bytes_bucket, batch_bucket = link.bytes_bucket, link.batch_bucket
        authenticated = link.authenticated
        handlers = self.handlers
        for msg in msgs:
            kind = type(msg)
            if batch_bucket is not None and bytes_bucket is not None and not (
                batch_bucket.take(cost(msg), now)
                and ((kind is not Batch and kind is not Reply)
                     or bytes_bucket.take(len(msg.body), now))  # type: ignore[union-attr]
            ):
                link.rate_limited += 1
                self.rate_limited += 1
                if now - link.limit_logged_at >= RATE_LOG_INTERVAL:
                    self._log_rate_limited(link, now)
                continue
            if kind is Reply:
                actions = self.on_reply(msg, peer, now,  # type: ignore[arg-type]
                                        authenticated=authenticated) if self.on_reply else []
            elif (handler := handlers.get(kind)) is not None:
                actions = handler(msg, peer, now)
            else:
                actions = on_message(msg, peer, now, verify, authenticated=authenticated)
            if actions:
                self.apply(actions)
                if link.close_reason:  # a Disconnect: the rest of its frames are not read
                    break

    def _log_rate_limited(self, link: PeerLink, now: float) -> None:
        """Say (at most every ``RATE_LOG_INTERVAL`` per link) that a peer sends too fast."""
        link.limit_logged_at = now
        log.warning("link %s (%s) sends over its rate limit (%g batches/s, %g bytes/s): "
                    "dropping what is over it (%d batches so far)", link.peer.name,
                    link.peer_hex[:8], link.batch_bucket.rate if link.batch_bucket else 0,
                    link.bytes_bucket.rate if link.bytes_bucket else 0, link.rate_limited,
                    extra=link.log_fields(reason="rate_limited", dropped=link.rate_limited))

    def after_gossip(self) -> None:
        """Announcements go out when this task yields; timers start when needed."""
        if self.router.has_announcements:
            self._flush_wake.set()
        self.wake_timers()
        if self.read_hooks is not None:
            self.read_hooks[1]()

    def wake_timers(self) -> None:
        """Have the timer task run if the router has timers (after a change it cannot
        see: the graph of interest routing, ``gossip.tails``)."""
        if not self._timer_wake.is_set() and self.router.has_timers:
            self._timer_wake.set()

    def deliver(self, msg: Gossip) -> None:
        """Hand ``msg`` to local apps; a link list (``$mesh``) goes to the mesh view."""
        if msg.topic == MESH_TOPIC:
            if msg.origin != self.node_id:
                self.mesh.update(msg.origin, msg.data, trio.current_time())
            return
        if msg.topic == REQUEST_TOPIC:
            return  # a request item in a numbered batch: requests travel unnumbered
        self.delivered += 1
        self.to_apps(msg)

    def deliver_new(self, msg_id: bytes, topic: str, payload: bytes, to: bytes | None) -> None:
        """``deliver`` of a message published here (an app's topic), counted but not
        built when no local app takes its topic."""
        if (self.apps_want is not None and not self.listeners and not self.apps_want(topic)
                and topic[:1] != "$"):
            self.delivered += 1
            return
        self.deliver(Gossip(id=msg_id, origin=self.node_id, topic=topic, data=payload,
                            hops=0, to=to))

    def deliver_batch(self, batch: Batch, body: BatchBody) -> None:
        """``deliver`` each message of a numbered batch; those for apps in one call of
        ``items_to_apps`` (link lists and request items are not for apps)."""
        items = body.items
        plain = [item for item in items if item.topic != MESH_TOPIC
                 and item.topic != REQUEST_TOPIC] if self.items_to_apps is not None else []
        if len(plain) != len(items):
            for item in items:
                if not plain or item.topic == MESH_TOPIC or item.topic == REQUEST_TOPIC:
                    self.deliver(Gossip(id=item.id, origin=batch.origin, topic=item.topic,
                                        data=item.data, hops=batch.hops, to=body.to))
        if plain and self.items_to_apps is not None:
            self.delivered += len(plain)
            self.items_to_apps(batch.origin, batch.hops, body.to, plain)

    def apply(self, actions: list[Action]) -> None:
        """Carry out the router's actions."""
        for action in actions:
            if type(action) is Deliver:
                batch, body = action.batch, action.body
                if not body.seq and self.on_request is not None:
                    # Unnumbered: requests travel in such batches. A peer's one is
                    # delivered as it comes, so it came from the link being read.
                    self.on_request(batch, body, self.from_peer)
                else:
                    self.deliver_batch(batch, body)
                if body.retain and self.keep_retained is not None:
                    self.keep_retained(batch, body)
            elif type(action) is Forward:
                self._send(action.peers, encode_message(action.batch))
            elif type(action) is Send:
                for msg in action.msgs:
                    self._send((action.peer,), encode_message(msg))
            else:
                assert type(action) is Disconnect
                self._disconnect(action)

    def _send(self, peers: tuple[bytes, ...], frame: bytes) -> None:
        assert self.links is not None
        links = self.links.links
        for peer in peers:
            link = links.get(peer)
            if link is not None and not link.send(frame):
                self.links.stats.queue_drops += 1

    def _disconnect(self, action: Disconnect) -> None:
        assert self.links is not None
        link = self.links.links.get(action.peer)
        if link is not None:
            log.warning("link %s (%s) sent a forged batch (%s); closing it",
                        link.peer.name, link.peer_hex[:8], action.reason,
                        extra=link.log_fields(reason=action.reason))
            link.abort(action.reason)

    def link_changed(self, link: PeerLink, up: bool) -> None:
        """A link opened or closed (the link manager's callback)."""
        if up:
            self.apply(self.router.peer_up(link.peer_id, trio.current_time()))
        else:
            self.router.peer_down(link.peer_id)
        for callback in self.on_link_change:  # the graph of interest routing among them
            callback(link, up)
        if not up and trio.current_effective_deadline() != -math.inf:
            # Routed batches pushed into the broken link: again, by the new trees (not
            # when this node is stopping: every link breaks then).
            self.apply(reroute(self.router, link.peer_id, trio.current_time()))
        self.wake_timers()  # the graph changed: the streams' last batches (``tails``)

    # -- the tasks --------------------------------------------------------------------

    def wake_flusher(self) -> None:
        """Have the flusher run once the calling task yields."""
        self._flush_wake.set()

    async def run_flusher(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` (sign and send what local apps published) and send the lazy
        announcements, each time ``wake_flusher`` was called, once its caller yields."""
        while True:
            await self._flush_wake.wait()
            self._flush_wake = trio.Event()
            flush()
            self.apply(self.router.take_announcements())

    async def run_timers(self) -> None:
        """Run the router's timers (grafts, held batches) while it has any."""
        step = min(self.config.graft_timeout, self.config.order_hold) / 4
        while True:
            await self._timer_wake.wait()
            while (deadline := self.router.next_deadline()) is not None:
                # Wake at least every ``step``: a new, earlier deadline may have come up.
                await trio.sleep_until(min(deadline, trio.current_time() + step))
                self.apply(self.router.tick(trio.current_time()))
                self.after_gossip()
            self._timer_wake = trio.Event()


def cost(msg: GossipMessage) -> int:
    """What a gossip message costs against its link's batch-rate limit: a batch 1; a
    Graft 1 plus one per key (each can make this node send a whole batch); IHave,
    Prune, Digest and the retained sync's messages 1 plus one per 16 entries (small
    entries, small work; a node asks for retained messages a bounded amount at a time,
    and answers a ``RetainedWant`` only while the link's queue is under half full).
    Member frames cost nothing here: they have their own limit (``member_rate``)."""
    if type(msg) is Batch:
        return 1
    if type(msg) is Graft:
        return 1 + len(msg.keys) + len(msg.origins) // 16
    if type(msg) is IHave:
        return 1 + len(msg.batches) // 16
    if type(msg) is Prune:
        return 1 + len(msg.origins) // 16
    if type(msg) is Reply:
        return 1
    if type(msg) is Digest:
        return 1 + len(msg.entries) // 16
    if type(msg) is RetainedDigest:
        return 1 + len(msg.keys) // 16
    if type(msg) is RetainedWant:
        return 1 + len(msg.topics) // 16
    if type(msg) in MEMBER_TYPES:
        return 0  # member frames have their own limit (node.membership, member_rate)
    if type(msg) is Fetch:
        return 1 + len(msg.seqs)  # each number can make this node send a whole batch
    assert type(msg) is Retained
    return 1 + len(msg.batches) // 16


def router_config(config: NodeConfig) -> RouterConfig:
    """The router's settings, from the node's."""
    return RouterConfig(
        mode=gossip_mode(config.gossip), max_hops=config.max_hops,
        seen_max_entries=config.seen_max_entries, seen_ttl=config.seen_ttl,
        graft_timeout=config.graft_timeout, optimize_hops=config.optimize_hops,
        order_hold=config.order_hold, history_batches=config.history_batches,
        history_bytes=config.history_bytes, history_age=config.history_age, seed=config.seed,
        digest_bytes=config.max_frame - 4096,  # a Digest must fit in a frame
        max_runs=config.max_origins, max_runs_per_peer=config.max_origins_per_peer,
        new_origins_per_s=config.new_origins_per_s,
        new_origins_burst=min(1024.0, config.max_origins_per_peer),
    )
