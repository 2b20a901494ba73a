"""mDNS discovery for a node: whether it can run, and what it finds, handed to the
link manager as dial candidates."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import PROTOCOL_VERSION
from ..errors import ConfigError
from ..ids import parse_id

if TYPE_CHECKING:
    from ..discovery.mdns import MdnsDiscovery
    from ..discovery.records import DiscoveredPeer
    from .node import Node

log = logging.getLogger("p2pnode.node")


class Discovering:
    """The glue between a node and its mDNS discovery (imported only when used)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.service: MdnsDiscovery | None = None
        self.ignored = 0  # discovered nodes of another version or network

    def possible(self) -> bool:
        """False (with a warning) when no interface suits mDNS and none was named.
        A named interface that does not exist is an error (``ConfigError``)."""
        from ..discovery.interfaces import choose_interfaces

        names = self.node.config.mdns_interfaces
        try:
            choose_interfaces(names)
        except ConfigError as exc:
            if names:
                raise
            log.warning("mDNS discovery is off: %s", exc)
            return False
        return True

    def make(self) -> MdnsDiscovery:
        """The discovery service for the node, which listens already."""
        from ..discovery.mdns import MdnsDiscovery

        node, cfg = self.node, self.node.config
        assert node.listen_addr is not None
        self.service = MdnsDiscovery(
            node_id=node.node_hex, name=cfg.name, port=node.listen_addr[1],
            version=PROTOCOL_VERSION, network=node.network_tag,
            interfaces=cfg.mdns_interfaces, advertise=cfg.advertise,
            on_found=self.found, on_lost=self.lost,
        )
        return self.service

    def found(self, peer: DiscoveredPeer) -> None:
        """A node was found (or its record changed): a dial candidate, if it speaks our
        protocol version on our network."""
        if peer.version != PROTOCOL_VERSION or peer.network != self.node.network_tag:
            self.ignored += 1
            return
        assert self.node.links is not None
        self.node.links.peer_discovered(parse_id(peer.node_id), peer.addrs)

    def lost(self, node_hex: str) -> None:
        """A node's record went away."""
        assert self.node.links is not None
        self.node.links.peer_lost(parse_id(node_hex))
