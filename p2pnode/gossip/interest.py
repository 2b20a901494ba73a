"""Who wants which topics: every member's subscription patterns, indexed by topic
(docs/interest.md, "What each node knows"). Pure: no I/O, no clock.

A member says in its signed record which topic names and patterns its apps and
durable subscriptions subscribe to (``members.records.MemberBody.interest``), or that
it wants every topic (None: an all-topics subscriber, more than ``MAX_PATTERNS``
patterns, more than ``MAX_INTEREST_BYTES`` of them, or a record that does not say).
``summarize`` makes that list from a node's own subscriptions; ``Interests`` holds
every live member's, and answers ``matching(topic)``: the members a batch of that
topic must reach.

Reserved topics (``$...``) are never routed by interest, so the index is asked about
app topics only (a pattern whose first level is a wildcard never matches a ``$``
topic, MQTT's rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..wire.topics import MULTI, PatternIndex, is_pattern, subscription_problem

__all__ = ["MATCH_CACHE", "MAX_AWAY", "MAX_INTEREST_BYTES", "MAX_PATTERNS", "Interests",
           "summarize"]

#: The most patterns a member record lists; a node with more says "every topic".
MAX_PATTERNS: Final = 64
#: The most UTF-8 bytes of all the patterns of one record together (the record is at
#: most 4 KiB, tags and addresses included); a node with more says "every topic".
MAX_INTEREST_BYTES: Final = 1536
#: Topics whose matching members ``Interests`` remembers until an interest changes;
#: past this many it starts over. Each distinct result is held once.
MATCH_CACHE: Final = 4096
#: Members taken out as gone (dead, left) whose time of going ``Interests`` remembers,
#: so that one that comes back is caught up with what was published while it was away
#: (``gossip.catchup``); past this many the longest gone are forgotten.
MAX_AWAY: Final = 4096


def summarize(patterns: Iterable[str]) -> list[str] | None:
    """What a node's record says of ``patterns`` (its subscriptions, valid ones):
    each once, sorted; None (every topic) if ``#`` is among them, or if there are more
    than ``MAX_PATTERNS`` or more than ``MAX_INTEREST_BYTES`` of them."""
    distinct = set(patterns)
    if MULTI in distinct or len(distinct) > MAX_PATTERNS:
        return None
    if sum(len(p.encode("utf-8", "surrogatepass")) for p in distinct) > MAX_INTEREST_BYTES:
        return None
    return sorted(distinct)


class Interests:
    """Every member's interest, and which members a topic's batches must reach.

    ``version`` goes up on every change (a route computed from ``matching`` is good
    while it stays the same). ``matching`` remembers up to ``MATCH_CACHE`` topics until
    the next change.
    """

    def __init__(self) -> None:
        self.version = 0
        #: Goes up on each change that may add a member to a topic's (a member's new
        #: or wider interest), not on one that only takes members away (catch-up,
        #: ``gossip.catchup``, looks again only then).
        self.grown = 0
        self._of: dict[bytes, tuple[str, ...] | None] = {}  # member -> patterns (None: all)
        self._all: set[bytes] = set()  # members of every topic
        self._exact: dict[str, set[bytes]] = {}  # topic name -> members
        self._patterns: PatternIndex[bytes] = PatternIndex()  # those with wildcards
        self._cache: dict[str, frozenset[bytes]] = {}
        self._results: dict[frozenset[bytes], frozenset[bytes]] = {}  # one copy of each
        #: Members taken out as gone, and when (the caller's clock), until catch-up has
        #: looked at them after they came back (``returned``, ``caught_up``).
        self._away: dict[bytes, float] = {}

    def __len__(self) -> int:
        """The number of members indexed."""
        return len(self._of)

    def __contains__(self, node_id: object) -> bool:
        """Whether ``node_id`` is indexed (a live member)."""
        return node_id in self._of

    def of(self, node_id: bytes) -> tuple[str, ...] | None:
        """What ``node_id`` subscribes to (None: every topic, or not indexed)."""
        return self._of.get(node_id)

    def set(self, node_id: bytes, patterns: Iterable[str] | None) -> bool:
        """``node_id`` subscribes to ``patterns`` (None: every topic); returns whether
        that changed anything. Raises ``ValueError`` for a pattern an app could not
        subscribe to (``wire.topics.subscription_problem``); then nothing changes."""
        summary = None if patterns is None else summarize(patterns)
        new = None if summary is None else tuple(summary)
        if node_id in self._of and self._of[node_id] == new:
            return False
        for pattern in new or ():
            if (problem := subscription_problem(pattern)) is not None:
                raise ValueError(problem)
        old = self._of.get(node_id, ())
        if old is not None and (new is None or not set(new) <= set(old)):
            self.grown += 1
        self._drop(node_id)
        self._of[node_id] = new
        if new is None:
            self._all.add(node_id)
        for pattern in new or ():
            if is_pattern(pattern):
                self._patterns.add(pattern, node_id)
            else:
                self._exact.setdefault(pattern, set()).add(node_id)
        self._changed()
        return True

    def remove(self, node_id: bytes, when: float | None = None) -> bool:
        """Forget ``node_id`` (dead, left); returns whether it was indexed. ``when``:
        the time it went (the caller's clock), remembered for ``returned``."""
        if node_id not in self._of:
            return False
        self._drop(node_id)
        del self._of[node_id]
        if when is not None:
            away = self._away
            away.pop(node_id, None)
            if len(away) >= MAX_AWAY:
                del away[next(iter(away))]
            away[node_id] = when
        self._changed()
        return True

    def returned(self) -> dict[bytes, float]:
        """The members that went (``remove`` with a time) and are back in the index,
        with when they went: those that catch-up has not looked at since."""
        return {m: when for m, when in self._away.items() if m in self._of}

    def caught_up(self, members: Iterable[bytes]) -> None:
        """Catch-up has looked at these ``returned`` members: forget when they went."""
        for member in members:
            self._away.pop(member, None)

    def _drop(self, node_id: bytes) -> None:
        """Take ``node_id``'s patterns out of the indexes (its entry in ``_of`` stays)."""
        old = self._of.get(node_id, ())
        if old is None:
            self._all.discard(node_id)
            return
        for pattern in old:
            if is_pattern(pattern):
                self._patterns.discard(pattern, node_id)
                continue
            members = self._exact.get(pattern)
            if members is not None:
                members.discard(node_id)
                if not members:
                    del self._exact[pattern]

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()
        self._results.clear()

    def matching(self, topic: str) -> frozenset[bytes]:
        """The members whose interest matches the app topic ``topic`` (those of every
        topic included)."""
        found = self._cache.get(topic)
        if found is not None:
            return found
        members = set(self._all)
        exact = self._exact.get(topic)
        if exact:
            members |= exact
        if self._patterns.pairs:
            members |= self._patterns.match(topic)
        result = frozenset(members)
        if len(self._cache) >= MATCH_CACHE:
            self._cache.clear()
            self._results.clear()
        found = self._cache[topic] = self._results.setdefault(result, result)
        return found

    def wants(self, node_id: bytes, topic: str) -> bool:
        """Whether ``node_id`` subscribes to ``topic`` (a member not indexed: no)."""
        return node_id in self.matching(topic)
