"""Reads of the message store by origin order (the ``batches_run`` index: origin,
epoch, seq), for a restarted node (which numbers of each origin it has) and for
``since`` replays from the store (``store.replay``). Blocking, like ``store.db``:
run them in the store's worker thread (``StoreService.call``)."""

from __future__ import annotations

import msgspec

from ..errors import RemoteProtocolError
from ..wire.messages import Batch, BatchBody, decode_kept_body, decode_message
from .db import _COLUMNS, MessageStore, Row, _row

__all__ = ["Key", "decode_row", "late_rows", "lookback_rows", "preceding", "row_at",
           "stored_runs"]

Key = tuple[int, int]  # a batch's place in its origin's order: (epoch, seq)
#: What ``stored_runs`` gives: (origin, epoch) -> sorted disjoint inclusive ranges of
#: the sequence numbers stored, newest runs first.
Runs = dict[tuple[bytes, int], list[tuple[int, int]]]

#: A span of sequence numbers this short is read number by number, not bisected.
SPAN_READ = 256


def stored_runs(store: MessageStore, max_ranges: int) -> Runs:
    """Per origin run, the ranges of sequence numbers stored: at most ``max_ranges`` a
    run, the newest (the lowest ranges merge: the numbers between them count as
    stored). A run stored without holes costs one look at the index; one with holes,
    a count per half, down to the holes (about ``max_ranges`` x log2 of its span)."""
    db = store._db
    out: Runs = {}
    for origin, epoch, low, high, count in db.execute(
            "SELECT origin, epoch, MIN(seq), MAX(seq), COUNT(*) FROM batches WHERE seq > 0 "
            "GROUP BY origin, epoch ORDER BY epoch DESC"):
        if count == high - low + 1:
            out[(origin, epoch)] = [(low, high)]
            continue
        ranges: list[tuple[int, int]] = []  # newest first
        _bisect(store, origin, epoch, low, high, ranges, max_ranges)
        if len(ranges) >= max_ranges:
            ranges[-1] = (low, ranges[-1][1])
        out[(origin, epoch)] = ranges[::-1]
    return out


def _bisect(store: MessageStore, origin: bytes, epoch: int, low: int, high: int,
            ranges: list[tuple[int, int]], max_ranges: int) -> None:
    """Add to ``ranges`` (newest first) the stored ranges within [low, high], until there
    are ``max_ranges``."""
    if len(ranges) >= max_ranges:
        return
    db = store._db
    if high - low < SPAN_READ:
        seqs = [s for (s,) in db.execute(
            "SELECT DISTINCT seq FROM batches WHERE origin = ? AND epoch = ? AND seq "
            "BETWEEN ? AND ? ORDER BY seq DESC", (origin, epoch, low, high))]
        for seq in seqs:
            if ranges and seq == ranges[-1][0] - 1:
                ranges[-1] = (seq, ranges[-1][1])
            elif len(ranges) < max_ranges:
                ranges.append((seq, seq))
            else:
                return
        return
    count = db.execute("SELECT COUNT(*) FROM batches WHERE origin = ? AND epoch = ? AND "
                       "seq BETWEEN ? AND ?", (origin, epoch, low, high)).fetchone()[0]
    if not count:
        return
    if count == high - low + 1:  # all there (a duplicate row hiding a hole aside)
        if ranges and high == ranges[-1][0] - 1:
            ranges[-1] = (low, ranges[-1][1])
        else:
            ranges.append((low, high))
        return
    mid = (low + high) // 2
    _bisect(store, origin, epoch, mid + 1, high, ranges, max_ranges)
    _bisect(store, origin, epoch, low, mid, ranges, max_ranges)


def row_at(store: MessageStore, pos: int) -> Row | None:
    """The row stored at position ``pos``, or None."""
    values = store._db.execute(f"SELECT {_COLUMNS} FROM batches WHERE pos = ?",
                               (pos,)).fetchone()
    return None if values is None else _row(values)


def preceding(store: MessageStore, msg_id: bytes) -> Row | None:
    """The stored batch of ``msg_id``'s run (its 8-byte prefix) with the highest first
    id at or below it: the batch that holds it, or the one just before it in its
    origin's order. None if nothing of that run is stored at or below it."""
    values = store._db.execute(
        f"SELECT {_COLUMNS} FROM batches WHERE first_id <= ? AND first_id >= ? "
        "ORDER BY first_id DESC LIMIT 1", (msg_id, msg_id[:8])).fetchone()
    return None if values is None else _row(values)


def late_rows(store: MessageStore, origin: bytes, low: Key | None, high: Key, after: int,
              upto: int, limit: int) -> list[Row]:
    """At most ``limit`` rows of ``origin`` placed between ``low`` (exclusive; None: from
    the first) and ``high`` (exclusive) in its order, stored at a position in
    (``after``, ``upto``], in the origin's order."""
    lo = low if low is not None else (-1, -1)
    return [_row(v) for v in store._db.execute(
        f"SELECT {_COLUMNS} FROM batches WHERE origin = ? AND (epoch, seq) > (?, ?) "
        "AND (epoch, seq) < (?, ?) AND pos > ? AND pos <= ? ORDER BY epoch, seq LIMIT ?",
        (origin, *lo, *high, after, upto, limit))]


def lookback_rows(store: MessageStore, start: Row, hold: float, limit: int) -> list[Row]:
    """Rows stored before ``start`` whose age is at most ``hold`` before its age (they
    may have waited in the order buffer and been delivered after it): of ``start``'s
    origin, those after it in its order; of others, all. At most ``limit``. Found by
    the age index: the cost is that of the rows of that moment, whatever the store's
    size."""
    return [_row(v) for v in store._db.execute(
        f"SELECT {_COLUMNS} FROM batches INDEXED BY batches_age WHERE age BETWEEN ? AND ? "
        "AND pos < ? AND (origin != ? OR (epoch, seq) > (?, ?)) ORDER BY pos LIMIT ?",
        (start.age - hold, start.age, start.pos, start.origin, start.epoch, start.seq,
         limit))]


def decode_row(row: Row) -> tuple[Batch, BatchBody] | None:
    """A stored batch and its body (checked when it came), or None if it cannot be
    decoded (a damaged row)."""
    try:
        batch = decode_message(row.frame)
        assert isinstance(batch, Batch)
        return batch, decode_kept_body(batch.body)
    except (msgspec.MsgspecError, AssertionError, RemoteProtocolError):
        return None
