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

An ask can die on the way: a node on it crashes, or has no way on toward the origin
for a moment (its view of the mesh still has a link that just broke). Nobody answers
then, so the asker asks again while the batch has not come, up to ``retries`` times,
``retry`` seconds after the first ask and twice as long after each next one (0.25,
0.5, 1, 2 s: the first two within a stream's ``order_hold`` of 1 s, the last after
the views of the mesh have taken a crash in), toward the origin as its view of the
mesh is then. A node on the way that is asked again by a peer that waits already
asks on again (at most every ``retry / 2`` seconds): its own ask may be the one that
died.
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
    retried: int = 0  # ... asked for again: no answer came (``Fetches.retry``)
    asked_on: int = 0  # numbers asked on toward the origin for a peer
    answered: int = 0  # batches sent in answer to a Fetch (from history or passed back)
    refused: int = 0  # numbers not asked on: too many waiting, or no way to the origin


class Fetches:
    """This node's asks for stream gaps and the peers waiting on asks it passed on."""

    def __init__(self, delay: float, *, ttl: float = 2.0, max_waiting: int = 4096,
                 max_waiters: int = 8, retries: int = 4, retry: float = 0.25) -> None:
        self.delay = delay
        self.ttl = ttl
        self.retries = retries
        self.retry = retry
        self.max_waiting = max_waiting
        self.max_waiters = max_waiters
        self.stats = FetchStats()
        #: (due, wanted, peer to ask, asks sent before this one)
        self._asks: list[tuple[float, Wanted, bytes | None, int]] = []
        self._asked: set[Wanted] = set()
        #: wanted -> (until when, the peers waiting for it)
        self._waiting: OrderedDict[Wanted, tuple[float, list[bytes]]] = OrderedDict()

    def want(self, wanted: Wanted, peer: bytes | None, now: float) -> None:
        """This node lacks ``wanted``: ask ``peer`` (None: toward the origin) for it after
        ``delay``, unless that is asked already."""
        if wanted in self._asked or len(self._asked) >= self.max_waiting:
            return
        self._asked.add(wanted)
        heapq.heappush(self._asks, (now + self.delay, wanted, peer, 0))

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
            if peer in entry[1] and now >= entry[0] - self.ttl + self.retry / 2:
                # asked again (not at once): the ask on may have died on the way
                self._waiting[wanted] = (now + self.ttl, entry[1])
                self._waiting.move_to_end(wanted)
                self.stats.asked_on += 1
                return True
            if len(entry[1]) < self.max_waiters:
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
        asks = self._asks
        while asks and asks[0][1] not in self._asked:  # it came
            heapq.heappop(asks)
        return asks[0][0] if asks else None

    def due(self, now: float) -> list[tuple[Wanted, bytes | None]]:
        """The asks whose delay ran out and that are still wanted: (wanted, peer); each
        is asked again later (toward the origin) unless it comes meanwhile."""
        out = []
        asks = self._asks
        while asks and asks[0][0] <= now:
            _, wanted, peer, sent = heapq.heappop(asks)
            if wanted not in self._asked:
                continue  # it came
            out.append((wanted, peer))
            self.stats.asked += 1
            self.stats.retried += sent > 0
            if sent < self.retries:
                heapq.heappush(asks, (now + self.retry * 2 ** sent, wanted, None, sent + 1))
            else:
                self._asked.discard(wanted)
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
