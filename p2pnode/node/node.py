"""A node: one nursery that owns the listener, the links, the dialers and the local API.

``Node.run`` is a trio service (``await nursery.start(node.run)``); ``open_node``
wraps it as an async context manager. ``Node.stop`` leaves gracefully: every
peer is told (``Bye``), so it drops the link at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import PROTOCOL_VERSION
from ..api.server import ApiServer
from ..api.status import NodeStatus
from ..config.settings import NodeConfig, format_hostport
from ..errors import ConfigError, P2PError, single_error
from ..gossip.replay import Replay
from ..gossip.router import Action, Deliver, Disconnect, Forward, Router, RouterConfig, Send
from ..gossip.signing import Verifier, make_batch
from ..identity.datadir import DataDirLock, prepare_data_dir
from ..identity.keypair import NodeIdentity
from ..identity.keys import NetworkKey, load_or_create_identity
from ..ids import MsgIdFactory, id_to_hex, parse_id
from ..mesh.linklist import MESH_TOPIC, encode_link_list
from ..mesh.view import MeshView
from ..net.link import PeerLink
from ..net.manager import LinkManager
from ..net.tls import TlsTransport
from ..net.transport import TcpTransport, Transport
from ..wire.messages import (
    Batch,
    Bye,
    Digest,
    Gossip,
    GossipMessage,
    Graft,
    Hello,
    IHave,
    Item,
    Prune,
    encode_message,
)
from .status import peers_info, status_info

if TYPE_CHECKING:
    from ..discovery.mdns import DiscoveredPeer, MdnsDiscovery

log = logging.getLogger("p2pnode.node")


class Node:
    """One p2pnode.

    Args:
        config: settings and limits.
        transport: how to reach peers (TCP unless given; tests pass a memory one).
        identity: use this key pair instead of the one stored in ``config.data_dir``
            (tests and simulations; then the data directory is not touched).
        api: serve the local API on ``config.socket_path`` (tests may turn it off).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        transport: Transport | None = None,
        identity: NodeIdentity | None = None,
        api: bool = True,
    ) -> None:
        self.config = config
        self._lock: DataDirLock | None = None
        if identity is None:
            prepare_data_dir(config.data_dir)
            self._lock = DataDirLock(config.data_dir)
            identity = load_or_create_identity(config.data_dir)
        self.identity = identity
        self.node_id = node_id = identity.node_id
        self.node_hex = id_to_hex(node_id)
        self.network = (NetworkKey.load(config.network_key) if config.network_key
                        else NetworkKey.open())
        #: The network tag in handshakes and mDNS records (a hash, never the key).
        self.network_tag = self.network.tag
        if transport is None:
            transport = TcpTransport(config.max_conns_per_ip) if config.insecure else (
                TlsTransport(identity, self.network, config.handshake_timeout,
                             config.max_pending_handshakes, config.max_conns_per_ip))
        self.transport: Transport = transport
        self.router = Router(node_id, router_config(config))
        #: This run of the node, in the numbering of its batches (docs/protocol.md).
        self.epoch = time.time_ns() // 1000
        self._seq = 0
        self._timer_wake = trio.Event()
        self.mesh = MeshView(config.mesh_max_nodes, 3 * config.mesh_interval)
        self._mesh_changed = trio.Event()
        self._mesh_stamp = 0
        self.api = ApiServer(config, self) if api else None
        self.on_deliver: list[Callable[[Gossip], None]] = []
        self.listen_addr: tuple[str, int] | None = None
        self.links: LinkManager | None = None
        self._ids = MsgIdFactory()
        self.verifier = Verifier(config.max_payload)
        self._pending: dict[bytes | None, list[Item]] = {}
        self._pending_bytes = 0
        self._flush_wake = trio.Event()
        self._ready = trio.Event()
        self._started_at = 0.0
        self._scope: trio.CancelScope | None = None
        self.discovery: MdnsDiscovery | None = None
        self.discovered_ignored = 0  # discovered nodes of another version or network
        self.rate_limited = 0  # batches dropped because a peer sent too fast
        self.published = 0  # messages published by local apps
        self.delivered = 0  # messages handed to local apps (their own included)

    # -- the service -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled or ``stop()``; ``started`` once it listens and
        serves its socket. Raises ``SocketInUse``, ``OSError`` (a port in use),
        ``ConfigError`` (the data directory is in use by another node; ``UnsafePath``:
        the private socket directory is not safe to use)."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                cfg = self.config
                self.listen_addr = await nursery.start(
                    self.transport.listen, cfg.listen_host, cfg.listen_port, self._inbound
                )
                self.links = LinkManager(
                    cfg, self._hello(), self.transport, self._on_gossip, self._on_link_change
                )
                self._started_at = trio.current_time()
                await nursery.start(self.links.run)
                nursery.start_soon(self._run_flusher)
                nursery.start_soon(self._run_timers)
                if cfg.mesh_interval > 0:
                    nursery.start_soon(self._run_mesh_announcer)
                self._ready.set()
                if self.api is not None:
                    await nursery.start(self.api.run)
                for host, port in cfg.peers:
                    nursery.start_soon(self.links.keep_dialling, host, port)
                if cfg.mdns and self._mdns_possible():
                    await nursery.start(self._make_discovery().run)
                log.info("node %s (%s) listening on %s", cfg.name, self.node_hex,
                         self.listen_str)
                task_status.started(self)
        except BaseExceptionGroup as group:
            # A failure to start (socket in use, port taken) is raised as itself.
            leaf = single_error(group)
            if isinstance(leaf, P2PError | OSError):
                raise leaf from None
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _mdns_possible(self) -> bool:
        """False (with a warning) when no interface suits mDNS and none was named.
        A named interface that does not exist is an error (``ConfigError``)."""
        from ..discovery.interfaces import choose_interfaces

        try:
            choose_interfaces(self.config.mdns_interfaces)
        except ConfigError as exc:
            if self.config.mdns_interfaces:
                raise
            log.warning("mDNS discovery is off: %s", exc)
            return False
        return True

    def _make_discovery(self) -> MdnsDiscovery:
        from ..discovery.mdns import MdnsDiscovery

        assert self.listen_addr is not None
        self.discovery = MdnsDiscovery(
            node_id=self.node_hex, name=self.config.name, port=self.listen_addr[1],
            version=PROTOCOL_VERSION, network=self.network_tag,
            interfaces=self.config.mdns_interfaces, advertise=self.config.advertise,
            on_found=self._on_found, on_lost=self._on_lost,
        )
        return self.discovery

    def _on_found(self, peer: DiscoveredPeer) -> None:
        if peer.version != PROTOCOL_VERSION or peer.network != self.network_tag:
            self.discovered_ignored += 1
            return
        assert self.links is not None
        self.links.peer_discovered(parse_id(peer.node_id), peer.addrs)

    def _on_lost(self, node_hex: str) -> None:
        assert self.links is not None
        self.links.peer_lost(parse_id(node_hex))

    def _hello(self) -> Hello:
        assert self.listen_addr is not None
        host = self.config.advertise or self.listen_addr[0]
        return Hello(
            version=PROTOCOL_VERSION, node_id=self.node_id, name=self.config.name,
            listen=format_hostport(host, self.listen_addr[1]), network=self.network_tag,
        )

    async def _inbound(self, stream: trio.abc.Stream, addr: str) -> None:
        await self._ready.wait()
        assert self.links is not None
        await self.links.handle_inbound(stream, addr)

    async def stop(self, grace: float = 1.0) -> None:
        """Leave: say Bye on every link, wait up to ``grace`` seconds for them to
        flush, then cancel everything. Safe to call more than once."""
        if self.links is not None:
            bye = encode_message(Bye("shutdown"))
            self.links.close_all(lambda _link: bye)
            with trio.move_on_after(grace):
                for link in list(self.links.links.values()):
                    await link.closed.wait()
        if self._scope is not None:
            self._scope.cancel()

    def kill(self) -> None:
        """Stop at once, without telling peers (as a crash would): for tests and simulations."""
        if self._scope is not None:
            self._scope.cancel()

    @property
    def listen_str(self) -> str:
        """The address the node really listens on, as ``HOST:PORT``."""
        return format_hostport(*self.listen_addr) if self.listen_addr else ""

    # -- the hot path ----------------------------------------------------------------

    def _on_gossip(self, link: PeerLink, msgs: list[GossipMessage]) -> None:
        now = trio.current_time()
        router = self.router
        on_message = router.on_message
        verify = self.verifier.verify
        peer = link.peer_id
        bytes_bucket, batch_bucket = link.bytes_bucket, link.batch_bucket
        authenticated = link.authenticated
        for msg in msgs:
            if batch_bucket is not None and bytes_bucket is not None and not (
                batch_bucket.take(_cost(msg), now)
                and (type(msg) is not Batch or bytes_bucket.take(len(msg.body), now))
            ):
                link.rate_limited += 1
                self.rate_limited += 1
                continue
            actions = on_message(msg, peer, now, verify, authenticated=authenticated)
            if actions:
                self._apply(actions)
                if link.close_reason:  # a Disconnect: the rest of its frames are not read
                    break
        self._after_gossip()

    def _after_gossip(self) -> None:
        """Announcements go out when this task yields; timers start when needed."""
        if self.router.has_announcements:
            self._flush_wake.set()
        if not self._timer_wake.is_set() and self.router.has_timers:
            self._timer_wake.set()

    def _deliver(self, msg: Gossip) -> None:
        if msg.topic == MESH_TOPIC:  # a node's link list: for the mesh view, not for apps
            if msg.origin != self.node_id:
                self.mesh.update(msg.origin, msg.data, trio.current_time())
            return
        self.delivered += 1
        if self.api is not None:
            self.api.deliver(msg)
        for callback in self.on_deliver:
            callback(msg)

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is Deliver:
                batch, body = action.batch, action.body
                for item in body.items:
                    self._deliver(Gossip(id=item.id, origin=batch.origin, topic=item.topic,
                                         data=item.data, hops=batch.hops, to=body.to))
                continue
            assert self.links is not None
            links = self.links.links
            if type(action) is Forward:
                frame = encode_message(action.batch)
                for peer in action.peers:
                    link = links.get(peer)
                    if link is not None and not link.send(frame):
                        self.links.stats.queue_drops += 1
            elif type(action) is Send:
                link = links.get(action.peer)
                if link is not None:
                    for msg in action.msgs:
                        if not link.send(encode_message(msg)):
                            self.links.stats.queue_drops += 1
            else:
                assert type(action) is Disconnect
                link = links.get(action.peer)
                if link is not None:
                    log.warning("link %s (%s) sent a forged batch (%s); closing it",
                                link.peer.name, link.peer_hex[:8], action.reason)
                    link.abort(action.reason)

    def _on_link_change(self, link: PeerLink, up: bool) -> None:
        self._mesh_changed.set()
        if up:
            self._apply(self.router.peer_up(link.peer_id, trio.current_time()))
        else:
            self.router.peer_down(link.peer_id)

    async def _run_mesh_announcer(self) -> None:
        """Share this node's link list (``$mesh``) every ``mesh_interval``, and after a
        link change, at most every ``mesh_min_interval``."""
        cfg = self.config
        while True:
            self._mesh_changed = trio.Event()
            self.announce_links()
            await trio.sleep(cfg.mesh_min_interval)
            with trio.move_on_after(cfg.mesh_interval - cfg.mesh_min_interval):
                await self._mesh_changed.wait()

    def announce_links(self) -> None:
        """Put this node's link list in the mesh view and publish it to the mesh."""
        assert self.links is not None
        now = trio.current_time()
        links = list(self.links.links)
        self._mesh_stamp = max(self._mesh_stamp + 1, time.time_ns() // 1000)
        self.mesh.set(self.node_id, self.config.name, self.listen_str, links, now,
                      self._mesh_stamp)
        self.mesh.expire(now, keep=self.node_id)
        self._queue(None, Item(self._ids.next(), MESH_TOPIC, encode_link_list(
            self.config.name, self.listen_str, links, self._mesh_stamp)))

    def mesh_info(self) -> dict[str, Any]:
        """The mesh view, for the ``mesh`` request."""
        now = trio.current_time()
        self.mesh.expire(now, keep=self.node_id)
        return self.mesh.to_dict(now, self.node_id)

    async def _run_timers(self) -> None:
        """Run the router's timers (grafts, held batches) while it has any."""
        step = min(self.config.graft_timeout, self.config.order_hold) / 4
        while True:
            await self._timer_wake.wait()
            while (deadline := self.router.next_deadline()) is not None:
                # Wake at least every ``step``: a new, earlier deadline may have come up.
                await trio.sleep_until(min(deadline, trio.current_time() + step))
                self._apply(self.router.tick(trio.current_time()))
                self._after_gossip()
            self._timer_wake = trio.Event()

    # -- the API backend ---------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, to: bytes | None = None, *,
                defer_flush: bool = False) -> tuple[str, int]:
        """Publish a message from a local app: deliver it to local subscribers now, and
        queue it for the next signed batch (sent when the publishing task yields, or
        when the batch is full). Returns (msg id hex, number of peers it goes to)."""
        msg_id = self._ids.next()
        self.published += 1
        if to is None or to == self.node_id:
            self._deliver(Gossip(id=msg_id, origin=self.node_id, topic=topic, data=payload,
                                 hops=0, to=to))
        if to == self.node_id or self.config.max_hops == 0:
            return id_to_hex(msg_id), 0
        self._queue(to, Item(msg_id, topic, payload), wake=not defer_flush)
        return id_to_hex(msg_id), len(self.router.peers)

    def _queue(self, to: bytes | None, item: Item, *, wake: bool = True) -> None:
        """Add ``item`` to the next signed batch for ``to``; ``wake``: have the flusher
        task send it once this task yields (the API flushes itself, in
        ``wait_links_writable``, and saves that wake-up)."""
        size = len(item.data) + len(item.topic) * 4 + 64
        if self._pending_bytes + size > self.config.max_frame // 2:
            self.flush()
        self._pending.setdefault(to, []).append(item)
        self._pending_bytes += size
        if wake:
            self._flush_wake.set()

    def flush(self) -> None:
        """Sign the queued messages (one batch per target) and send them."""
        if not self._pending:
            return
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        now = trio.current_time()
        for to, items in pending.items():
            self._seq += 1
            batch, body = make_batch(self.identity, self._ids.next(), to, items,
                                     epoch=self.epoch, seq=self._seq)
            self._apply(self.router.publish(batch, body, now))
        if self.router.has_announcements:
            self._flush_wake.set()  # the IHaves for lazy peers go out when this task yields

    async def _run_flusher(self) -> None:
        """Flush published messages and lazy announcements as soon as the tasks that made
        them yield."""
        while True:
            await self._flush_wake.wait()
            self._flush_wake = trio.Event()
            self.flush()
            self._apply(self.router.take_announcements())

    async def wait_links_writable(self) -> None:
        """Backpressure for local publishers: wait while a link's queue is over half full,
        at most ``publish_wait_max`` per link. A link that stays full is marked lagging
        and not waited for (it drops, and is closed if it stays stuck: docs/failures.md)."""
        self.flush()
        if self.links is None:
            return
        for link in list(self.links.links.values()):
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

    async def wait_peer_count(self, low: int, high: int) -> None:
        """Return once the number of linked peers is between ``low`` and ``high``."""
        while True:
            if self.links is None:
                await self._ready.wait()
                continue
            changed = self.links.changed
            if low <= len(self.links.links) <= high:
                return
            await changed.wait()

    def open_replay(self, since: bytes | float, topics: frozenset[str]) -> Replay:
        """A replay of the messages of history that came after message id ``since``
        (bytes), or at or after Unix time ``since`` (float), in the order this node
        received them: broadcast ones and those sent to this node, of ``topics`` (empty:
        all). It replays what was delivered up to this call; the caller runs it a step
        at a time (``Replay.step``). If the id is not in history, all of it is replayed
        (``Replay.found`` is then False)."""
        self.flush()  # messages published a moment ago belong to history too
        history = self.router.history
        if isinstance(since, bytes):
            entries, after = history.since(float("-inf")), since
        else:
            entries, after = history.since(trio.current_time() - (time.time() - since)), None
        return Replay(entries, after_id=after, topics=topics, node_id=self.node_id,
                      held=self.router.order.held_now(), hidden_topic=MESH_TOPIC)

    def peers_info(self) -> list[dict[str, Any]]:
        """The linked peers, for the ``peers`` request."""
        return peers_info(self)

    def status_info(self) -> NodeStatus:
        """The node's state and counters, for the ``status`` request."""
        return status_info(self)


def _cost(msg: GossipMessage) -> int:
    """What a gossip message costs against its link's batch-rate limit: a batch 1; a
    Graft 1 plus one per key (each can make this node send a whole batch); IHave,
    Prune and Digest 1 plus one per 16 entries (small entries, small work)."""
    if type(msg) is Batch:
        return 1
    if type(msg) is Graft:
        return 1 + len(msg.keys) + len(msg.origins) // 16
    if type(msg) is IHave:
        return 1 + len(msg.batches) // 16
    if type(msg) is Prune:
        return 1 + len(msg.origins) // 16
    assert type(msg) is Digest
    return 1 + len(msg.entries) // 16


def router_config(config: NodeConfig) -> RouterConfig:
    """The router's settings, from the node's."""
    return RouterConfig(
        mode="flood" if config.gossip == "flood" else "tree", max_hops=config.max_hops,
        seen_max_entries=config.seen_max_entries, seen_ttl=config.seen_ttl,
        graft_timeout=config.graft_timeout, optimize_hops=config.optimize_hops,
        order_hold=config.order_hold, history_batches=config.history_batches,
        history_bytes=config.history_bytes, history_age=config.history_age, seed=config.seed,
        digest_bytes=config.max_frame - 4096,  # a Digest must fit in a frame
        max_runs=config.max_origins, max_runs_per_peer=config.max_origins_per_peer,
        new_origins_per_s=config.new_origins_per_s,
        new_origins_burst=min(1024.0, config.max_origins_per_peer),
    )


@asynccontextmanager
async def open_node(config: NodeConfig, **kwargs: Any) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block, then stop it gracefully."""
    async with trio.open_nursery() as nursery:
        node = Node(config, **kwargs)
        await nursery.start(node.run)
        try:
            yield node
        finally:
            with trio.CancelScope(shield=True):
                await node.stop(grace=0.5)
