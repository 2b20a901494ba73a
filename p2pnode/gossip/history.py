"""Recent batches a node keeps, to repair others and to replay to late apps.

The history is bounded three ways (batches, bytes, age), oldest first out. It
answers a ``Graft`` (send a batch we announced), builds the ``Digest`` a node
sends when a link opens, and finds what a peer's digest lacks (anti-entropy: the
repair after a partition heals or a peer restarts). Time is the caller's clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from ..wire.messages import Batch, DigestEntry

ENTRY_OVERHEAD = 200  # bytes of bookkeeping counted per batch on top of its body


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


class History:
    """Keeps recent batches, at most ``max_batches``, ``max_bytes`` (bodies plus a fixed
    overhead each) and ``max_age`` seconds. A limit of 0 batches turns it off."""

    def __init__(self, max_batches: int, max_bytes: int, max_age: float) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
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
        return iter(self._entries.values())

    def add(self, batch: Batch, epoch: int, seq: int, now: float,
            from_peer: bytes | None, *, verified: bool = True) -> None:
        """Keep ``batch`` (a new one: its key is not in history yet)."""
        if self.max_batches <= 0:
            return
        size = len(batch.body) + ENTRY_OVERHEAD
        key = batch.origin + batch.id
        if size > self.max_bytes or key in self._entries:
            return
        entries = self._entries
        while entries and (len(entries) >= self.max_batches
                           or self.bytes + size > self.max_bytes):
            _, old = entries.popitem(last=False)
            self.bytes -= old.size
            self.evicted += 1
        entries[key] = Entry(batch, epoch, seq, now, size, from_peer, verified)
        self.bytes += size
        self.expire(now)

    def remove(self, key: bytes) -> None:
        """Forget one batch (one that turned out to be forged)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def expire(self, now: float) -> None:
        """Forget batches older than ``max_age``."""
        entries = self._entries
        limit = now - self.max_age
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.time > limit:
                return
            entries.popitem(last=False)
            self.bytes -= oldest.size

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
