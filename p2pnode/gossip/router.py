"""Decides what happens to each message: deliver it here, forward it to which peers.

Flooding with a seen-cache: a new message is delivered once and forwarded to
every linked peer except the one it came from, while it is under the hop limit;
a copy already seen is dropped. The router knows peers only by node id; the
caller turns its actions into I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ..wire.messages import Gossip
from .seen import SeenCache


@dataclass(frozen=True, slots=True)
class Deliver:
    """Action: hand ``msg`` to the local subscribers."""

    msg: Gossip


@dataclass(frozen=True, slots=True)
class Forward:
    """Action: send ``msg`` (hops already counted) to each of ``peers``."""

    msg: Gossip
    peers: tuple[bytes, ...]


Action = Deliver | Forward


@dataclass
class RouterStats:
    """Counters kept by the router."""

    received: int = 0  # gossip messages received from peers
    duplicates: int = 0  # copies dropped because already seen
    delivered: int = 0  # messages handed to local subscribers
    forwarded: int = 0  # message copies sent to peers
    hop_limited: int = 0  # new messages not forwarded because of the hop limit
    published: int = 0  # messages published by local apps


class FloodRouter:
    """The flooding router of one node.

    Args:
        node_id: this node's id.
        max_hops: a message travels at most this many links from its origin.
        seen_max_entries, seen_ttl: bounds of the seen-cache.
    """

    def __init__(
        self, node_id: bytes, *, max_hops: int, seen_max_entries: int, seen_ttl: float
    ) -> None:
        self.node_id = node_id
        self.max_hops = max_hops
        self.seen = SeenCache(seen_max_entries, seen_ttl)
        self.stats = RouterStats()
        self._peers: dict[bytes, None] = {}  # insertion-ordered set

    @property
    def peers(self) -> tuple[bytes, ...]:
        """The linked peers, in the order they came up."""
        return tuple(self._peers)

    def peer_up(self, peer: bytes) -> None:
        """A link to ``peer`` is open."""
        self._peers[peer] = None

    def peer_down(self, peer: bytes) -> None:
        """The link to ``peer`` is gone."""
        self._peers.pop(peer, None)

    def publish(self, msg: Gossip, now: float) -> list[Action]:
        """A local app published ``msg`` (with hops 0). Returns the actions to take."""
        self.stats.published += 1
        self.seen.add(msg.id, now)
        actions: list[Action] = []
        if msg.to is None or msg.to == self.node_id:
            actions.append(Deliver(msg))
            self.stats.delivered += 1
        if msg.to != self.node_id and self._peers and self.max_hops > 0:
            out = msgspec.structs.replace(msg, hops=1)
            actions.append(Forward(out, tuple(self._peers)))
            self.stats.forwarded += len(self._peers)
        return actions

    def on_gossip(self, msg: Gossip, from_peer: bytes, now: float) -> list[Action]:
        """``msg`` arrived from ``from_peer``. Returns the actions to take."""
        stats = self.stats
        stats.received += 1
        if not self.seen.add(msg.id, now) or msg.origin == self.node_id:
            stats.duplicates += 1
            return []
        if msg.hops > self.max_hops:
            stats.hop_limited += 1
            return []
        actions: list[Action] = []
        to = msg.to
        if to is None or to == self.node_id:
            actions.append(Deliver(msg))
            stats.delivered += 1
            if to is not None:
                return actions
        if msg.hops >= self.max_hops:
            stats.hop_limited += 1
            return actions
        targets = tuple(p for p in self._peers if p != from_peer)
        if targets:
            actions.append(Forward(msgspec.structs.replace(msg, hops=msg.hops + 1), targets))
            stats.forwarded += len(targets)
        return actions
