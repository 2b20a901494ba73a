"""Recent batches a node keeps, to repair others and to replay to late apps.

The history is bounded three ways (batches, bytes, age), oldest first out. It
answers a ``Graft`` (send a batch we announced), builds the ``Digest`` a node
sends when a link opens, and finds what a peer's digest lacks (anti-entropy: the
repair after a partition heals or a peer restarts). Time is the caller's clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

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


_EVICTED = Entry(Batch(b"\0" * 16, b"\0" * 16, 0, b"\0" * 32, b"", b"\0" * 64),
                 0, 0, 0.0, 0, None, gone=True)


class History:
    """Keeps recent batches, at most ``max_batches``, ``max_bytes`` (bodies plus a fixed
    overhead each) and ``max_age`` seconds. A limit of 0 batches turns it off.

    Entries are kept in arrival order in a list as well as by key, so that the entries
    that came after a point in time are found by bisection (``since``), and a replay
    can take a snapshot of them (a slice: references, no copies of the batches).
    """

    def __init__(self, max_batches: int, max_bytes: int, max_age: float) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: dict[bytes, Entry] = {}
        # Arrival order: entries from ``_head`` on (some may be ``gone``, removed from
        # the middle); the slots before ``_head`` hold ``_EVICTED`` until compacted.
        self._order: list[Entry] = []
        self._head = 0
        self._removed = 0  # entries ``remove``d, still in ``_order`` past ``_head``
        self._last_time = float("-inf")
        self.bytes = 0
        self.evicted = 0  # batches dropped before their age because of the limits

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> Entry | None:
        return self._entries.get(key)

    def __iter__(self) -> Iterator[Entry]:
        """The entries, oldest first."""
        return (e for e in islice(self._order, self._head, None) if not e.gone)

    def add(self, batch: Batch, epoch: int, seq: int, now: float,
            from_peer: bytes | None, *, verified: bool = True,
            id_range: tuple[bytes, bytes] = ANY_ID) -> None:
        """Keep ``batch`` (a new one: its key is not in history yet). ``id_range``: the
        lowest and highest message id in it (``item_id_range``); by default, unknown.
        ``now`` should not go backwards; if it does, the entry counts as arrived at the
        latest time seen (history stays in time order)."""
        if self.max_batches <= 0:
            return
        size = len(batch.body) + ENTRY_OVERHEAD
        key = batch.origin + batch.id
        if size > self.max_bytes or key in self._entries:
            return
        while self._entries and (len(self._entries) >= self.max_batches
                                 or self.bytes + size > self.max_bytes):
            self._pop_oldest()
            self.evicted += 1
        now = max(now, self._last_time)
        self._last_time = now
        entry = Entry(batch, epoch, seq, now, size, from_peer, verified,
                      id_range[0], id_range[1])
        self._entries[key] = entry
        self._order.append(entry)
        self.bytes += size
        self.expire(now)

    def remove(self, key: bytes) -> None:
        """Forget one batch (one that turned out to be forged)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.gone = True
            self.bytes -= entry.size
            self._removed += 1
            if self._removed > 64 and self._removed > len(self._entries):
                # More holes than entries: compact, so the order list stays within twice
                # the history's bounds whatever is removed.
                self._order = [e for e in self._order[self._head:] if not e.gone]
                self._head = self._removed = 0

    def expire(self, now: float) -> None:
        """Forget batches older than ``max_age``."""
        limit = now - self.max_age
        while self._entries and self._oldest().time <= limit:
            self._pop_oldest()

    def since(self, time: float) -> list[Entry]:
        """A snapshot of the entries that arrived at ``time`` or later, oldest first
        (some may be ``gone`` by the time they are looked at). O(log n) to find, then a
        copy of the references."""
        order = self._order
        start = bisect_left(order, time, lo=self._head, key=_arrival)
        return order[start:]

    def _oldest(self) -> Entry:
        order = self._order
        while order[self._head].gone:  # removed from the middle earlier
            order[self._head] = _EVICTED
            self._head += 1
            self._removed -= 1
        return order[self._head]

    def _pop_oldest(self) -> None:
        entry = self._oldest()
        del self._entries[entry.batch.origin + entry.batch.id]
        entry.gone = True
        self.bytes -= entry.size
        self._order[self._head] = _EVICTED
        self._head += 1
        if self._head >= 1024 and self._head * 2 >= len(self._order):
            del self._order[:self._head]
            self._head = 0

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


def _arrival(entry: Entry) -> float:
    return entry.time


def item_id_range(ids: list[bytes]) -> tuple[bytes, bytes]:
    """The lowest and highest of a batch's message ids (for ``History.add``)."""
    return (min(ids), max(ids)) if ids else ANY_ID
