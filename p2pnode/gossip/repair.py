"""Batches announced to this node that it has not received: whom to graft them from, when.

An ``IHave`` names batches (by key) that a peer has. A batch this node lacks is noted
with a deadline (``graft_timeout``, or later for repairs, see ``Router``); if it has not
come by then, the router sends ``Graft`` to the first announcer still linked, and the
next one after another timeout, until it comes or no announcer is left (given up).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TypeVar

from ..ids import ID_LEN
from ..wire.messages import MAX_KEYS

T = TypeVar("T")


def chunks(items: list[T]) -> list[list[T]]:
    """``items`` in pieces of at most ``MAX_KEYS`` (the most one IHave or Graft holds)."""
    return [items[i:i + MAX_KEYS] for i in range(0, len(items), MAX_KEYS)]


@dataclass(slots=True)
class Missing:
    """A batch announced to us that we do not have yet."""

    deadline: float
    hops: int
    announcers: list[bytes] = field(default_factory=list)
    grafted: bool = False  # we asked an announcer for it
    repair: bool = False  # announced in answer to our Digest (not by a live push)
    first: bytes | None = None  # the first announcer (counted per announcer)
    #: A catch-up announcement's (``Announce.age``): when the batch was published, on
    #: this node's clock, as the announcers know it (the earliest of their estimates,
    #: each no earlier than the truth).
    published: float | None = None


#: What ``MissingBatches.take`` gives for a batch nobody announced (never changed).
NOT_ANNOUNCED = Missing(0.0, 0)


class MissingBatches:
    """The announced batches not received yet, by key.

    Bounded: at most ``max_entries`` in all and a quarter of that per first announcer,
    so that one peer announcing made-up batches cannot crowd out the others'
    announcements; at most ``max_announcers`` announcers kept per batch.
    """

    def __init__(self, max_entries: int, max_announcers: int) -> None:
        self.max_entries = max_entries
        self.max_announcers = max_announcers
        self._entries: dict[bytes, Missing] = {}
        self._by_first: dict[bytes, int] = {}  # first announcer -> its entries
        self._by_origin: dict[bytes, int] = {}  # origin (a key's first bytes) -> entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def fetching(self, origin: bytes) -> bool:
        """Whether batches of ``origin`` were announced and have not come yet."""
        return origin in self._by_origin

    def note(self, key: bytes, peer: bytes, hops: int, deadline: float, *,
             repair: bool, published: float | None = None) -> None:
        """``peer`` announced the batch ``key``, ``hops`` away from its origin. A new
        entry waits until ``deadline``; one over the bounds is not kept. ``published``:
        a catch-up announcement's time of publication (see ``Missing``)."""
        missing = self._entries.get(key)
        if missing is None:
            taken = self._by_first.get(peer, 0)
            if len(self._entries) >= self.max_entries or taken >= self.max_entries // 4:
                return
            self._by_first[peer] = taken + 1
            origin = key[:ID_LEN]
            self._by_origin[origin] = self._by_origin.get(origin, 0) + 1
            missing = self._entries[key] = Missing(deadline, hops, repair=repair, first=peer)
        if peer not in missing.announcers and len(missing.announcers) < self.max_announcers:
            missing.announcers.append(peer)
        if published is not None:
            missing.published = min(published, missing.published or published)
            missing.deadline = min(missing.deadline, deadline)

    def forget(self, key: bytes) -> Missing | None:
        """Drop ``key`` (it came, or it is given up); returns its entry, if any."""
        missing = self._entries.pop(key, None)
        if missing is not None:
            origin = key[:ID_LEN]
            left = self._by_origin[origin] - 1
            if left > 0:
                self._by_origin[origin] = left
            else:
                del self._by_origin[origin]
        if missing is not None and missing.first is not None:
            left = self._by_first.get(missing.first, 0) - 1
            if left > 0:
                self._by_first[missing.first] = left
            else:
                self._by_first.pop(missing.first, None)
        return missing

    def take(self, key: bytes) -> Missing:
        """``forget``, with ``NOT_ANNOUNCED`` for a batch that was not announced."""
        return self.forget(key) or NOT_ANNOUNCED

    def next_deadline(self) -> float | None:
        """The earliest deadline (None: nothing is missing)."""
        return min((m.deadline for m in self._entries.values()), default=None)

    def due(self, now: float, linked: Container[bytes],
            retry: float) -> tuple[dict[bytes, list[bytes]], int]:
        """The batches whose deadline passed: per announcer to graft from (the first one
        still ``linked``), their keys, each given a new deadline ``now + retry``; and how
        many were given up because no announcer is left (those are forgotten)."""
        grafts: dict[bytes, list[bytes]] = {}
        given_up = 0
        for key in [k for k, m in self._entries.items() if m.deadline <= now]:
            missing = self._entries[key]
            while missing.announcers and missing.announcers[0] not in linked:
                missing.announcers.pop(0)
            if not missing.announcers:
                self.forget(key)
                given_up += 1
                continue
            grafts.setdefault(missing.announcers.pop(0), []).append(key)
            missing.grafted = True
            missing.deadline = now + retry
        return grafts, given_up


class RepairWatch:
    """When gaps are held as if their batches were being fetched, whatever the
    announcements say (``OrderBuffer.tick``'s ``fetching``): for ``grace`` seconds
    after a link opened (what its digest exchange brings is announced a moment later,
    more under load) or after input came again after a silence; and while nothing has
    come from any peer for ``quiet`` seconds (this node is cut off: a link flap, its
    own; what it misses comes when it heals)."""

    def __init__(self, grace: float, quiet: float) -> None:
        self.grace = grace
        self.quiet = quiet
        self._until = float("-inf")
        self._last_input = float("-inf")
        self._now = float("-inf")

    def link_opened(self, now: float) -> None:
        self._until = max(self._until, now + self.grace)

    def input(self, now: float) -> None:
        """A message came from a peer."""
        if now - self._last_input >= self.quiet:  # after a silence: a heal, maybe
            self._until = max(self._until, now + self.grace)
        self._last_input = self._now = now

    def fetching(self, now: float | None, missing: MissingBatches) -> Callable[[bytes], bool]:
        """The ``fetching`` predicate at ``now`` (None: the last time this watch saw)."""
        now = self._now if now is None else now
        self._now = max(self._now, now)
        if now < self._until or now - self._last_input >= self.quiet:
            return _all_fetching
        return missing.fetching


def _all_fetching(origin: bytes) -> bool:
    return True
