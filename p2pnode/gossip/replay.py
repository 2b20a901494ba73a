"""Replaying history to a late app (``subscribe`` with ``since``), a slice at a time.

A ``Replay`` works on a snapshot of history taken when the app subscribed (a list
of entries: references, not copies) and on what the order buffer held at that
moment, so that it replays exactly the messages delivered before the subscription,
however long it takes: the caller hands it a budget of work per step and lets other
tasks run between steps. Its cost is bounded by the snapshot: a message id is found
by its batch's id range (only batches whose range covers it are decoded), only the
batches after the start are decoded, and only the messages of the wanted topics are
made into events. No I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Protocol

from ..wire.messages import Batch, BatchBody, Gossip, decode_kept_body
from ..wire.requests import REQUEST_TOPIC
from .history import Entry, History

# Budget units: about a nanosecond of work on the machine of docs/performance.md,
# where decoding a body costs about a unit per byte.
#: Per entry opened or decoded, besides its body's length.
ENTRY_COST = 512
#: Per entry skipped in the search for an id by its id range alone.
SCAN_COST = 128
#: Per message handed out, besides its payload (making it into an event).
ITEM_COST = 128

Held = dict[bytes, frozenset[tuple[int, int]]]  # origin -> (epoch, seq) held


class Topics(Protocol):
    """The topics a replay wants: a set of names, or anything that says whether a
    topic is in it (``wire.topics.TopicFilter``: names and patterns)."""

    def __contains__(self, topic: object, /) -> bool: ...
    def __len__(self) -> int: ...


class Replay:
    """The messages of ``entries`` after a start point.

    Args:
        entries: a snapshot of history, in arrival order (``History.since``).
        after_id: replay what came after the message with this id, M (searched newest
            first; if no entry has it, everything is replayed), or None: all of
            ``entries``, in arrival order.
        topics: the topics wanted (``topic in topics``; empty: all but ``hidden_topic``).
        node_id: this node (direct messages to other nodes are not replayed).
        held: what the order buffer held at the snapshot (``OrderBuffer.held_now``):
            those batches are delivered live later, so they are not replayed.
        hidden_topic: a topic never replayed (the nodes' own; requests are not replayed
            either).
        hold: the order buffer's hold time (``order_hold``): how much later than it
            arrived a batch may have been delivered.

    **After M** (see docs/api.md, ``since``): a message id gives a position only in its
    own origin's order, so a replay after M holds

    - the rest of M's batch, and every batch of M's origin after it in that origin's
      order (``epoch``, ``seq``), whenever it arrived;
    - every batch of M's origin before it that arrived after M (delivered late, after
      a gap was given up);
    - every other batch (other origins, unnumbered ones) that arrived at or after M's
      age of publication (``Entry.age``, ``Entry.rank``: M's arrival, or that of a
      later batch of its origin if one came first), or up to ``hold`` before it if the
      order buffer held it; and, if M itself came by repair, every other batch held: an app may then
      have seen M from an earlier run of the node (before a restart), and anything of
      another origin that arrived since may be new to it.

    It is handed out in each origin's order, the origins interleaved by age of
    publication (arrival, for batches that came live); so an app that saw M in a
    replay had every other batch of a lower age before it. Without ``after_id``, the
    replay is in arrival order.
    """

    def __init__(self, entries: list[Entry], *, after_id: bytes | None,
                 topics: Topics, node_id: bytes, held: Held,
                 hidden_topic: str, hold: float = 0.0) -> None:
        self._entries = entries
        self._after = after_id
        self._topics = topics
        self._node_id = node_id
        self._held = held
        self._hidden = hidden_topic
        self._hold = hold
        # Whether ``after_id`` was found (known once searched; None without an id).
        self.found: bool | None = False if after_id is not None and not entries else None
        # The search goes down from the newest entry; then the selection goes up from
        # the first entry that may be replayed (into ``_keys``, sorted), and the
        # replay up ``_plan`` (without an id) or ``_keys`` from ``_next``.
        self._search = len(entries) - 1 if after_id is not None else -1
        self._select = 0 if after_id is not None else -1
        self._plan: list[Entry] = entries if after_id is None else []
        self._keys: list[tuple[int, bytes, int, int, int, Entry]] = []
        self._sorted = True  # the keys came in order (no late batch): no sort needed
        self._start: Entry | None = None  # the batch holding M ...
        self._start_item = 0  # ... and the index of the message after M in it
        # Other batches that arrived from then on (arrival number, time) are replayed.
        self._cut, self._cut_time = 0, float("-inf")
        self._start_body: BatchBody | None = None
        self._next = 0
        self._body: BatchBody | None = None  # the batch being handed out ...
        self._entry: Entry | None = None
        self._item = 0  # ... and its next item
        self.done = False

    def step(self, budget: int) -> list[Gossip]:
        """The next messages, for about ``budget`` units of work (at least one entry or
        message; the list may be empty when nothing there was wanted). Call again
        until ``done``."""
        out: list[Gossip] = []
        while budget > 0 and not self.done:
            if self._search >= 0:
                budget -= self._search_one()
            elif self._select >= 0:
                budget -= self._select_one()
            elif self._body is not None:
                budget -= self._hand_out(out, budget)
            elif self._next < len(self._plan):
                budget -= self._open(self._plan[self._next])
                self._next += 1
            elif self._next < len(self._keys):
                budget -= self._open(self._keys[self._next][5])
                self._next += 1
            else:
                self.done = True
        return out

    def _search_one(self) -> int:
        """Look at one entry for ``after_id``; returns the cost."""
        k, target = self._search, self._after
        assert target is not None
        entry = self._entries[k]
        self._search -= 1
        if entry.gone or not entry.first_id <= target <= entry.last_id:
            if self._search < 0:
                self.found = False  # not in history: replay all of it
            return SCAN_COST
        body = decode_kept_body(entry.batch.body)  # checked when it came
        for i, item in enumerate(body.items):
            if item.id == target:
                self.found = True
                self._search = -1
                self._start, self._start_item, self._start_body = entry, i + 1, body
                if not entry.repaired:
                    self._cut, self._cut_time = entry.rank, entry.age
                    # Nothing before both cuts is replayed (M's origin's later batches
                    # came at or after M's rank): start the selection there.
                    self._select = min(
                        bisect_left(self._entries, entry.rank, hi=k, key=_arrival_number),
                        bisect_left(self._entries, entry.age - self._hold, hi=k,
                                    key=_arrival_time))
                break
        else:
            if self._search < 0:
                self.found = False
        return ENTRY_COST + len(entry.batch.body)

    def _select_one(self) -> int:
        """Decide whether one entry of the snapshot is replayed (``_after``'s rule);
        once all are, sort the plan. Returns the cost."""
        entries, k, keys = self._entries, self._select, self._keys
        if k >= len(entries):
            self._select = -1
            if not self._sorted:
                keys.sort()  # nearly in order: about linear
                return SCAN_COST * (1 + len(keys) // 4)
            return SCAN_COST
        self._select += 1
        entry = entries[k]
        if entry.gone or not self._after_start(entry):
            return SCAN_COST
        key = (entry.rank, entry.batch.origin, entry.epoch, entry.seq, k, entry)
        if keys and key < keys[-1]:
            self._sorted = False
        keys.append(key)
        return ENTRY_COST

    def _after_start(self, entry: Entry) -> bool:
        """Whether ``entry`` may hold messages after M that the app has not seen."""
        start = self._start
        if start is None:
            return True  # M is not in history: all of it
        if entry is start:
            return True
        if entry.seq and start.seq and entry.batch.origin == start.batch.origin:
            return entry.position > start.position or entry.time > start.time
        return entry.n >= self._cut or (entry.held and entry.time + self._hold >= self._cut_time)

    def _open(self, entry: Entry) -> int:
        """Start on the next entry of the replay, unless it is not to be replayed."""
        if entry.gone or self._held_back(entry):
            return ENTRY_COST
        if entry is self._start and self._start_body is not None:  # decoded in the search
            body, first, cost = self._start_body, self._start_item, ENTRY_COST
            self._start_body = None
        else:
            body = decode_kept_body(entry.batch.body)  # checked when it came
            first, cost = 0, ENTRY_COST + len(entry.batch.body)
        if first < len(body.items) and self._wanted(entry, body):
            self._entry, self._body, self._item = entry, body, first
        return cost

    def _held_back(self, entry: Entry) -> bool:
        """Whether the order buffer held ``entry`` at the snapshot: not delivered yet,
        it will be, live, once its gap is filled (or given up)."""
        held = self._held.get(entry.batch.origin)
        return held is not None and (entry.epoch, entry.seq) in held

    def _wanted(self, entry: Entry, body: BatchBody) -> bool:
        """Whether a batch is replayed: delivered here (not held, not a direct message
        to another node)."""
        return not self._held_back(entry) and (body.to is None or body.to == self._node_id)

    def _hand_out(self, out: list[Gossip], budget: int) -> int:
        """Hand out the current batch's wanted messages, up to ``budget``."""
        body, entry = self._body, self._entry
        assert body is not None
        assert entry is not None
        self._item, spent = hand_out(out, entry.batch, body, self._item, budget,
                                     self._topics, self._hidden)
        if self._item >= len(body.items):
            self._body = self._entry = None
        return spent


def hand_out(out: list[Gossip], batch: Batch, body: BatchBody, k: int, budget: int,
             topics: Topics, hidden: str) -> tuple[int, int]:
    """Append to ``out`` the wanted messages of ``body`` (``batch``'s) from item ``k``
    on, for about ``budget`` units of work. Returns the next item and the cost (at
    least 1)."""
    items, origin, hops, to = body.items, batch.origin, batch.hops, body.to
    spent = 0
    while k < len(items) and spent < budget:
        item = items[k]
        k += 1
        if (item.topic in topics) if topics else (item.topic != hidden
                                                  and item.topic != REQUEST_TOPIC):
            out.append(Gossip(id=item.id, origin=origin, topic=item.topic, data=item.data,
                              hops=hops, to=to))
            spent += ITEM_COST + len(item.data)
        else:
            spent += 8
    return k, max(spent, 1)


def replay_from(history: History, held: Held, since: bytes | float, *, topics: Topics,
                node_id: bytes, hidden_topic: str, hold: float = 0.0) -> Replay:
    """A replay of ``history``: the messages after message id ``since`` (bytes: see
    ``Replay``; ``hold``: the order buffer's hold time), or of the batches that arrived
    at or after ``since`` (float, on history's clock), of ``topics`` (empty: all),
    broadcast or sent to ``node_id``, but not ``hidden_topic`` and not the batches in
    ``held`` (``OrderBuffer.held_now()``: they come live)."""
    if isinstance(since, bytes):
        return Replay(history.since(float("-inf")), after_id=since, topics=topics,
                      node_id=node_id, held=held, hidden_topic=hidden_topic, hold=hold)
    return Replay(history.since(since), after_id=None, topics=topics, node_id=node_id,
                  held=held, hidden_topic=hidden_topic)


def _arrival_number(entry: Entry) -> int:
    return entry.n


def _arrival_time(entry: Entry) -> float:
    return entry.time
