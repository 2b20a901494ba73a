"""Per-origin order: a node hands an origin's batches to apps in the order the origin
numbered them.

Each origin run (``epoch``) numbers its batches 1, 2, 3, ... A batch that comes
ahead of a missing one is held back for at most ``hold`` seconds, while repair
(a Graft, or the digest exchange when a link opens) may bring the missing one;
after that the gap is given up and reported (``gaps``), and the held batches go
out. A batch of a gap that turns up later is still delivered (``late``): order
gives way before loss does. A batch numbered below everything already handed
out that is not from a known gap is a replay and is dropped (``stale``). The
first batch seen of a run sets where the node starts; batches numbered below it
(older history, arriving later), and batches of an earlier run of the origin, are
delivered as they come for ``window`` seconds after the run was first seen (the
seen-cache's lifetime): such a batch arriving later is a replay, and is dropped.

Bounded: at most ``max_origins`` runs tracked (least recently used out), at most
``max_held`` batches held in all and ``max_held_per_origin`` per origin (past the
first limit, the origin holding the most gives up its first gap: one busy origin
cannot push out another's), at most ``max_gaps`` gap numbers kept per run.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Run(Generic[T]):
    epoch: int
    base: int  # the first sequence number this node saw of the run
    next: int  # the next number to hand out
    since: float = 0.0  # when this node first saw the run
    held: dict[int, tuple[T, float]] = field(default_factory=dict)  # seq -> (item, deadline)
    gaps: OrderedDict[int, None] = field(default_factory=OrderedDict)  # given-up numbers


@dataclass
class OrderStats:
    held: int = 0  # batches that waited for an earlier one
    gaps: int = 0  # sequence numbers given up (never came within the hold time)
    late: int = 0  # batches of a given-up gap that came later (delivered out of order)
    stale: int = 0  # replays of batches already handed out (dropped)
    recent_gaps: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    # (origin, epoch, first missing seq, last missing seq) of the last gaps given up


class OrderBuffer(Generic[T]):
    """Puts batches (any ``T``) of each origin run back in sequence order."""

    def __init__(self, hold: float, *, max_origins: int = 4096, max_held: int = 10_000,
                 max_held_per_origin: int = 1024, max_gaps: int = 1024,
                 window: float = 300.0) -> None:
        self.hold = hold
        self.window = window
        self.max_held_per_origin = max_held_per_origin
        self.max_origins = max_origins
        self.max_held = max_held
        self.max_gaps = max_gaps
        self._runs: OrderedDict[bytes, _Run[T]] = OrderedDict()
        self._holding: set[bytes] = set()  # origins with held batches
        self.held_count = 0
        #: Items released early for another origin (room was needed): the caller
        #: collects them with ``take_overflow``.
        self.overflow: list[T] = []
        self.stats = OrderStats()

    def add(self, origin: bytes, epoch: int, seq: int, item: T,
            now: float) -> tuple[bool, list[T]]:
        """A new batch. Returns (accepted, items now ready in order). ``accepted`` is
        False for a stale replay (drop it: do not forward it either)."""
        if seq == 0:
            return True, [item]
        runs = self._runs
        run = runs.get(origin)
        if run is None or epoch > run.epoch:
            out = self._release_all(origin, run) if run is not None else []
            run = runs[origin] = _Run(epoch, seq, seq, now)
            if len(runs) > self.max_origins:
                old_origin, old = runs.popitem(last=False)
                out += self._release_all(old_origin, old)
        else:
            runs.move_to_end(origin)
            out = []
            if epoch < run.epoch:  # a batch of an earlier run of the origin
                if now - run.since > self.window:
                    self.stats.stale += 1
                    return False, []
                return True, [item]
        if seq == run.next:
            out.append(item)
            run.next += 1
            self._drain(origin, run, out)
            return True, out
        if seq > run.next:
            if seq not in run.held:
                run.held[seq] = (item, now + self.hold)
                self.held_count += 1
                self.stats.held += 1
                self._holding.add(origin)
                if len(run.held) > self.max_held_per_origin:
                    self._give_up(origin, run, out)
                elif self.held_count > self.max_held:
                    # Full: the origin holding the most gives up its first gap.
                    most = max(self._holding, key=lambda o: len(self._runs[o].held))
                    if most == origin:
                        self._give_up(origin, run, out)
                    else:
                        self.overflow += self._release_first(most)
            return True, out
        if seq < run.base:
            if now - run.since > self.window:
                self.stats.stale += 1
                return False, []
            return True, [item]
        if seq in run.gaps:
            del run.gaps[seq]
            self.stats.late += 1
            return True, [item]
        self.stats.stale += 1
        return False, []

    def knows(self, origin: bytes) -> bool:
        """Whether a batch of ``origin`` was seen (and is still remembered)."""
        return origin in self._runs

    def is_held(self, origin: bytes, epoch: int, seq: int) -> bool:
        """Whether that batch is waiting for an earlier one (not handed out yet)."""
        run = self._runs.get(origin)
        return run is not None and run.epoch == epoch and seq in run.held

    def held_now(self) -> dict[bytes, tuple[int, frozenset[int]]]:
        """What is held at this moment: origin -> (epoch, the held sequence numbers).
        O(held batches); empty (and free) when nothing is held."""
        return {origin: (run.epoch, frozenset(run.held))
                for origin in self._holding if (run := self._runs[origin]).held}

    def next_deadline(self) -> float | None:
        """When ``tick`` will next have something to release (None: nothing held)."""
        best: float | None = None
        for origin in self._holding:
            run = self._runs[origin]
            first = run.held[min(run.held)][1]
            if best is None or first < best:
                best = first
        return best

    def tick(self, now: float) -> list[T]:
        """Give up the gaps that have been waited for ``hold`` seconds; returns the
        items that become ready."""
        out: list[T] = []
        for origin in list(self._holding):
            run = self._runs[origin]
            while run.held and run.held[min(run.held)][1] <= now:
                self._give_up(origin, run, out)
        return out

    def _release_first(self, origin: bytes) -> list[T]:
        out: list[T] = []
        self._give_up(origin, self._runs[origin], out)
        return out

    def take_overflow(self) -> list[T]:
        """Items another origin's batch forced out early (see ``add``)."""
        out, self.overflow = self.overflow, []
        return out

    def _give_up(self, origin: bytes, run: _Run[T], out: list[T]) -> None:
        """Skip the gap before the lowest held batch and release what follows it."""
        first = min(run.held)
        stats = self.stats
        stats.gaps += first - run.next
        stats.recent_gaps.append((origin, run.epoch, run.next, first - 1))
        del stats.recent_gaps[:-16]
        for seq in range(max(run.next, first - self.max_gaps), first):
            run.gaps[seq] = None
        while len(run.gaps) > self.max_gaps:
            run.gaps.popitem(last=False)
        run.next = first
        self._drain(origin, run, out)

    def _drain(self, origin: bytes, run: _Run[T], out: list[T]) -> None:
        held = run.held
        while run.next in held:
            out.append(held.pop(run.next)[0])
            self.held_count -= 1
            run.next += 1
        if not held:
            self._holding.discard(origin)

    def _release_all(self, origin: bytes, run: _Run[T]) -> list[T]:
        out: list[T] = []
        while run.held:
            self._give_up(origin, run, out)
        self._holding.discard(origin)
        return out
