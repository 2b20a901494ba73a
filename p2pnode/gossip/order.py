"""Per-origin order: a node hands an origin's batches to apps in the order the origin
numbered them.

Each origin run (``epoch``) numbers its batches 1, 2, 3, ... A batch that comes
ahead of a missing one is held back for ``hold`` seconds, while repair (a Graft, or
the digest exchange when a link opens) may bring the missing one, and for as long as
the missing ones keep coming, each within ``hold`` of the one before, or while
batches of the origin that were announced are being fetched, or when the gap is
``LONG_GAP`` numbers or more (a repair of a partition's messages under way: at most
``LONGEST_HOLD`` times ``hold``); after that the gap is given up and reported
(``gaps``), and the held batches go out. A batch of a gap that turns up later is
still delivered (``late``): order gives way before loss does. A batch numbered below
everything already handed out that is not from a known gap is a replay and is
dropped (``stale``). The first batch seen of a run sets where the node starts;
batches numbered below it (older history, arriving later), and batches of the
origin's previous run, are delivered as they come, each once, for ``window`` seconds
after the run was first seen (the seen-cache's lifetime): such a batch arriving
later is a replay, and is dropped, and so is a batch of any run before the previous
one. A batch of a newer run that comes while the current one waits for a gap (the
origin restarted: what it had not sent before it stopped comes by repair, from its
store) waits behind the gap, which gets ``hold`` more seconds; then the newer run
goes on, so the origin's order holds across its restart. A newer run of a known
origin begins at 1 (if its first batch seen is numbered at most ``max_gaps`` + 1):
what the origin published before this node got that batch is held for, like any gap.

Replay protection does not lean on the seen-cache, which a flood can flush: each
run remembers exactly which numbers it handed out (a contiguous range, the gaps in
it, and a few ranges outside it), so a replay of a tracked run is dropped however
long ago its copy left the seen-cache.

Bounded: at most ``max_origins`` runs tracked, each charged to the peer that brought
it (``owner``: the peer that brought its first batch, or the origin itself once it
sends one straight): a peer's runs past ``max_origins_per_owner`` make room among
its own runs (least recently active out), and when the whole table is full the
owner with the most runs gives one up. A member that makes up origins therefore
pushes out only the runs it brought. At most ``max_held`` batches held in all and
``max_held_per_origin`` per origin (past the first limit, the origin holding the
most gives up its first gap: one busy origin cannot push out another's), at most
``max_gaps`` gap numbers and ``max_ranges`` ranges outside the contiguous one kept
per run.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Generic, TypeVar

T = TypeVar("T")

#: A gap whose origin's batches are being fetched (repair) is held at most this many
#: times ``hold``.
LONGEST_HOLD = 10
#: A gap of this many numbers or more is not a lost batch but a partition or a restart
#: of the origin: it is held as long as one being fetched.
LONG_GAP = 16


@dataclass(slots=True)
class _Run(Generic[T]):
    epoch: int
    base: int  # the first sequence number this node saw of the run
    next: int  # the next number to hand out
    since: float = 0.0  # when this node first saw the run
    held: dict[int, tuple[T, float]] = field(default_factory=dict)  # seq -> (item, deadline)
    #: When a missing batch last came while later ones were held: a gap that is being
    #: filled (a repair under way) is not given up before ``hold`` after that.
    progress: float = float("-inf")
    gaps: OrderedDict[int, None] = field(default_factory=OrderedDict)  # given-up numbers
    #: Numbers handed out outside [base, next), as sorted disjoint [low, high] ranges:
    #: older history that came after the run's first batch.
    extra: list[list[int]] = field(default_factory=list)
    owner: bytes | None = None  # the peer this run is charged to
    prev: _Run[T] | None = None  # the origin's previous run (its batches may still come)
    #: Batches of the origin's next run that came while this one still waited for a
    #: gap, in the order they came: (epoch, seq) -> (item, owner, when). They go on once
    #: the gap is filled or given up.
    deferred: dict[tuple[int, int], tuple[T, bytes | None, float]] = field(
        default_factory=dict)

    def take_once(self, seq: int, max_ranges: int) -> bool:
        """Record ``seq`` as handed out outside the ordered path; False if it was
        already (a replay). Past ``max_ranges`` ranges, the two lowest merge: the
        numbers between them count as handed out."""
        if self.base <= seq < self.next:
            if seq in self.gaps:
                del self.gaps[seq]
                return True
            return False
        extra = self.extra
        i = bisect_right(extra, [seq, 1 << 64])  # the ranges starting at or below seq
        if i and extra[i - 1][1] >= seq:
            return False
        joins_left = bool(i) and extra[i - 1][1] == seq - 1
        joins_right = i < len(extra) and extra[i][0] == seq + 1
        if joins_left and joins_right:
            extra[i - 1][1] = extra.pop(i)[1]
        elif joins_left:
            extra[i - 1][1] = seq
        elif joins_right:
            extra[i][0] = seq
        else:
            extra.insert(i, [seq, seq])
            if len(extra) > max_ranges:
                extra[0][1] = extra.pop(1)[1]
        return True


@dataclass
class OrderStats:
    held: int = 0  # batches that waited for an earlier one
    gaps: int = 0  # sequence numbers given up (never came within the hold time)
    late: int = 0  # batches of a given-up gap that came later (delivered out of order)
    stale: int = 0  # replays of batches already handed out (dropped)
    forgotten: int = 0  # runs forgotten to make room (their owner brought too many)
    recent_gaps: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    # (origin, epoch, first missing seq, last missing seq) of the last gaps given up


class OrderBuffer(Generic[T]):
    """Puts batches (any ``T``) of each origin run back in sequence order."""

    def __init__(self, hold: float, *, max_origins: int = 16_384,
                 max_origins_per_owner: int = 4096, max_held: int = 10_000,
                 max_held_per_origin: int = 4096, max_gaps: int = 1024, max_ranges: int = 64,
                 window: float = 300.0) -> None:
        self.hold = hold
        self.window = window
        self.max_held_per_origin = max_held_per_origin
        self.max_origins = max_origins
        self.max_origins_per_owner = max_origins_per_owner
        self.max_ranges = max_ranges
        self.max_held = max_held
        self.max_gaps = max_gaps
        self._runs: OrderedDict[bytes, _Run[T]] = OrderedDict()
        # owner -> its runs' origins, least recently active first
        self._owned: dict[bytes | None, OrderedDict[bytes, None]] = {}
        self._holding: set[bytes] = set()  # origins with held batches
        self.held_count = 0
        #: Items released early for another origin (room was needed): the caller
        #: collects them with ``take_overflow``.
        self.overflow: list[T] = []
        self.stats = OrderStats()

    def add(self, origin: bytes, epoch: int, seq: int, item: T, now: float,
            owner: bytes | None = None) -> tuple[bool, list[T]]:
        """A new batch. Returns (accepted, items now ready in order). ``accepted`` is
        False for a stale replay (drop it: do not forward it either). ``owner`` is the
        peer that brought it (None: not charged to a peer)."""
        if seq == 0:
            return True, [item]
        run = self._runs.get(origin)
        out: list[T] = []
        if run is not None and epoch > run.epoch and (run.held or run.deferred):
            return True, self._defer(origin, run, (epoch, seq), (item, owner, now))
        if run is None or epoch > run.epoch:
            start = seq
            if run is not None:
                out = self._release_all(origin, run)
                run.prev = None  # only the previous run is remembered
                if seq <= self.max_gaps + 1:
                    # A known origin restarted: its new run begins at 1, and what it
                    # published before this node got its first batch comes by repair.
                    start = 1
            run = self._new_run(origin, _Run(epoch, start, start, now, owner=owner, prev=run),
                                out)
        else:
            self._touch(origin, run, owner)
            if epoch < run.epoch:
                prev = run.prev
                if (prev is None or prev.epoch != epoch or now - run.since > self.window
                        or not prev.take_once(seq, self.max_ranges)):
                    self.stats.stale += 1
                    return False, []
                return True, [item]
        if seq == run.next:
            out.append(item)
            run.next += 1
            if run.held:
                run.progress = now
            self._drain(origin, run, out)
            return True, out
        if seq > run.next:
            self._hold(origin, run, seq, item, now, out)
            return True, out
        late = seq in run.gaps
        if (seq >= run.base or now - run.since <= self.window) and run.take_once(
                seq, self.max_ranges):
            if late:
                self.stats.late += 1
            return True, [item]
        self.stats.stale += 1
        return False, []

    def _defer(self, origin: bytes, run: _Run[T], key: tuple[int, int],
               entry: tuple[T, bytes | None, float]) -> list[T]:
        """A batch of a newer run of ``origin`` while ``run`` waits for a gap: the origin
        restarted, and what it had not sent before it stopped comes now, by repair
        (from its store, or a peer). The batch waits behind the gap, which gets ``hold``
        more seconds from now; past the origin's limit of held batches, the gap is
        given up at once."""
        if key in run.deferred:
            return []
        now = entry[2]
        if not run.deferred:
            for number, (held, deadline) in run.held.items():
                run.held[number] = (held, max(deadline, now + self.hold))
        run.deferred[key] = entry
        self.held_count += 1
        self.stats.held += 1
        out: list[T] = []
        if len(run.held) + len(run.deferred) > self.max_held_per_origin:
            while run.held:
                self._give_up(origin, run, out)
        return out

    def _go_on(self, origin: bytes, run: _Run[T], out: list[T]) -> None:
        """``run``'s gap is filled or given up: the newer run's batches that waited go
        on, as if they came now, in the order they came."""
        deferred, run.deferred = run.deferred, {}
        self.held_count -= len(deferred)
        for (epoch, seq), (item, owner, when) in deferred.items():
            out += self.add(origin, epoch, seq, item, when, owner)[1]

    def seed(self, origin: bytes, epoch: int, ranges: list[tuple[int, int]], now: float) -> None:
        """A restarted node had these numbers of ``origin``'s run ``epoch`` (its store;
        ``ranges``: sorted, disjoint, inclusive): the run continues after the highest,
        and the numbers missing between them are gaps (a copy that comes later is taken
        once; at most ``max_gaps`` of the highest, older missing numbers count as
        handed out). A batch numbered below the lowest, or of an earlier run, is stale:
        the node handed out (and stored) what it got of them before the restart.
        Ignored if a newer run is known."""
        if not ranges:
            return
        run = self._runs.get(origin)
        if run is not None and run.epoch >= epoch:
            return
        low, high = ranges[0][0], ranges[-1][1]
        seeded = self._new_run(origin, _Run(epoch, low, high + 1, float("-inf")), [])
        floor = high - self.max_gaps
        for (_lo, hi), (lo, _hi) in pairwise(ranges):
            for seq in range(max(hi + 1, floor), lo):
                seeded.gaps[seq] = None

    def _hold(self, origin: bytes, run: _Run[T], seq: int, item: T, now: float,
              out: list[T]) -> None:
        if seq in run.held:
            return
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

    def _new_run(self, origin: bytes, run: _Run[T], out: list[T]) -> _Run[T]:
        """Track ``run`` (replacing the origin's earlier one); make room if needed."""
        self._disown(origin)
        self._runs[origin] = run
        owned = self._owned.setdefault(run.owner, OrderedDict())
        owned[origin] = None
        if len(owned) > self.max_origins_per_owner:
            self._forget(next(iter(owned)), out)
        if len(self._runs) > self.max_origins:
            # The owner with the most runs gives up its least recently active one.
            most = max(self._owned.values(), key=len)
            self._forget(next(iter(most)), out)
        return run

    def _touch(self, origin: bytes, run: _Run[T], owner: bytes | None) -> None:
        """``run`` is active: most recently used; a batch straight from its origin
        charges it to the origin itself."""
        self._runs.move_to_end(origin)
        if owner == origin and run.owner != origin:
            self._disown(origin)
            run.owner = origin
            self._owned.setdefault(origin, OrderedDict())[origin] = None
        else:
            self._owned[run.owner].move_to_end(origin)

    def _disown(self, origin: bytes) -> None:
        run = self._runs.get(origin)
        if run is None:
            return
        owned = self._owned[run.owner]
        del owned[origin]
        if not owned:
            del self._owned[run.owner]

    def _forget(self, origin: bytes, out: list[T]) -> None:
        run = self._runs[origin]
        out += self._release_all(origin, run)
        self._disown(origin)
        del self._runs[origin]
        self.stats.forgotten += 1

    @property
    def tracked(self) -> int:
        """How many origin runs are tracked."""
        return len(self._runs)

    def owned_by(self, owner: bytes | None) -> int:
        """How many tracked runs are charged to ``owner``."""
        return len(self._owned.get(owner, ()))

    def knows(self, origin: bytes) -> bool:
        """Whether a batch of ``origin`` was seen (and is still remembered)."""
        return origin in self._runs

    def is_held(self, origin: bytes, epoch: int, seq: int) -> bool:
        """Whether that batch is waiting for an earlier one (not handed out yet)."""
        run = self._runs.get(origin)
        if run is None:
            return False
        if run.epoch == epoch:
            return seq in run.held
        return (epoch, seq) in run.deferred

    def held_now(self) -> dict[bytes, frozenset[tuple[int, int]]]:
        """What is held at this moment: origin -> its held batches, (epoch, seq).
        O(held batches); empty (and free) when nothing is held."""
        return {origin: frozenset([(run.epoch, seq) for seq in run.held] + [*run.deferred])
                for origin in self._holding if (run := self._runs[origin]).held}

    def _deadline(self, origin: bytes, run: _Run[T],
                  fetching: Callable[[bytes], bool] | None) -> float:
        """When ``run``'s first gap is given up: ``hold`` after its first held batch came
        and after a missing one last came; up to ``LONGEST_HOLD`` times ``hold`` while
        ``fetching(origin)`` (a repair of the origin's batches is under way) or when the
        gap is ``LONG_GAP`` numbers or more (a partition, or an origin's restart: the
        missing ones come by repair, maybe over several hops)."""
        low = min(run.held)
        first = run.held[low][1]
        due = max(first, run.progress + self.hold)
        if low - run.next >= LONG_GAP or (fetching is not None and fetching(origin)):
            due = max(due, first + (LONGEST_HOLD - 1) * self.hold)
        return due

    def next_deadline(self, fetching: Callable[[bytes], bool] | None = None) -> float | None:
        """When ``tick`` will next have something to release (None: nothing held)."""
        return min((self._deadline(origin, self._runs[origin], fetching)
                    for origin in self._holding), default=None)

    def tick(self, now: float, fetching: Callable[[bytes], bool] | None = None) -> list[T]:
        """Give up the gaps that have been waited for long enough (``_deadline``);
        returns the items that become ready."""
        out: list[T] = []
        for origin in list(self._holding):
            run = self._runs[origin]
            while run.held and self._deadline(origin, run, fetching) <= now:
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
            if run.deferred:
                self._go_on(origin, run, out)

    def _release_all(self, origin: bytes, run: _Run[T]) -> list[T]:
        """Everything ``run`` holds, and then the newer run's batches that waited behind
        it, as they are (the origin is being forgotten)."""
        deferred, run.deferred = run.deferred, {}
        self.held_count -= len(deferred)
        out: list[T] = []
        while run.held:
            self._give_up(origin, run, out)
        self._holding.discard(origin)
        return out + [item for item, _owner, _when in deferred.values()]
