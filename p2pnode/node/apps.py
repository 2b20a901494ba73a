"""What local apps (through the API server), the status reply and tests ask of a node:
``Node`` has these methods (this class is its app-facing half; ``ApiBackend`` in
``api/server.py`` is the contract)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import trio

from ..api.requests import RequestSink
from ..api.status import NodeStatus
from ..gossip.replay import replay_from
from ..ids import id_to_hex
from ..mesh.linklist import MESH_TOPIC
from ..store.replay import StoreCursor, StoreReplay, covers
from ..wire.topics import TopicFilter
from .status import health_info, peers_info, status_info

if TYPE_CHECKING:
    from ..api.replaying import HistoryReplay
    from ..config import NodeConfig
    from ..gossip.retained import RetainedReplay
    from ..gossip.router import Router
    from ..mesh.view import MeshView
    from ..net.manager import LinkManager
    from ..store.service import StoreService
    from .announcer import MeshAnnouncer
    from .discovering import Discovering
    from .engine import Engine
    from .node import Node
    from .publisher import Publisher
    from .requests import Requests
    from .retaining import Retaining
    from .storing import Storing


class AppFacing:
    """The app-facing methods of ``Node`` (a mixin: the attributes below are Node's)."""

    node_id: bytes
    config: NodeConfig
    mesh: MeshView
    router: Router
    links: LinkManager | None
    engine: Engine
    publisher: Publisher
    retaining: Retaining
    storing: Storing
    requests: Requests
    announcer: MeshAnnouncer
    discovering: Discovering
    _ready: trio.Event

    # Counters kept by the parts, for the status reply and tests.
    published = property(lambda self: self.publisher.published, doc="Messages published here.")
    delivered = property(lambda self: self.engine.delivered,
                         doc="Messages handed to local apps (their own included).")
    rate_limited = property(lambda self: self.engine.rate_limited,
                            doc="Batches dropped because a peer sent too fast.")
    discovered_ignored = property(lambda self: self.discovering.ignored,
                                  doc="Discovered nodes of another version or network.")

    def publish(self, topic: str, payload: bytes, to: bytes | None = None, *,
                defer_flush: bool = False, retain: bool = False) -> tuple[str, int]:
        """See ``Publisher.publish``."""
        return self.publisher.publish(topic, payload, to, defer_flush=defer_flush,
                                      retain=retain)

    def knows_node(self, node_id: bytes) -> bool:
        """Whether a direct message to ``node_id`` has somewhere to go: it is this node,
        a linked peer, or in the mesh view (a node there, or a link one lists). With the
        mesh view off (``mesh_interval`` 0) every id is taken."""
        if node_id == self.node_id or self.config.mesh_interval == 0:
            return True
        if self.links is not None and node_id in self.links.links:
            return True
        nodes = self.mesh.nodes
        return node_id in nodes or any(node_id in n.links for n in nodes.values())

    def flush(self) -> None:
        """Sign and send what local apps published (see ``Publisher.flush``)."""
        self.publisher.flush()

    async def wait_links_writable(self) -> None:
        """Backpressure for local publishers (see ``Publisher.wait_links_writable``)."""
        await self.publisher.wait_links_writable(self.links)

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

    def open_replay(self, since: bytes | float, topics: frozenset[str]) -> HistoryReplay:
        """A replay of the messages after message id ``since`` (bytes: in each origin's
        order; from the message store when it is on and the id is not among the
        messages still queued for it, ``store.replay``; else from history in memory,
        ``gossip.replay.Replay``), or that came at or after Unix time ``since`` (float,
        from history in memory, in the order this node received them): broadcast ones
        and those sent to this node, of ``topics`` (names and patterns; empty: all). It
        replays what was delivered up to this call; the caller runs it a step at a time
        (``step``). If the id is not known, all of the store (or of history) is
        replayed (``found`` is then False)."""
        self.flush()  # messages published a moment ago belong to history too
        held = self.router.order.held_now()
        service = self.storing.service
        if isinstance(since, bytes) and service is not None:
            pending = service.pending_rows()
            if not any(covers(row, since) for row in pending):
                cursor = StoreCursor(since, service.stored_pos, pending, self.router.order.hold)
                return StoreReplay(service.call, service.store, cursor,
                                   topics=TopicFilter(topics), node_id=self.node_id, held=held,
                                   hidden_topic=MESH_TOPIC)
        if isinstance(since, float):  # Unix time -> the history's (trio) clock
            since = trio.current_time() - (time.time() - since)
        return replay_from(self.router.history, held, since,
                           topics=TopicFilter(topics), node_id=self.node_id,
                           hidden_topic=MESH_TOPIC, hold=self.router.order.hold)

    def retained_replay(self, topics: list[str]) -> RetainedReplay:
        """The retained messages a new subscription to ``topics`` gets first (empty: all
        topics), a snapshot handed out a step at a time (``Retaining.replay``)."""
        return self.retaining.replay(topics)

    def has_retained(self, topics: list[str]) -> bool:
        """Whether a subscription to ``topics`` gets any retained message first."""
        return self.retaining.has(topics)

    def message_store(self) -> StoreService | None:
        """The message store's service (None when the store is off): publishes are
        confirmed once it has them (docs/store.md)."""
        return self.storing.service

    def retained_refusal(self, topic: str, size: int) -> str | None:
        """Why this node would not keep a retained publish of ``size`` payload bytes on
        ``topic`` (None: it would)."""
        return self.retaining.refusal(topic, size)

    def ask(self, topic: str, data: bytes, timeout: float, max_replies: int,
            sink: RequestSink) -> bytes:
        """Send a request of a local app (see ``Requests.ask``)."""
        return self.requests.ask(topic, data, timeout, max_replies, sink)

    def cancel_request(self, key: bytes) -> None:
        """Forget a request whose app went (see ``Requests.cancel``)."""
        self.requests.cancel(key)

    def send_reply(self, token: bytes, data: bytes, error: str) -> str | None:
        """A local app's reply (see ``Requests.reply``): None, or why it is refused."""
        return self.requests.reply(token, data, error)

    def finish_requests(self) -> None:
        """Answer the waiting requests of local apps now (the node stops)."""
        self.requests.finish_all()

    def mesh_info(self) -> dict[str, Any]:
        """The mesh view, for the ``mesh`` request."""
        return self.announcer.info()

    def peers_info(self) -> list[dict[str, Any]]:
        """The linked peers, for the ``peers`` request."""
        return peers_info(cast("Node", self))

    def health(self, min_links: int = 0) -> tuple[bool, dict[str, Any]]:
        """(healthy, why): the node serves its socket and has at least ``min_links``
        links (``GET /healthz``)."""
        return health_info(cast("Node", self), min_links)

    async def store_info(self) -> dict[str, Any]:
        """The message store, for the ``store`` request (``Storing.report``), with the
        names of the origins this node knows from its mesh view."""
        names = {id_to_hex(o): n.name for o, n in self.mesh.nodes.items()}
        names[id_to_hex(self.node_id)] = self.config.name
        return await cast("Node", self).storing.report(names)

    def status_info(self) -> NodeStatus:
        """The node's state and counters, for the ``status`` request."""
        return status_info(cast("Node", self))

