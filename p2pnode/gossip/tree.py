"""Broadcast trees: which links only announce an origin's batches (the lazy ones).

Epidemic broadcast trees (Plumtree: Leitão, Pereira and Rodrigues 2007), one tree per
origin. Every link starts *eager*: a new batch is pushed whole on eager links and only
announced (``IHave``, batched) on *lazy* ones. A node that gets a batch it already has
answers ``Prune`` for its origin and the sender makes that link lazy for that origin,
so the first batch of an origin floods and its eager links settle into a spanning tree
of first arrivals (the fastest paths): from then on each node receives about one copy.
A ``Graft`` (a batch asked for after an announcement alone, or a swap for a shorter
path) makes a link eager again.

Trees are per origin because one shared tree (the paper's) is a shortest-path tree for
one origin only: measured with five publishers, it doubled the hops and the p99
latency, and swapping links for one origin undid them for another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class Trees:
    """Per origin, the peers that are lazy for its batches; every other peer is eager.

    Bounded: at most ``max_origins`` origins, the least recently used forgotten first
    (that origin's next batch then floods once, and its tree forms again).
    """

    def __init__(self, max_origins: int) -> None:
        self.max_origins = max_origins
        #: origin -> its lazy peers, least recently used origin first. The router reads
        #: it directly on its hot path (``lazy.get(origin)``: None means all eager).
        self.lazy: OrderedDict[bytes, set[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.lazy)

    def __contains__(self, origin: bytes) -> bool:
        return origin in self.lazy

    def lazy_for(self, origin: bytes) -> set[bytes]:
        """``origin``'s lazy peers, to read or change (made, and marked recently used)."""
        lazy = self.lazy.get(origin)
        if lazy is None:
            lazy = self.lazy[origin] = set()
            if len(self.lazy) > self.max_origins:
                self.lazy.popitem(last=False)  # that origin's next batch floods once
        else:
            self.lazy.move_to_end(origin)
        return lazy

    def peer_up(self, peer: bytes) -> None:
        """A new link starts eager, for every origin."""
        for lazy in self.lazy.values():
            lazy.discard(peer)

    def prune(self, origin: bytes, peer: bytes) -> bool:
        """Make ``peer`` lazy for ``origin``; False if it was already."""
        lazy = self.lazy_for(origin)
        if peer in lazy:
            return False
        lazy.add(peer)
        return True

    def graft(self, origins: Iterable[bytes], peer: bytes) -> None:
        """Make ``peer`` eager for ``origins`` (only those with a tree: no state is made
        for origins a peer may have made up)."""
        for origin in origins:
            lazy = self.lazy.get(origin)
            if lazy is not None:
                lazy.discard(peer)

    def swap(self, origin: bytes, shorter: bytes, longer: bytes) -> bool:
        """Make ``shorter`` eager and ``longer`` lazy for ``origin`` (a shorter path was
        found); False if ``longer`` was lazy already (nothing changes)."""
        lazy = self.lazy_for(origin)
        if longer in lazy:
            return False
        lazy.add(longer)
        lazy.discard(shorter)
        return True
