"""A node: one nursery that owns the listener, the links, the dialers and the local API.

``Node`` is the composition root: it builds the parts and wires them together, and
owns their tasks. The work is in the parts: ``engine`` (the gossip path between links,
router and apps), ``publisher`` (local messages into signed batches), ``status``
(what the node reports), ``mesh.announcer`` (the link lists), ``discovering`` (mDNS).

``Node.run`` is a trio service (``await nursery.start(node.run)``); ``open_node``
wraps it as an async context manager. ``Node.stop`` leaves gracefully: every
peer is told (``Bye``), so it drops the link at once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .. import PROTOCOL_VERSION
from ..api.server import ApiServer
from ..config import NodeConfig, format_hostport
from ..errors import P2PError, single_error
from ..gossip.router import Router
from ..identity.datadir import DataDirLock
from ..identity.keypair import NodeIdentity
from ..identity.keys import NetworkKey, load_or_create_identity
from ..ids import id_to_hex
from ..mesh.view import MeshView
from ..net.failures import FailureLog
from ..net.link import PeerLink
from ..net.manager import LinkManager
from ..net.tls import TlsTransport, default_transport
from ..net.transport import Transport
from ..wire.messages import Bye, Gossip, GossipMessage, Hello, Item, encode_message
from .announcer import MeshAnnouncer, interest_counts, mesh_routes
from .apps import AppFacing
from .discovering import Discovering
from .engine import Engine, router_config
from .handlers import EventHandlers
from .interests import local_interest
from .membership import member_service
from .publisher import Publisher
from .reload import Reconfigured, reconfigure
from .requests import Requests
from .retaining import Retaining
from .storing import Storing, store_path

if TYPE_CHECKING:
    from ..discovery.mdns import MdnsDiscovery

log = logging.getLogger("p2pnode.node")


class Node(AppFacing):
    """One p2pnode.

    Args:
        config: settings and limits.
        transport: how to reach peers (TCP unless given; tests pass a memory one).
        identity: use this key pair instead of the one stored in ``config.data_dir``
            (tests and simulations; then the data directory is not touched).
        api: serve the local API on ``config.socket_path`` (tests may turn it off).

    Without ``identity``, the node locks its data directory before it reads or makes
    its key there, and holds the lock until ``run`` returns. Raises ``ConfigError``
    (the data directory is in use by another node, unsafe, or its key unreadable).
    """

    def __init__(self, config: NodeConfig, *, transport: Transport | None = None,
                 identity: NodeIdentity | None = None, api: bool = True) -> None:
        self.config = config
        self.handlers = EventHandlers(config)  # member event programs: checked before the lock
        self._lock: DataDirLock | None = None
        if identity is None:
            identity = self._lock_and_load(config)
        self.identity = identity
        self.node_id = identity.node_id
        self.node_hex = id_to_hex(self.node_id)
        self.network = (NetworkKey.load(config.network_key) if config.network_key
                        else NetworkKey.open())
        #: The network tag in handshakes and mDNS records (a hash, never the key).
        self.network_tag = self.network.tag
        self.transport = transport or default_transport(config, identity, self.network)
        #: Failures to link: logged (rate-limited per address) and kept for status.
        self.failures = FailureLog(clock=trio.current_time)
        self.router = Router(self.node_id, router_config(config))
        self.mesh = MeshView(config.mesh_max_nodes, 3 * config.mesh_interval)
        self.api = ApiServer(config, self) if api else None
        self.engine = Engine(config, self.router, self.mesh, self._to_apps)
        #: Called with every message handed to local apps (tests); the engine's list.
        self.on_deliver: list[Callable[[Gossip], None]] = self.engine.listeners
        if self.api is not None:
            self.engine.read_hooks = (self.api.hold_wakes, self.api.send_touched)
        self.engine.items_to_apps = functools.partial(_items_to_apps, self)
        self.engine.apps_want = self.api.wants if self.api is not None else _no_app
        self.publisher = Publisher(config, identity, self.router, self.engine)
        try:
            #: The message store on disk (docs/store.md); its ``service`` is None when off.
            self.storing = Storing(config, self.router, store_path(config, self._lock is not None))
            self.publisher.epoch = self.storing.claim_epoch(self.publisher.epoch)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.retaining = self.publisher.retaining = Retaining(config, self.router,
                                                              self.engine.verifier)
        self.retaining.attach(self.engine)
        self.requests = Requests(config, identity, self.router, self.engine, self.publisher,
                                 self._to_apps)
        self.engine.on_request = self.requests.on_batch
        self.engine.on_reply = self.requests.on_reply
        self.announcer = MeshAnnouncer(
            self.mesh, self.node_id, config, links=self._linked,
            listen=lambda: self.listen_str, send=lambda item: self.publisher.queue(None, item),
            new_id=self.publisher.ids.next, counts=interest_counts(self.router))
        self.routes = mesh_routes(self.node_id, self.mesh, self.engine, self.announcer)
        self.discovering = Discovering(self)
        #: The gossip path's entry (a plain attribute, so simulations can wrap it).
        self._on_gossip: Callable[[PeerLink, list[GossipMessage]], None] = self.engine.on_gossip
        #: The member list (docs/api.md#members) and its glue to the links.
        self.membership, self.members_glue = member_service(config, identity, self.network_tag,
                                                            self.engine)
        self.interest = local_interest(self.api, self.membership, self.storing.service, self.router)
        self.listen_addr: tuple[str, int] | None = None
        self.links: LinkManager | None = None
        self._ready = trio.Event()
        self.started_at = 0.0  #: trio time when the node began to listen
        self._scope: trio.CancelScope | None = None

    def _lock_and_load(self, config: NodeConfig) -> NodeIdentity:
        self._lock = DataDirLock(config.data_dir)
        self._lock.acquire()  # checks the directory, and makes it if needed
        try:
            return load_or_create_identity(config.data_dir)
        except BaseException:
            self._lock.release()
            raise

    # -- the service -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled or ``stop()``; ``started`` once it listens and
        serves its socket. Raises ``SocketInUse``, ``OSError`` (a port in use),
        ``ConfigError`` (``UnsafePath``: the private socket directory is not safe)."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                await self._start(nursery)
                # The command line announces it (cli.main); a library user may want it.
                log.debug("node %s (%s) listening on %s", self.config.name, self.node_hex,
                          self.listen_str)
                task_status.started(self)
        except BaseExceptionGroup as group:
            # A failure to start (socket in use, port taken) is raised as itself.
            leaf = single_error(group)
            if isinstance(leaf, P2PError | OSError):
                raise leaf from None
            raise
        finally:
            self.storing.close()
            if self._lock is not None:
                self._lock.release()

    async def _start(self, nursery: trio.Nursery) -> None:
        cfg = self.config
        self.listen_addr = await nursery.start(
            self.transport.listen, cfg.listen_host, cfg.listen_port, self._inbound)
        self.links = self.engine.links = LinkManager(
            cfg, self._hello(), self.transport, self._on_gossip, self.engine.link_changed,
            self.failures)
        if isinstance(self.transport, TlsTransport):
            self.transport.on_failure = self.links.report_inbound
        self.started_at = trio.current_time()
        await self.storing.start(nursery)
        await nursery.start(self.links.run)
        nursery.start_soon(self.engine.run_flusher, self.publisher.flush)
        nursery.start_soon(self.engine.run_timers)
        nursery.start_soon(self.retaining.run)
        nursery.start_soon(self.requests.run)
        nursery.start_soon(self.members_glue.run, self.links, self._hello().listen)
        nursery.start_soon(self.handlers.run, self.membership)
        nursery.start_soon(self.interest.run)
        if cfg.mesh_interval > 0:
            nursery.start_soon(self.announcer.run)
        self._ready.set()
        if self.api is not None:
            await nursery.start(self.api.run)
        self.links.set_static_peers(cfg.peers)
        if cfg.mdns and self.discovering.possible():
            await nursery.start(self.discovering.make().run)

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
        flush, then cancel everything. Local apps get a ``closing`` event first. Safe
        to call more than once."""
        if self.api is not None:
            await self.api.close_clients("the node is stopping", grace)
        if self.links is not None:
            self.members_glue.leave()
            bye = encode_message(Bye("shutdown"))
            self.links.close_all(lambda _link: bye)
            with trio.move_on_after(grace):
                for link in list(self.links.links.values()):
                    await link.closed.wait()
        if self._scope is not None:
            self._scope.cancel()

    def reconfigure(self, config: NodeConfig) -> Reconfigured:
        """Take the settings of ``config`` that can change while the node runs (the
        static peers, limits: ``reload.LIVE_FIELDS``); report the others, which need a
        restart. Raises ``ConfigError`` and changes nothing if they do not fit."""
        return reconfigure(self, config)

    def kill(self) -> None:
        """Stop at once, without telling peers (as a crash would): for tests and simulations."""
        if self._scope is not None:
            self._scope.cancel()

    # -- wiring ----------------------------------------------------------------------

    @property
    def listen_str(self) -> str:
        """The address the node really listens on, as ``HOST:PORT``."""
        return format_hostport(*self.listen_addr) if self.listen_addr else ""

    def _linked(self) -> list[bytes]:
        return list(self.links.links) if self.links is not None else []

    def _to_apps(self, msg: Gossip, token: bytes | None = None,
                 timeout: float | None = None) -> None:
        """A message (a request: with its reply token and timeout) to local apps."""
        if self.api is not None:
            self.api.deliver(msg, token, timeout)
        for callback in self.on_deliver:
            callback(msg)

    @property
    def discovery(self) -> MdnsDiscovery | None:
        """The mDNS discovery service, while it runs."""
        return self.discovering.service


def _items_to_apps(node: Node, origin: bytes, hops: int, to: bytes | None,
                   items: list[Item]) -> None:
    """The messages of one batch to local apps (``Engine.items_to_apps``)."""
    if node.api is not None:
        node.api.deliver_items(origin, hops, to, items)
    for item in items if node.on_deliver else ():
        msg = Gossip(id=item.id, origin=origin, topic=item.topic, data=item.data, hops=hops,
                     to=to)
        for callback in node.on_deliver:
            callback(msg)


def _no_app(topic: str) -> bool:
    """``Engine.apps_want`` of a node without the local API: no app (``on_deliver``
    callbacks, if any, get every message: ``Engine.listeners``)."""
    return False


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
