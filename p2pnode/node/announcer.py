"""The task that shares this node's link list with the mesh (``$mesh``), and this
node's own entry in its mesh view; ``mesh_routes``, the graph for interest routing fed
from the view and the links."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..config import NodeConfig
from ..gossip.routes import Routes
from ..mesh.linklist import MESH_TOPIC, encode_link_list
from ..mesh.view import MeshView
from ..wire.messages import Item

if TYPE_CHECKING:
    from ..gossip.router import Router
    from .engine import Engine


class MeshAnnouncer:
    """Publishes this node's link list every ``interval`` seconds, and after a link
    change, at most every ``min_interval``.

    Args:
        view: the node's mesh view (its own entry is kept fresh here).
        node_id: who this node is.
        config: its ``name``, ``mesh_interval`` and ``mesh_min_interval``.
        links: returns the node ids this node is linked to now.
        listen: returns the address this node listens on (``HOST:PORT``).
        send: queues a message (with a fresh id, from ``new_id``) for the mesh.
        counts: in interest mode, this node's (wanted, relayed) routed batches, said
            in its list (``p2pnode mesh`` shows them per node).
    """

    def __init__(self, view: MeshView, node_id: bytes, config: NodeConfig, *,
                 links: Callable[[], list[bytes]], listen: Callable[[], str],
                 send: Callable[[Item], None], new_id: Callable[[], bytes],
                 counts: Callable[[], tuple[int, int]] | None = None) -> None:
        self.view = view
        self.node_id = node_id
        self.name = config.name
        self.interval = config.mesh_interval
        self.min_interval = config.mesh_min_interval
        #: This node's live links, now.
        self.live_links = links
        self._listen = listen
        self._send = send
        self._new_id = new_id
        self._counts = counts
        self._changed = trio.Event()
        self._stamp = 0
        self.sent = 0  #: link lists published

    def links_changed(self) -> None:
        """A link opened or closed: announce soon."""
        self._changed.set()

    async def run(self) -> None:
        """Announce until cancelled."""
        while True:
            self._changed = trio.Event()
            self.announce()
            await trio.sleep(self.min_interval)
            with trio.move_on_after(self.interval - self.min_interval):
                await self._changed.wait()

    def announce(self) -> None:
        """Put this node's link list in the mesh view and publish it to the mesh. A list
        with no links is not published: it would reach nobody now, and would spread
        (kept in history, repaired to each peer when links open) only to be replaced at
        once by the list sent when the first link opens. At a mesh's start that was one
        flood of the whole mesh per node for nothing (docs/interest.md)."""
        now = trio.current_time()
        links, listen = self.live_links(), self._listen()
        self._stamp = max(self._stamp + 1, time.time_ns() // 1000)
        counts = self._counts() if self._counts is not None else None
        self.view.set(self.node_id, self.name, listen, links, now, self._stamp, counts)
        self.view.expire(now, keep=self.node_id)
        if links:
            self._send(Item(self._new_id(), MESH_TOPIC,
                            encode_link_list(self.name, listen, links, self._stamp, counts)))
            self.sent += 1

    def info(self) -> dict[str, Any]:
        """The mesh view, for the ``mesh`` request."""
        now = trio.current_time()
        self.view.expire(now, keep=self.node_id)
        own = self.view.nodes.get(self.node_id)
        if own is not None and self._counts is not None:
            own.counts = self._counts()  # this node's own: as of now
        return self.view.to_dict(now, self.node_id, frozenset(self.live_links()))


def interest_counts(router: Router) -> Callable[[], tuple[int, int]] | None:
    """In interest mode, what this node's link list says of it: the routed batches it
    received for its own subscriptions, and only to pass on (None in other modes)."""
    routing = router.interest
    if routing is None:
        return None
    return lambda: (routing.stats.wanted, routing.stats.relayed)


def mesh_routes(node_id: bytes, view: MeshView, engine: Engine,
                announcer: MeshAnnouncer) -> Routes:
    """The graph for interest routing (docs/interest.md), kept current: every list the
    mesh view takes, every node it drops, and this node's live links (the
    ``announcer``'s), which replace its own list at once, on each link up or down (when
    the announcer is told to share them). In interest mode the router reads it."""
    links = announcer.live_links
    routes = Routes(node_id)
    routes.set_own_links(())  # no links yet

    def list_change(node: bytes, links: frozenset[bytes] | None) -> None:
        routes.set_list(node, links)
        engine.wake_timers()  # the streams' last batches along the new trees

    view.on_change = list_change

    def link_change(_link: object, _up: bool) -> None:
        announcer.links_changed()
        routes.set_own_links(links())

    engine.on_link_change.append(link_change)
    if engine.router.interest is not None:
        engine.router.interest.routes = routes
    return routes
