"""``subscribe`` with ``since`` a message id, replayed from the message store
(docs/store.md, "Resuming with since").

The store gives every batch a position once, when the node first keeps it (``pos``),
and keeps it across restarts; a message id M finds its batch's position. The replay
after M holds, of what the node had stored or queued for the store when the app
subscribed:

- every batch placed after M's, and the rest of M's batch;
- the batches placed before M's whose age is at most the order buffer's hold before
  M's (they may have waited for an earlier batch of their origin, or for M, and been
  delivered after M; of M's origin, only those after M in its order): some of those
  the app may have seen.

If M is not stored (unknown, or removed by retention), the whole store is replayed
(``found`` False). It is handed out in each origin's order: the store is read in
chunks by position, and before a batch goes out, its origin's batches placed later
but numbered lower are fetched by the ``batches_run`` index and go first. The
origins are interleaved by position (a batch that came late goes with the first of
its origin's later batches to have come).

``StoreCursor`` runs in the store's worker thread (``StoreService.call``): a chunk of
rows per call, so memory stays bounded whatever the store's size; ``StoreReplay`` turns
the rows into events on the event loop, a budget of work at a time, like
``gossip.replay.Replay``.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable

from ..gossip.replay import ENTRY_COST, Held, Topics, hand_out
from ..wire.messages import Batch, BatchBody, Gossip
from .db import MessageStore, Row
from .reading import Key, decode_row, late_rows, lookback_rows, preceding, row_at

__all__ = ["StoreCursor", "StoreReplay", "covers"]

#: Rows read by position per call.
CHUNK = 256
#: Rows of one origin fetched ahead (placed later, numbered lower) per call at most.
PULL = 1024
#: Rows placed before M's looked at again (of other origins, up to ``hold`` older).
LOOKBACK = 4096
#: Seconds after a node's start within which a batch it placed may be one that came
#: again after a restart (a repaired batch is dated by its arrival when it is its
#: origin's newest: ``gossip.history``); a ``since`` such a batch replays what the
#: node placed since it started.
RESTART_WINDOW = 60.0


def _key(row: Row) -> Key:
    return (row.epoch, row.seq)


def covers(row: Row, msg_id: bytes) -> bool:
    """Whether message ``msg_id`` may be in ``row``'s batch (by its id range)."""
    return row.first_id <= msg_id <= row.last_id and row.first_id[:8] == msg_id[:8]


class StoreCursor:
    """The rows of a replay from the store, in replay order, a chunk per call.

    Args:
        after_id: M, the message id the app saw last.
        upto: the newest stored position when the app subscribed
            (``StoreService.stored_pos``).
        pending: the rows queued for the store then (``StoreService.pending_rows``):
            they come after ``upto``, in that order.
        hold: the order buffer's hold time, seconds.
    """

    def __init__(self, after_id: bytes, upto: int, pending: list[Row], hold: float) -> None:
        self.after_id = after_id
        self.upto = upto
        self.hold = hold
        self._pending = pending
        self.found: bool | None = None  # known after the first call
        self.start: Row | None = None  # M's batch, or its run's batch before it
        self.exact = False  # whether ``start`` holds M
        self._pos = 0  # rows up to this position were read
        self._high: dict[bytes, Key] = {}  # per origin, the highest handed out
        self._extra: list[Row] = []  # rows before M's to replay (with the first chunk)
        self._began = False
        self.exhausted = False

    def next_rows(self, store: MessageStore) -> list[Row]:
        """The next rows of the replay (empty: there are no more). Blocking I/O."""
        if not self._began:
            self._began = True
            self._begin(store)
        while not self.exhausted:
            fresh = self._read(store)
            chunk = self._extra + fresh
            if not chunk:
                self.exhausted = True
                break
            rows = self._order(store, chunk, max(self._pos, fresh[-1].pos if fresh else 0))
            if rows:
                return rows
        return []

    def _begin(self, store: MessageStore) -> None:
        pos = store.position_of(self.after_id)
        start = row_at(store, pos) if pos is not None and pos <= self.upto else None
        self.exact = start is not None
        if start is None:
            # Not stored, but maybe its run is: M came just before a crash, and was not
            # written (nor fetched again yet). Start after its run's batch before it.
            start = preceding(store, self.after_id)
            if start is not None and start.pos > self.upto:
                start = None
        self.found = start is not None
        if start is not None:
            self.start = start
            self._pos = start.pos
            if start.pos > store.boot_pos and start.age <= store.boot_time + RESTART_WINDOW:
                # M was placed in this run of the node, soon after it began: it may have
                # come again (through repair) after a restart, the app having got it
                # before. What this run placed before it may be new to the app too.
                self._pos = store.boot_pos
            self._extra = [start, *lookback_rows(store, start, self.hold, LOOKBACK)]

    def _read(self, store: MessageStore) -> list[Row]:
        """The next chunk by position, the store's then the queued rows."""
        if self._pos < self.upto:
            rows = [r for r in store.after(self._pos, CHUNK) if r.pos <= self.upto]
            if rows:
                return rows
            self._pos = self.upto
        first = self._pos - self.upto
        return [dataclasses.replace(row, pos=self.upto + 1 + first + i)
                for i, row in enumerate(self._pending[first:first + CHUNK])]

    def _order(self, store: MessageStore, chunk: list[Row], end: int) -> list[Row]:
        """Hand out ``chunk`` (rows read up to position ``end``) with its origins' rows
        placed after ``end`` but numbered lower, in each origin's order. If one origin
        has more of those than ``PULL``, only its rows up to there are handed out, and
        the chunk is read again next time."""
        groups: dict[bytes, dict[Key, Row]] = {}
        for row in chunk:
            high = self._high.get(row.origin)
            if high is None or _key(row) > high:
                groups.setdefault(row.origin, {}).setdefault(_key(row), row)
        pulled: dict[bytes, list[Row]] = {}
        for origin, rows in groups.items():
            # (not those in the chunk already: the rows before M's looked at again can
            # be placed after the chunk's end, when the replay starts before M)
            late = [r for r in self._late(store, origin, max(rows), end) if _key(r) not in rows]
            if len(late) >= PULL:  # more may come: up to the last pulled, then again
                cut = _key(late[-1])
                self._high[origin] = cut
                return _ranked([sorted([r for k, r in rows.items() if k <= cut] + late,
                                       key=_key)])
            pulled[origin] = late
        out = []
        for origin, rows in groups.items():
            self._high[origin] = max(rows)
            out.append(sorted([*rows.values(), *pulled[origin]], key=_key))
        self._extra = []
        self._pos = end
        return _ranked(out)

    def _late(self, store: MessageStore, origin: bytes, high: Key, end: int) -> list[Row]:
        """``origin``'s rows placed after ``end``, numbered above what was handed out and
        below ``high``, in its order (at most about ``PULL``)."""
        low = self._high.get(origin)
        rows = late_rows(store, origin, low, high, end, self.upto, PULL)
        if self._pending and len(rows) < PULL:
            first = max(end - self.upto, 0)
            for i, row in enumerate(self._pending[first:], first):
                if row.origin == origin and (low is None or _key(row) > low) and \
                        _key(row) < high:
                    rows.append(dataclasses.replace(row, pos=self.upto + 1 + i))
            rows.sort(key=_key)
            del rows[PULL:]
        return rows


def _ranked(groups: list[list[Row]]) -> list[Row]:
    """Rows of several origins, each group in its origin's order, interleaved by
    position: a row goes with the first placed of it and its origin's later rows."""
    keyed = []
    for rows in groups:
        rank = 1 << 62
        for row in reversed(rows):
            rank = min(rank, row.pos)
            keyed.append((rank, row.origin, _key(row), row))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


class StoreReplay:
    """A replay from the store (see the module's doc), handed out a step at a time.

    Args:
        call: runs a function in the store's worker thread (``StoreService.call``).
        store: the store.
        cursor: what to replay.
        topics: the topics wanted (empty: all but ``hidden_topic``).
        node_id: this node (direct messages to other nodes are not replayed).
        held: what the order buffer held when the app subscribed (delivered live later).
        hidden_topic: a topic never replayed.
    """

    def __init__(self, call: Callable[..., Awaitable[list[Row]]], store: MessageStore,
                 cursor: StoreCursor, *, topics: Topics, node_id: bytes, held: Held,
                 hidden_topic: str) -> None:
        self._call = call
        self._store = store
        self._cursor = cursor
        self._topics = topics
        self._node_id = node_id
        self._held = held
        self._hidden = hidden_topic
        self._rows: deque[Row] = deque()
        self._batch: Batch | None = None  # the batch being handed out ...
        self._body: BatchBody | None = None
        self._item = 0  # ... and its next item
        self._read_all = False
        self.done = False
        self.unreadable = 0  # stored batches that could not be decoded (skipped)

    @property
    def found(self) -> bool | None:
        """Whether M was stored (None until the first rows were read)."""
        return self._cursor.found

    @property
    def starved(self) -> bool:
        """Whether ``step`` has nothing to do until ``refill``."""
        return not self.done and self._body is None and not self._rows

    async def refill(self) -> None:
        """Read the next rows from the store (in its worker thread)."""
        rows = await self._call(self._cursor.next_rows, self._store)
        self._rows.extend(rows)
        if not rows:
            self._read_all = True
            self.done = self._body is None

    def step(self, budget: int) -> list[Gossip]:
        """The next messages, for about ``budget`` units of work (``gossip.replay``)."""
        out: list[Gossip] = []
        while budget > 0:
            if self._body is not None:
                budget -= self._hand_out(out, budget)
            elif self._rows:
                budget -= self._open(self._rows.popleft())
            else:
                self.done = self._read_all
                break
        return out

    def _open(self, row: Row) -> int:
        held = self._held.get(row.origin)
        if held is not None and (row.epoch, row.seq) in held:
            return ENTRY_COST  # it comes live, once its gap is filled or given up
        decoded = decode_row(row)
        if decoded is None:
            self.unreadable += 1
            return ENTRY_COST
        batch, body = decoded
        first = self._first_item(row, body)
        if first < len(body.items) and (body.to is None or body.to == self._node_id):
            self._batch, self._body, self._item = batch, body, first
        return ENTRY_COST + len(row.frame)

    def _first_item(self, row: Row, body: BatchBody) -> int:
        """The first item of ``row`` to hand out: after M in a batch of M's run (ids of
        a run grow with its numbers), but all of a batch of it numbered before M's
        and placed after it (delivered late, after M)."""
        cursor, target = self._cursor, self._cursor.after_id
        start = cursor.start
        if start is None or row.first_id[:8] != target[:8] or row.origin != start.origin:
            return 0
        if cursor.exact and row.pos > start.pos and _key(row) < _key(start):
            return 0
        return bisect_right([item.id for item in body.items], target)

    def _hand_out(self, out: list[Gossip], budget: int) -> int:
        body, batch = self._body, self._batch
        assert body is not None
        assert batch is not None
        self._item, spent = hand_out(out, batch, body, self._item, budget, self._topics,
                                     self._hidden)
        if self._item >= len(body.items):
            self._body = self._batch = None
            self.done = self._read_all and not self._rows
        return spent
