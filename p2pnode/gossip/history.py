"""Recent batches a node keeps, to repair others and to replay to late apps.

The history is bounded three ways (batches, bytes, age), the oldest by publication
first out (``Entry.age``, below). It answers a ``Graft`` (send a batch we announced),
builds the ``Digest`` a node sends when a link opens, and finds what a peer's digest
lacks (anti-entropy: the repair after a partition heals or a peer restarts). Time is
the caller's clock.

**Age of publication.** A batch carries no time of its own, only its place in its
origin's order (``epoch``, ``seq``). A batch that arrives live was published about
when it arrived: its ``age`` is its arrival. One that arrives late, after a later
batch of its origin (brought by repair, say after this node restarted), was published
before that one, by about the origin's pace (seconds per batch, measured on its live
batches) for each number between them: its ``age`` is the later batch's age minus
that, but not below the age of the origin's batch before it. Set when a batch is
added, ages grow along each origin's order, so eviction by age removes each origin's
batches first to last, and after a restart a full history drops the peers' old
repaired history, not the fresh messages that came ahead of it.

``rank`` is the arrival-based counterpart that replays use (``gossip.replay``): the
arrival number of the first to arrive of a batch and its origin's later batches.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count

from ..wire.messages import Batch, DigestEntry

ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per batch on top of its body
#: The id range of an entry whose message ids are not known: every id may be in it.
ANY_ID = (b"", b"\xff" * 17)


@dataclass(slots=True)
class Entry:
    """One batch in history, as it arrived (its ``hops`` are the arrival's)."""

    batch: Batch
    epoch: int
    seq: int
    time: float  # when it arrived (or was published), caller's clock
    size: int  # bytes counted against the history's limit
    from_peer: bytes | None  # the peer it first came from (None: published here)
    verified: bool = True  # its signature was checked (see Router.on_batch)
    # The lowest and highest message id in the batch: a message id outside that range
    # is not in it, which is known without decoding the body (``Replay``).
    first_id: bytes = ANY_ID[0]
    last_id: bytes = ANY_ID[1]
    gone: bool = field(default=False)  # left history (forged, expired or evicted)
    #: Its age of publication, on the caller's clock (see the module's doc): ``time``,
    #: or earlier if a later batch of its origin came first.
    age: float = 0.0
    n: int = 0  # its arrival number in this history (1, 2, 3, ...)
    #: The arrival number of the first to arrive of it and its origin's later batches
    #: held when it came (``n``, or a later batch's ``rank``).
    rank: int = 0
    repaired: bool = False  # came in answer to a repair announcement (a Digest's)
    held: bool = False  # waited in the order buffer: delivered up to ``hold`` later
    topic: str | None = None  # a routed batch's topic (interest mode), else None

    @property
    def position(self) -> tuple[int, int]:
        """Its place in its origin's order."""
        return (self.epoch, self.seq)


class _Run:
    """An origin's numbered entries in history, in its order, and its pace."""

    __slots__ = ("entries", "pace", "positions")

    def __init__(self) -> None:
        self.positions: list[tuple[int, int]] = []
        self.entries: list[Entry] = []
        self.pace = 0.0  # seconds per batch, of its batches that came live in order

    def place(self, epoch: int, seq: int, now: float, n: int) -> tuple[float, int]:
        """The age and rank of a new batch of this origin (see the module's doc)."""
        entries = self.entries
        i = bisect_right(self.positions, (epoch, seq))
        if i == len(entries):  # the newest: it came live
            last = entries[-1]
            if last.epoch == epoch and seq > last.seq and last.rank == last.n:
                sample = (now - last.time) / (seq - last.seq)
                self.pace = sample if not self.pace else 0.875 * self.pace + 0.125 * sample
            return now, n
        later = entries[i]  # came first, though published after it
        gap = later.seq - seq if later.epoch == epoch else 1
        age = later.age - gap * self.pace
        if i:
            age = max(age, entries[i - 1].age)
        return min(age, now), later.rank

    def insert(self, entry: Entry) -> None:
        i = bisect_right(self.positions, entry.position)
        self.positions.insert(i, entry.position)
        self.entries.insert(i, entry)

    def remove(self, entry: Entry) -> None:
        i = bisect_left(self.positions, entry.position)
        while self.entries[i] is not entry:  # the same position twice: a bad origin
            i += 1
        del self.positions[i], self.entries[i]


class History:
    """Keeps recent batches, at most ``max_batches``, ``max_bytes`` (bodies plus a fixed
    overhead each) and ``max_age`` seconds. A limit of 0 batches turns it off.

    Entries are kept in arrival order in a list as well as by key, so that the entries
    that came after a point in time are found by bisection (``since``), and a replay
    can take a snapshot of them (a slice: references, no copies of the batches); in a
    heap by age of publication, for eviction; and per origin in the origin's order.
    """

    def __init__(self, max_batches: int, max_bytes: int, max_age: float) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: dict[bytes, Entry] = {}
        # Arrival order; some entries are ``gone`` (holes, counted in ``_holes``) until
        # the list is compacted, which keeps it within twice the live entries (+64).
        self._order: list[Entry] = []
        self._holes = 0
        # (age, epoch, seq, tie, entry): the oldest by publication on top; gone entries
        # are skipped when they come up (and the heap rebuilt when they are too many).
        self._heap: list[tuple[float, int, int, int, Entry]] = []
        self._tie = count()
        self._arrivals = count(1)
        # origin -> its numbered entries' positions and the entries, in origin order.
        self._runs: dict[bytes, _Run] = {}
        self._last_time = float("-inf")
        self.bytes = 0
        self.evicted = 0  # batches dropped before their age because of the limits

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> Entry | None:
        return self._entries.get(key)

    def find(self, origin: bytes, epoch: int, seq: int) -> Entry | None:
        """The batch numbered ``seq`` in ``origin``'s run ``epoch``, if it is kept."""
        run = self._runs.get(origin)
        if run is None:
            return None
        i = bisect_left(run.positions, (epoch, seq))
        if i < len(run.entries) and run.positions[i] == (epoch, seq):
            return run.entries[i]
        return None

    def __iter__(self) -> Iterator[Entry]:
        """The entries, in arrival order."""
        return (e for e in self._order if not e.gone)

    def add(self, batch: Batch, epoch: int, seq: int, now: float,
            from_peer: bytes | None, *, verified: bool = True,
            id_range: tuple[bytes, bytes] = ANY_ID, repaired: bool = False,
            held: bool = False, topic: str | None = None,
            published: float | None = None) -> None:
        """Keep ``batch`` (a new one: its key is not in history yet). ``id_range``: the
        lowest and highest message id in it (``item_id_range``); by default, unknown.
        ``repaired``: it came in answer to a repair announcement; ``held``: the order
        buffer held it back; ``topic``: a routed batch's (only the peers that want it
        are told of it); ``published``: when it was published, if known otherwise
        (a catch-up's, ``gossip.catchup``). ``now`` should not go backwards; if it does, the entry
        counts as arrived at the latest time seen (history stays in time order). When
        history is full, the oldest by publication go, and a batch older than all of
        them is not kept."""
        if self.max_batches <= 0:
            return
        size = len(batch.body) + ENTRY_OVERHEAD
        key = batch.origin + batch.id
        if size > self.max_bytes or key in self._entries:
            return
        now = max(now, self._last_time)
        self._last_time = now
        n = next(self._arrivals)
        age, rank = now, n
        run = self._runs.get(batch.origin) if seq else None
        if run is not None:
            age, rank = run.place(epoch, seq, now, n)
        if published is not None:
            age = min(age, published)
        while self._entries and (len(self._entries) >= self.max_batches
                                 or self.bytes + size > self.max_bytes):
            if (age, epoch, seq) < self._oldest()[:3]:
                self.evicted += 1  # older than everything kept: the first to go
                return
            self._pop_oldest()
            self.evicted += 1
        entry = Entry(batch, epoch, seq, now, size, from_peer, verified, id_range[0],
                      id_range[1], age=age, n=n, rank=rank, repaired=repaired, held=held,
                      topic=topic)
        self._entries[key] = entry
        self._order.append(entry)
        heapq.heappush(self._heap, (age, epoch, seq, next(self._tie), entry))
        if seq:
            self._runs.setdefault(batch.origin, _Run()).insert(entry)
        self.bytes += size
        self.expire(now)

    def remove(self, key: bytes) -> None:
        """Forget one batch (one that turned out to be forged)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._drop(entry)

    def expire(self, now: float) -> None:
        """Forget batches older than ``max_age`` (by their age of publication)."""
        limit = now - self.max_age
        while self._entries and self._oldest()[4].age <= limit:
            self._pop_oldest()

    def since(self, time: float) -> list[Entry]:
        """A snapshot of the entries that arrived at ``time`` or later, in arrival order
        (some may be ``gone`` by the time they are looked at). O(log n) to find, then a
        copy of the references."""
        order = self._order
        return order[bisect_left(order, time, key=_arrival):]

    def _oldest(self) -> tuple[float, int, int, int, Entry]:
        heap = self._heap
        while heap[0][4].gone:  # removed or dropped earlier
            heapq.heappop(heap)
        return heap[0]

    def _pop_oldest(self) -> None:
        self._drop(heapq.heappop(self._heap)[4])

    def _drop(self, entry: Entry) -> None:
        """Take ``entry`` out of history (its slots in the heap and the arrival order
        become holes, cleared when they outnumber the live entries)."""
        batch = entry.batch
        del self._entries[batch.origin + batch.id]
        entry.gone = True
        self.bytes -= entry.size
        if entry.seq:
            run = self._runs[batch.origin]
            run.remove(entry)
            if not run.entries:
                del self._runs[batch.origin]
        self._holes += 1
        live = len(self._entries)
        if self._holes > 64 and self._holes > live:
            self._order = [e for e in self._order if not e.gone]
            self._holes = 0
        if len(self._heap) > 2 * live + 64:
            self._heap = [h for h in self._heap if not h[4].gone]
            heapq.heapify(self._heap)

    def digest(self, max_bytes: int) -> list[DigestEntry]:
        """What history holds, per origin run, as ranges of sequence numbers. When that
        takes more than about ``max_bytes`` encoded (at most 50 bytes a run and 18 a
        range), the newest runs are described first and the rest left out (the peer may
        then be told of batches it has; it ignores those announcements)."""
        runs: dict[tuple[bytes, int], list[int]] = {}
        for entry in reversed(self._entries.values()):
            if entry.seq:
                runs.setdefault((entry.batch.origin, entry.epoch), []).append(entry.seq)
        out: list[DigestEntry] = []
        total = 16  # the message's own framing
        for (origin, epoch), seqs in runs.items():
            ranges = _ranges(sorted(seqs))
            total += 50 + 18 * (len(ranges) // 2)
            if total > max_bytes:
                break
            out.append(DigestEntry(origin, epoch, ranges))
        return out

    def missing_from(self, digest: list[DigestEntry]) -> list[Entry]:
        """The numbered entries a peer whose history is ``digest`` lacks, oldest first."""
        have: dict[tuple[bytes, int], tuple[list[int], list[int]]] = {}
        for d in digest:
            los, his = have.setdefault((d.origin, d.epoch), ([], []))
            for k in range(0, len(d.ranges) - 1, 2):
                los.append(d.ranges[k])
                his.append(d.ranges[k + 1])
        for los, his in have.values():
            order = sorted(range(len(los)), key=los.__getitem__)
            los[:] = [los[i] for i in order]
            his[:] = [his[i] for i in order]
        out = []
        for entry in self._entries.values():
            if not entry.seq:
                continue
            known = have.get((entry.batch.origin, entry.epoch))
            if known is not None:
                los, his = known
                i = bisect_right(los, entry.seq) - 1
                if i >= 0 and entry.seq <= his[i]:
                    continue
            out.append(entry)
        return out


def _ranges(seqs: list[int]) -> list[int]:
    """Sorted sequence numbers as a flat list of inclusive ranges."""
    out: list[int] = []
    for s in seqs:
        if out and s <= out[-1] + 1:
            out[-1] = max(out[-1], s)
        else:
            out += [s, s]
    return out


def merge_digests(first: list[DigestEntry], second: list[DigestEntry]) -> list[DigestEntry]:
    """Two digests as one (the union of their ranges, run by run; ``first``'s runs
    first)."""
    ranges: dict[tuple[bytes, int], list[int]] = {}
    for d in (*first, *second):
        ranges.setdefault((d.origin, d.epoch), []).extend(d.ranges)
    out = []
    for (origin, epoch), flat in ranges.items():
        pairs = sorted(zip(flat[::2], flat[1::2], strict=False))
        merged: list[int] = []
        for lo, hi in pairs:
            if merged and lo <= merged[-1] + 1:
                merged[-1] = max(merged[-1], hi)
            else:
                merged += [lo, hi]
        out.append(DigestEntry(origin, epoch, merged))
    return out


def _arrival(entry: Entry) -> float:
    return entry.time


def item_id_range(ids: list[bytes]) -> tuple[bytes, bytes]:
    """The lowest and highest of a batch's message ids (for ``History.add``)."""
    return (min(ids), max(ids)) if ids else ANY_ID
