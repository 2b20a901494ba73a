"""Stream gaps fetched toward their origin (interest mode, docs/interest.md).

In interest mode a node hears of a routed batch only from the nodes that want it, so
a batch lost on the way (a node of the tree crashed, a link broke) may be announced to
it by nobody. The gap shows in the stream's ``tprev`` links (``streams.StreamOrder``
holds what follows it), and names the missing batch exactly: origin, run, number. The
node asks for it with a ``Fetch``, after ``delay`` (it may just be on its way), from
the peer that brought the batch after it; a node that does not have it either asks on
toward the origin and passes the answer back. ``Fetches`` keeps both: this node's own
asks, and the peers waiting for an answer it asked on for (at most ``max_waiting``
numbers, ``max_waiters`` peers each, each wait ``ttl`` seconds).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

from ..wire.messages import MAX_FETCH, Fetch

Wanted = tuple[bytes, int, int]  # origin, epoch, seq


@dataclass
class FetchStats:
    """Counters of stream repair (batches)."""

    asked: int = 0  # numbers this node asked for (its own gaps)
    asked_on: int = 0  # numbers asked on toward the origin for a peer
    answered: int = 0  # batches sent in answer to a Fetch (from history or passed back)
    refused: int = 0  # numbers not asked on: too many waiting, or no way to the origin


class Fetches:
    """This node's asks for stream gaps and the peers waiting on asks it passed on."""

    def __init__(self, delay: float, *, ttl: float = 2.0, max_waiting: int = 4096,
                 max_waiters: int = 8) -> None:
        self.delay = delay
        self.ttl = ttl
        self.max_waiting = max_waiting
        self.max_waiters = max_waiters
        self.stats = FetchStats()
        self._asks: list[tuple[float, Wanted, bytes | None]] = []  # (due, wanted, peer)
        self._asked: set[Wanted] = set()
        #: wanted -> (until when, the peers waiting for it)
        self._waiting: OrderedDict[Wanted, tuple[float, list[bytes]]] = OrderedDict()

    def want(self, wanted: Wanted, peer: bytes | None, now: float) -> None:
        """This node lacks ``wanted``: ask ``peer`` (None: toward the origin) for it after
        ``delay``, unless that is asked already."""
        if wanted in self._asked or len(self._asked) >= self.max_waiting:
            return
        self._asked.add(wanted)
        heapq.heappush(self._asks, (now + self.delay, wanted, peer))

    def got(self, wanted: Wanted) -> list[bytes]:
        """``wanted`` came: the peers waiting for it (this node's own ask is done)."""
        self._asked.discard(wanted)
        entry = self._waiting.pop(wanted, None)
        return entry[1] if entry is not None else []

    def wait(self, wanted: Wanted, peer: bytes, now: float) -> bool:
        """``peer`` asked for ``wanted``, which this node does not have: note it. True if
        this node should ask on toward the origin (nobody asked for it here yet)."""
        entry = self._waiting.get(wanted)
        if entry is not None and entry[0] > now:
            if peer not in entry[1] and len(entry[1]) < self.max_waiters:
                entry[1].append(peer)
            return False
        self._expire(now)
        if len(self._waiting) >= self.max_waiting:
            self.stats.refused += 1
            return False
        self._waiting[wanted] = (now + self.ttl, [peer])
        self.stats.asked_on += 1
        return True

    def _expire(self, now: float) -> None:
        waiting = self._waiting
        while waiting:
            wanted, (until, _) = next(iter(waiting.items()))
            if until > now:
                return
            del waiting[wanted]

    def next_deadline(self) -> float | None:
        """When ``due`` next has an ask to send (None: none)."""
        return self._asks[0][0] if self._asks else None

    def due(self, now: float) -> list[tuple[Wanted, bytes | None]]:
        """The asks whose delay ran out and that are still wanted: (wanted, peer)."""
        out = []
        while self._asks and self._asks[0][0] <= now:
            _, wanted, peer = heapq.heappop(self._asks)
            if wanted in self._asked:
                self._asked.discard(wanted)
                out.append((wanted, peer))
                self.stats.asked += 1
        return out


def fetch_messages(asks: list[tuple[Wanted, bytes]]) -> dict[bytes, list[Fetch]]:
    """``Fetch`` messages for ``asks`` (wanted, peer to ask), per peer, grouped by run."""
    runs: dict[tuple[bytes, bytes, int], list[int]] = {}
    for (origin, epoch, seq), peer in asks:
        runs.setdefault((peer, origin, epoch), []).append(seq)
    out: dict[bytes, list[Fetch]] = {}
    for (peer, origin, epoch), seqs in runs.items():
        seqs.sort()
        out.setdefault(peer, []).extend(
            Fetch(origin, epoch, seqs[i:i + MAX_FETCH]) for i in range(0, len(seqs), MAX_FETCH))
    return out
