"""What a member's interest changes cost every node: at most ``INTEREST_BURST`` index
updates at once, then ``INTEREST_RATE`` a second (docs/interest.md, "Bounds and
attackers"). Pure: the clock is the caller's.

Each change of the ``Interests`` index makes every node look up again the members of
each topic and compute again the trees that changed. An honest node changes its record
for its interest at most once a second (``node.interests``), but a hostile member can
sign a new record as fast as its links take them (``member_rate``, 200 a second). The
gate applies a member's changes at once while its bucket allows, and holds the newest
one back otherwise: it is applied when the bucket allows again (``tick``), and any
change in between is replaced by the newer one. So a member that changes its interest
over and over delays only what the mesh knows of its own interest; it costs each node
no more index updates than an honest member at its busiest.

A member that is no longer live (dead, left) is taken out of the index at once (no
messages are routed toward a member that is gone), and what it held back is dropped;
this node's own interest is never held back.
"""

from __future__ import annotations

from typing import Final

from ..gossip.interest import Interests, summarize
from .pacing import Pacer

#: Interest changes applied per member and second, on average.
INTEREST_RATE: Final = 1.0
#: ... and at once, after a quiet while.
INTEREST_BURST: Final = 4.0

Patterns = tuple[str, ...] | list[str] | None


class InterestGate:
    """Feeds members' interests to ``interests``, each member's changes at ``rate`` a
    second with bursts of ``burst`` (this node's own, ``me``, at once)."""

    def __init__(self, interests: Interests, me: bytes, *, rate: float = INTEREST_RATE,
                 burst: float = INTEREST_BURST) -> None:
        self.interests = interests
        self.me = me
        self._pacer: Pacer[bytes, Patterns] = Pacer(rate, burst)

    def __len__(self) -> int:
        """Members whose bucket is not full (the memory the gate holds)."""
        return len(self._pacer)

    @property
    def held(self) -> int:
        """Changes held back (a later one may have replaced them)."""
        return self._pacer.held_total

    def set(self, node_id: bytes, patterns: Patterns, now: float) -> bool:
        """``node_id`` (live) subscribes to ``patterns``: applied now if its bucket
        allows (returns True if the index changed), else held back until ``tick``."""
        if node_id == self.me:
            return self.interests.set(node_id, patterns)
        if self._same(node_id, patterns):
            self._pacer.drop(node_id)
            return False
        if not self._pacer.offer(node_id, patterns, now):
            return False
        return self.interests.set(node_id, patterns)

    def remove(self, node_id: bytes, now: float | None = None) -> bool:
        """``node_id`` is no longer live: out of the index now (``now``: remembered
        as when it went, ``Interests.returned``)."""
        self._pacer.drop(node_id)
        return self.interests.remove(node_id, now)

    def tick(self, now: float) -> None:
        """Apply the changes held back whose member's bucket allows now."""
        for node_id, patterns in self._pacer.due(now):
            if not self._same(node_id, patterns):
                self.interests.set(node_id, patterns)

    def next_deadline(self) -> float | None:
        """When the first change held back may be applied (None: nothing held)."""
        return self._pacer.next_deadline()

    def _same(self, node_id: bytes, patterns: Patterns) -> bool:
        """Whether the index says ``patterns`` of ``node_id`` already."""
        if node_id not in self.interests:
            return False
        summary = None if patterns is None else summarize(patterns)
        return self.interests.of(node_id) == (None if summary is None else tuple(summary))
