"""Retained messages: per topic, the newest retained message of the mesh, kept as the
original signed batch that carries it.

A retained message is a message of a batch whose body has ``retain`` set: the origin's
clock when it made the batch, in Unix microseconds. Of two retained messages on one
topic the newer wins everywhere: the one with the larger ``(stamp, origin, message
id)``, so that every node that has both keeps the same one, whatever order they came
in. A retained message with an empty payload clears its topic: it is kept as a
*tombstone* (not handed to subscribers) for ``tombstone_age`` seconds after its stamp,
so that an older value still held somewhere does not come back.

The store is bounded: at most ``max_topics`` topics (values and tombstones) and
``max_bytes`` (each batch body held once, however many topics it carries, plus a fixed
overhead per batch and per topic). What does not fit is refused (``refused_full``):
a new topic, or a value larger than the one it replaces; only tombstones give way,
the one with the oldest stamp first. A message stamped more than ``max_skew`` seconds
ahead of this node's clock is refused too (``refused_future``): it would otherwise
win over every later publish until then. Topics reserved for the nodes (``$...``) are
never retained.

No I/O: times are the caller's Unix clock (seconds, float).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from ..mesh.linklist import RESERVED_PREFIX
from ..wire.messages import Batch, BatchBody, Gossip, RetainedKey, decode_kept_body

#: Bytes counted per topic, on top of its topic name.
ENTRY_OVERHEAD = 200
#: Bytes counted per batch held, on top of its body.
BATCH_OVERHEAD = 200

#: Which of two retained messages of one topic is newer: (stamp, origin, message id).
Version = tuple[int, bytes, bytes]


def topic_key(topic: str) -> bytes:
    """A topic's key in digests: the first 16 bytes of SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(topic.encode("utf-8", "surrogatepass")).digest()[:16]


@dataclass(slots=True, eq=False)
class RetainedEntry:
    """The retained message of one topic: item ``index`` of ``batch``'s body."""

    topic: str
    key: bytes  # topic_key(topic)
    stamp: int  # the batch's ``retain``: the origin's clock, Unix microseconds
    origin: bytes
    msg_id: bytes
    batch: Batch
    index: int
    tombstone: bool  # an empty payload: the topic was cleared

    @property
    def version(self) -> Version:
        return (self.stamp, self.origin, self.msg_id)

    @property
    def batch_key(self) -> bytes:
        return self.batch.origin + self.batch.id


@dataclass
class RetainedStats:
    """Counters of the store (in messages)."""

    accepted: int = 0  # retained messages kept (a new topic, or newer than the one held)
    stale: int = 0  # not newer than the one held: ignored
    refused_full: int = 0  # did not fit within max_topics / max_bytes
    refused_future: int = 0  # stamped more than max_skew ahead of this node's clock
    tombstones_expired: int = 0
    tombstones_evicted: int = 0  # gave way to a new topic or a larger value


@dataclass(slots=True)
class _Held:
    batch: Batch
    refs: int = 0


@dataclass
class RetainedStore:
    """The retained messages a node keeps (see the module docstring)."""

    max_topics: int = 10_000
    max_bytes: int = 16 << 20
    tombstone_age: float = 86_400.0
    max_skew: float = 60.0
    stats: RetainedStats = field(default_factory=RetainedStats)

    def __post_init__(self) -> None:
        # Topic -> entry, in the order the topics were last set here (oldest first).
        self._entries: dict[str, RetainedEntry] = {}
        self._by_key: dict[bytes, str] = {}
        self._batches: dict[bytes, _Held] = {}
        self._tombs: list[tuple[int, str]] = []  # heap of (stamp, topic); stale ones skipped
        self.tombstones = 0
        self.bytes = 0
        self._last_stamp = 0

    def __len__(self) -> int:
        """Topics held, tombstones included."""
        return len(self._entries)

    @property
    def values(self) -> int:
        """Topics with a retained message (not cleared)."""
        return len(self._entries) - self.tombstones

    def get(self, topic: str) -> RetainedEntry | None:
        return self._entries.get(topic)

    def by_key(self, key: bytes) -> RetainedEntry | None:
        topic = self._by_key.get(key)
        return None if topic is None else self._entries[topic]

    def __iter__(self) -> Iterator[RetainedEntry]:
        return iter(self._entries.values())

    # -- what subscribers get ----------------------------------------------------------

    def matching(self, topics: Collection[str],
                 covers: Callable[[str], bool] | None = None) -> list[RetainedEntry]:
        """The retained messages a subscription to ``topics`` gets first, tombstones left
        out: in the order of ``topics``; empty: every topic, in the order they were set
        here. ``covers``: for a subscription with patterns, whether it covers a topic
        (then every topic is tested, in the order they were set). This is the one place
        that decides which topics a subscription covers."""
        if not topics:
            return [e for e in self._entries.values() if not e.tombstone]
        if covers is not None:
            return [e for e in self._entries.values() if not e.tombstone and covers(e.topic)]
        found = (self._entries.get(t) for t in topics)
        return [e for e in found if e is not None and not e.tombstone]

    # -- publishing here ---------------------------------------------------------------

    def next_stamp(self, topics: Collection[str], now: float) -> int:
        """The stamp for a batch of retained messages on ``topics`` published here: this
        node's clock, but later than anything it stamped before and than the retained
        message it holds for each of those topics, so that a later publish always wins
        (even on a node whose clock is behind)."""
        stamp = max(int(now * 1e6), self._last_stamp + 1)
        for topic in topics:
            entry = self._entries.get(topic)
            if entry is not None and entry.stamp >= stamp:
                stamp = entry.stamp + 1
        self._last_stamp = stamp
        return stamp

    def refusal(self, topic: str, size: int) -> str | None:
        """Why a retained publish of ``size`` payload bytes on ``topic`` would not be
        kept here (None: it would): checked before a local app's publish is taken."""
        current = self._entries.get(topic)
        if current is None and len(self._entries) >= self.max_topics and not self.tombstones:
            return (f"this node keeps retained messages on at most {self.max_topics} topics, "
                    "and has as many")
        extra = size + len(topic.encode("utf-8", "surrogatepass")) + ENTRY_OVERHEAD \
            + BATCH_OVERHEAD + 128  # about what its batch adds, if it travels alone
        if current is not None:
            extra -= ENTRY_OVERHEAD + len(topic.encode("utf-8", "surrogatepass"))
            if self._batches[current.batch_key].refs == 1:
                extra -= len(current.batch.body) + BATCH_OVERHEAD
        if self.bytes + extra > self.max_bytes:
            return (f"this node keeps at most {self.max_bytes} bytes of retained messages, "
                    f"and holds {self.bytes}")
        return None

    # -- taking retained messages --------------------------------------------------------

    def newer_in(self, batch: Batch, body: BatchBody) -> bool:
        """Whether ``body`` (of ``batch``) holds a retained message newer than the one
        held for its topic (before its signature is checked: a node checks only what it
        would keep)."""
        if not body.retain or body.to is not None:
            return False
        for item in body.items:
            if item.topic.startswith(RESERVED_PREFIX):
                continue
            entry = self._entries.get(item.topic)
            if entry is None or entry.version < (body.retain, batch.origin, item.id):
                return True
        return False

    def offer(self, batch: Batch, body: BatchBody, now: float) -> list[RetainedEntry]:
        """Keep the retained messages of ``batch`` (whose signature was checked) that are
        newer than the ones held; returns those kept."""
        if not body.retain or body.to is not None:
            return []
        self.expire(now)
        if body.retain > (now + self.max_skew) * 1e6:
            self.stats.refused_future += len(body.items)
            return []
        newest: dict[str, tuple[int, bytes]] = {}  # topic -> (index, id): the last one wins
        for index, item in enumerate(body.items):
            if item.topic.startswith(RESERVED_PREFIX):
                continue  # the nodes' own: never retained
            if item.topic not in newest or newest[item.topic][1] < item.id:
                newest[item.topic] = (index, item.id)
        kept = []
        for topic, (index, msg_id) in newest.items():
            entry = RetainedEntry(topic, topic_key(topic), body.retain, batch.origin, msg_id,
                                  batch, index, not body.items[index].data)
            current = self._entries.get(topic)
            if current is not None and current.version >= entry.version:
                self.stats.stale += 1
            elif self._make_room(entry, current):
                self._put(entry, current)
                kept.append(entry)
            else:
                self.stats.refused_full += 1
        self.stats.accepted += len(kept)
        return kept

    def _delta(self, entry: RetainedEntry, current: RetainedEntry | None) -> int:
        """Bytes that keeping ``entry`` in place of ``current`` adds (a batch counts once,
        however many topics it carries)."""
        delta = ENTRY_OVERHEAD + len(entry.topic.encode("utf-8", "surrogatepass"))
        if entry.batch_key not in self._batches:
            delta += len(entry.batch.body) + BATCH_OVERHEAD
        if current is not None:
            delta -= ENTRY_OVERHEAD + len(current.topic.encode("utf-8", "surrogatepass"))
            if (current.batch_key != entry.batch_key
                    and self._batches[current.batch_key].refs == 1):
                delta -= len(current.batch.body) + BATCH_OVERHEAD
        return delta

    def _make_room(self, entry: RetainedEntry, current: RetainedEntry | None) -> bool:
        """Evict tombstones (oldest stamp first, never ``current``) until ``entry`` fits in
        place of ``current``; False if it cannot."""
        while ((current is None and len(self._entries) >= self.max_topics)
               or self.bytes + self._delta(entry, current) > self.max_bytes):
            victim = self._oldest_tombstone(skip=entry.topic)
            if victim is None:
                return False
            self._drop(victim)
            self.stats.tombstones_evicted += 1
        return True

    def _put(self, entry: RetainedEntry, current: RetainedEntry | None) -> None:
        held = self._batches.get(entry.batch_key)
        if held is None:
            held = self._batches[entry.batch_key] = _Held(entry.batch)
            self.bytes += len(entry.batch.body) + BATCH_OVERHEAD
        held.refs += 1
        if current is not None:
            self._drop(current)
        self._entries[entry.topic] = entry
        self._by_key[entry.key] = entry.topic
        self.bytes += ENTRY_OVERHEAD + len(entry.topic.encode("utf-8", "surrogatepass"))
        if entry.tombstone:
            self.tombstones += 1
            heapq.heappush(self._tombs, (entry.stamp, entry.topic))

    def _drop(self, entry: RetainedEntry) -> None:
        del self._entries[entry.topic]
        del self._by_key[entry.key]
        self.bytes -= ENTRY_OVERHEAD + len(entry.topic.encode("utf-8", "surrogatepass"))
        if entry.tombstone:
            self.tombstones -= 1
        held = self._batches[entry.batch_key]
        held.refs -= 1
        if not held.refs:
            del self._batches[entry.batch_key]
            self.bytes -= len(entry.batch.body) + BATCH_OVERHEAD

    # -- tombstones ----------------------------------------------------------------------

    def _oldest_tombstone(self, skip: str | None = None) -> RetainedEntry | None:
        """The tombstone with the oldest stamp (stale heap items are dropped on the way)."""
        tombs = self._tombs
        put_back = None
        found = None
        while tombs:
            stamp, topic = tombs[0]
            entry = self._entries.get(topic)
            if entry is None or not entry.tombstone or entry.stamp != stamp:
                heapq.heappop(tombs)
            elif topic == skip:
                put_back = heapq.heappop(tombs)
            else:
                found = entry
                break
        if put_back is not None:
            heapq.heappush(tombs, put_back)
        return found

    def expire(self, now: float) -> None:
        """Forget the tombstones stamped more than ``tombstone_age`` before ``now``."""
        limit = (now - self.tombstone_age) * 1e6
        while (oldest := self._oldest_tombstone()) is not None and oldest.stamp <= limit:
            self._drop(oldest)
            self.stats.tombstones_expired += 1
        if len(self._tombs) > 2 * self.tombstones + 64:  # replaced ones piled up
            self._tombs = [(e.stamp, e.topic) for e in self._entries.values() if e.tombstone]
            heapq.heapify(self._tombs)

    # -- digests -------------------------------------------------------------------------

    def version_of(self, key: bytes) -> tuple[int, bytes] | None:
        """``(stamp, origin)`` of the retained message of the topic with ``key``."""
        entry = self.by_key(key)
        return None if entry is None else (entry.stamp, entry.origin)

    def digest_key(self, entry: RetainedEntry) -> RetainedKey:
        return RetainedKey(entry.key, entry.stamp, entry.origin, len(entry.batch.body))

    def digest(self, now: float) -> list[RetainedKey]:
        """What the store holds, tombstones included, for a ``RetainedDigest``."""
        self.expire(now)
        return [self.digest_key(e) for e in self._entries.values()]


class RetainedReplay:
    """The messages of a snapshot of retained entries, a slice at a time (as
    ``gossip.replay.Replay``, whose interface it shares): a subscription's first events,
    the entries of one batch together. Each batch is decoded once."""

    def __init__(self, entries: list[RetainedEntry]) -> None:
        # The entries of one batch together (in the order of their first), so that
        # each batch is decoded once.
        groups: dict[bytes, list[RetainedEntry]] = {}
        for entry in entries:
            groups.setdefault(entry.batch_key, []).append(entry)
        self._entries = [e for group in groups.values() for e in group]
        self._next = 0
        self._batch: Batch | None = None
        self._body: BatchBody | None = None
        self.done = not entries
        self.found: bool | None = None

    def step(self, budget: int) -> list[Gossip]:
        """The next messages, for about ``budget`` units of work (a byte of body
        decoded or of payload handed out); at least one."""
        out: list[Gossip] = []
        entries = self._entries
        while budget > 0 and self._next < len(entries):
            entry = entries[self._next]
            self._next += 1
            if entry.batch is not self._batch:
                self._batch, self._body = entry.batch, decode_kept_body(entry.batch.body)
                budget -= len(entry.batch.body)
            assert self._body is not None
            item = self._body.items[entry.index]
            out.append(Gossip(id=item.id, origin=entry.origin, topic=item.topic,
                              data=item.data, hops=entry.batch.hops, retained=True))
            budget -= 128 + len(item.data)
        self.done = self._next >= len(entries)
        return out
