"""Decides what happens to each batch: deliver it here, forward it to which peers.

Flooding with a seen-cache: a new batch is verified, delivered once and forwarded
to every linked peer except the one it came from, while it is under the hop
limit; a copy already seen is dropped before any signature is checked. A batch
that fails verification is dropped and counted, and not remembered as seen (so a
forged copy cannot shadow the real batch). The router knows peers only by node
id; the caller turns its actions into I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from ..errors import RemoteProtocolError
from ..wire.messages import Batch, BatchBody
from .seen import SeenCache


@dataclass(frozen=True, slots=True)
class Deliver:
    """Action: hand the messages of ``body`` (as received in ``batch``) to local apps."""

    batch: Batch
    body: BatchBody


@dataclass(frozen=True, slots=True)
class Forward:
    """Action: send ``batch`` (hops already counted) to each of ``peers``."""

    batch: Batch
    peers: tuple[bytes, ...]


Action = Deliver | Forward
Verify = Callable[[Batch], BatchBody]


@dataclass
class RouterStats:
    """Counters kept by the router (in batches, except where it says messages)."""

    received: int = 0  # batches received from peers
    duplicates: int = 0  # copies dropped because already seen
    delivered: int = 0  # messages handed to local subscribers
    forwarded: int = 0  # batch copies sent to peers
    hop_limited: int = 0  # new batches not forwarded (or dropped) because of the hop limit
    published: int = 0  # messages published by local apps
    rejected: int = 0  # batches that failed verification (bad signature or contents)


class FloodRouter:
    """The flooding router of one node.

    Args:
        node_id: this node's id.
        max_hops: a batch travels at most this many links from its origin.
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
        self.last_rejection = ""  # the error code of the last batch that failed verification

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

    def publish(self, batch: Batch, now: float) -> list[Action]:
        """This node made ``batch`` (hops 0; its messages were delivered locally already).
        Returns the actions to take."""
        self.seen.add(batch.origin + batch.id, now)
        if self._peers and self.max_hops > 0:
            out = msgspec.structs.replace(batch, hops=1)
            self.stats.forwarded += len(self._peers)
            return [Forward(out, tuple(self._peers))]
        return []

    def on_batch(self, batch: Batch, from_peer: bytes, now: float,
                 verify: Verify) -> list[Action]:
        """``batch`` arrived from ``from_peer``; ``verify`` checks it (raising
        ``RemoteProtocolError``). Returns the actions to take."""
        stats = self.stats
        stats.received += 1
        key = batch.origin + batch.id  # ids are unique per origin only
        if self.seen.seen(key, now) or batch.origin == self.node_id:
            stats.duplicates += 1
            return []
        if batch.hops > self.max_hops:
            stats.hop_limited += 1
            return []
        try:
            body = verify(batch)
        except RemoteProtocolError as exc:
            stats.rejected += 1
            self.last_rejection = exc.code
            return []
        self.seen.add(key, now)
        actions: list[Action] = []
        to = body.to
        if to is None or to == self.node_id:
            actions.append(Deliver(batch, body))
            stats.delivered += len(body.items)
            if to is not None:
                return actions
        if batch.hops >= self.max_hops:
            stats.hop_limited += 1
            return actions
        targets = tuple(p for p in self._peers if p != from_peer)
        if targets:
            actions.append(Forward(msgspec.structs.replace(batch, hops=batch.hops + 1), targets))
            stats.forwarded += len(targets)
        return actions
