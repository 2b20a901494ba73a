"""Order per stream, for origins in interest mode (docs/interest.md).

A node that gets only the batches it wants sees gaps in an origin's ``seq`` that are
no loss. Such an origin links each batch to the one before it in the same *stream*
(``BatchBody.tprev``: one stream per routed topic, and one for everything else), and
``StreamOrder`` puts each stream back in order by those links:

- the first batch of a stream that this node sees starts it (as an origin run does in
  ``order.OrderBuffer``: a node that joins late does not wait for what came before),
  unless the node's subscription to its topic just began (``add``'s ``wait``): then it
  waits for the one it follows, which catch-up (``catchup``) brings if it was
  published since, or says was published before (``skip``); and unless this node knew
  an earlier run of the origin's stream (the origin restarted: what it published
  since is waited for, as a gap); a restarted node's streams go on from the last
  batch of each in its store (``seed``);
- a batch whose ``tprev`` is the last one delivered of its stream (or 0: the first,
  or one the origin forgot) goes out, and so do the held batches that follow it;
- a batch whose ``tprev`` has not come is held, ``hold`` seconds at most; then the
  missing one is given up (``gaps``) and the held batches go out in ``seq`` order;
- a batch older than the last one delivered (it came late, or by repair) goes out as
  it comes (``late``): order gives way before loss does. Duplicates never get here
  (the seen-cache drops them).

Bounds: ``max_streams`` streams (least recently used forgotten first: a forgotten
stream starts again), ``max_held`` batches held in all (over that, the stream holding
the most gives up its gap).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

StreamKey = tuple[bytes, int, str | None]  # origin, epoch, topic (None: broadcast)


@dataclass
class StreamStats:
    """Counters of ``StreamOrder``."""

    held: int = 0  # batches that waited for an earlier one of their stream
    gaps: int = 0  # batches given up (never came within the hold)
    late: int = 0  # batches older than their stream's last one, delivered as they came
    forgotten: int = 0  # streams forgotten to make room


@dataclass
class _Stream(Generic[T]):
    last: int  # seq of the last batch delivered
    #: held batches by the seq they wait for: (their seq, the item)
    held: dict[int, tuple[int, T]] = field(default_factory=dict)
    deadline: float = 0.0  # when the first of ``held`` stops waiting


class StreamOrder(Generic[T]):
    """Each stream's batches in order; see the module's doc."""

    def __init__(self, hold: float, *, max_streams: int = 65_536,
                 max_held: int = 10_000) -> None:
        self.hold = hold
        self.max_streams = max_streams
        self.max_held = max_held
        self.stats = StreamStats()
        self._streams: OrderedDict[StreamKey, _Stream[T]] = OrderedDict()
        #: (origin, topic) -> the newest run of the origin seen with a stream on it
        #: (at most ``max_streams``, the oldest noted out first).
        self._runs: dict[tuple[bytes, str | None], int] = {}
        self._origins: dict[bytes, int] = {}  # origin -> how many of its streams are kept
        self._held = 0

    def __len__(self) -> int:
        return len(self._streams)

    def knows(self, origin: bytes) -> bool:
        """Whether a stream of ``origin`` is kept (a batch of it was seen)."""
        return origin in self._origins

    @property
    def held_count(self) -> int:
        """Batches held in all."""
        return self._held

    def add(self, key: StreamKey, seq: int, tprev: int, item: T, now: float, *,
            wait: bool = False) -> list[T]:
        """Batch ``seq`` of stream ``key``, linked to ``tprev``: what can go out now.
        ``wait``: if it is the first of its stream seen, it waits (``hold`` at most) for
        the one it follows (a subscription that just began: what was published since
        comes by catch-up, ``catchup``)."""
        stream = self._streams.get(key)
        if stream is None:
            wait = bool(tprev) and (wait or self._restarted(key))
            stream = self._new(key, 0 if wait else seq)
            out = self._forget_oldest() if len(self._streams) > self.max_streams else []
            if wait:
                return out + self._hold(stream, seq, tprev, item, now)
            return [item, *out]
        self._streams.move_to_end(key)
        if seq < stream.last:
            self.stats.late += 1
            return [item]
        if tprev == 0 or tprev <= stream.last:
            out = [item]
            stream.last = max(stream.last, seq)
            self._drain(stream, out)
            return out
        return self._hold(stream, seq, tprev, item, now)

    def _hold(self, stream: _Stream[T], seq: int, tprev: int, item: T,
              now: float) -> list[T]:
        if not stream.held:
            stream.deadline = now + self.hold
        stream.held[tprev] = (seq, item)
        self._held += 1
        self.stats.held += 1
        if self._held > self.max_held:
            return self._give_up(self._fullest())
        return []

    def _restarted(self, key: StreamKey) -> bool:
        """Whether an earlier run of ``key``'s origin had a stream on its topic."""
        return self._runs.get((key[0], key[2]), key[1]) < key[1]

    def _new(self, key: StreamKey, last: int) -> _Stream[T]:
        stream = self._streams[key] = _Stream(last)
        self._origins[key[0]] = self._origins.get(key[0], 0) + 1
        runs, run = self._runs, (key[0], key[2])
        runs.pop(run, None)
        runs[run] = max(key[1], runs.get(run, 0))
        if len(runs) > self.max_streams:
            del runs[next(iter(runs))]
        return stream

    def seed(self, key: StreamKey, seq: int) -> None:
        """This node had batch ``seq`` of stream ``key`` before it restarted (its store):
        the stream goes on from there."""
        stream = self._streams.get(key)
        if stream is None:
            self._new(key, seq)
            if len(self._streams) > self.max_streams:
                self._forget_oldest()
        elif seq > stream.last:
            stream.last = seq

    def started(self, key: StreamKey) -> bool:
        """Whether stream ``key`` has delivered a batch (not waiting for its start)."""
        stream = self._streams.get(key)
        return stream is not None and stream.last > 0

    def skip(self, key: StreamKey, seq: int) -> list[T]:
        """Batch ``seq`` of stream ``key`` is not delivered here (published before this
        node's subscription began), but what follows it may go out: what can now."""
        stream = self._streams.get(key)
        if stream is None:
            self._new(key, seq)
            return self._forget_oldest() if len(self._streams) > self.max_streams else []
        out: list[T] = []
        if seq > stream.last:
            stream.last = seq
            self._drain(stream, out)
        return out

    def _drain(self, stream: _Stream[T], out: list[T]) -> None:
        """Send on the held batches that follow the last one delivered."""
        while stream.last in stream.held:
            seq, item = stream.held.pop(stream.last)
            self._held -= 1
            out.append(item)
            stream.last = seq

    def _give_up(self, stream: _Stream[T]) -> list[T]:
        """Stop waiting for the first missing batch of ``stream``: its held batch with
        the lowest number goes out, and what follows it."""
        if not stream.held:
            return []
        wait = min(stream.held)
        seq, item = stream.held.pop(wait)
        self._held -= 1
        self.stats.gaps += 1
        out = [item]
        stream.last = seq
        self._drain(stream, out)
        if stream.held:
            stream.deadline = stream.deadline + self.hold
        return out

    def _fullest(self) -> _Stream[T]:
        return max(self._streams.values(), key=lambda s: len(s.held))

    def _forget_oldest(self) -> list[T]:
        """Forget the least recently used stream; its held batches go out, in order."""
        (origin, _, _), stream = self._streams.popitem(last=False)
        if self._origins[origin] == 1:
            del self._origins[origin]
        else:
            self._origins[origin] -= 1
        self._held -= len(stream.held)
        self.stats.forgotten += 1
        return [item for _, item in sorted(stream.held.values(), key=lambda held: held[0])]

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to give up (None: nothing is held)."""
        if not self._held:
            return None
        return min(s.deadline for s in self._streams.values() if s.held)

    def tick(self, now: float) -> list[T]:
        """Give up the gaps whose hold ran out; what goes out because of it."""
        out: list[T] = []
        if not self._held:
            return out
        for stream in self._streams.values():
            while stream.held and stream.deadline <= now:
                out += self._give_up(stream)
        return out
