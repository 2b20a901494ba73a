"""The message store as a trio service: batches queued from the event loop, written in
one transaction per batch of them by a worker thread, and waited for by publishers.

``StoreService.keep`` is synchronous and cheap (the gossip path calls it for every
batch kept); ``run`` writes what piled up, one ``MessageStore.append`` per turn, then
trims by retention a bounded number of rows. Every other use of the file (reads for
replays and durable subscriptions, ``p2pnode store``) goes through ``call``, which
runs one operation at a time in a worker thread, so the event loop never waits on
the disk. One exception: a small write while the file is idle (``write_now``, with
``--sync normal``: no flush to the disk) is made at once on the event loop, which
spares a lone publish the round trip to the thread.

When a write fails because the disk is full, the rows stay queued (at most
``max_pending``: beyond that the oldest are dropped and counted), ``error`` says why,
publishers that wait for their messages to be stored get ``StoreFull``, and the
service tries again every ``retry`` seconds. Other write errors (``StoreBroken``) stop
the node: the store is the node's record, and a node that cannot keep it says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import trio

from .db import MessageStore, Row, StoreBroken, StoreFull

T = TypeVar("T")
log = logging.getLogger("p2pnode.store")

#: Rows written per transaction at most.
WRITE_ROWS = 4096
#: ``write_now``: the most messages, and bytes of rows, written on the event loop at
#: once (a commit of one small row takes tens of microseconds: lone publishes, not a
#: pipelining app's reads, which the thread groups), and the most such writes in a
#: row: then one in the worker thread, where SQLite copies its write-ahead log into the
#: file (a checkpoint, which flushes to the disk) when the log has grown.
INLINE_MESSAGES = 16
INLINE_BYTES = 16 << 10
INLINE_RUN = 100


class StoreService:
    """Owns an open ``MessageStore`` while the node runs.

    Args:
        store: the open store.
        max_pending: rows queued at most while the disk is full.
        retry: seconds between tries while writes fail.
        trim_interval: seconds without writes after which retention runs anyway.
    """

    #: Run store calls in the event loop's own thread (tests in virtual time only: trio's
    #: autojump clock moves on while a worker thread works, so timers would fire early).
    inline = False

    def __init__(self, store: MessageStore, *, max_pending: int = 100_000,
                 retry: float = 1.0, trim_interval: float = 10.0) -> None:
        self.store = store
        self.max_pending = max_pending
        self.retry = retry
        self._pending: list[Row] = []
        self._acks: dict[str, tuple[int, int]] = {}
        self._wake = trio.Event()
        self._stored = trio.Event()  # set (and replaced) after each write
        self._lock = trio.Lock()
        self.queued = 0  # rows handed to ``keep`` since the start
        self.committed = 0  # ... of which this many are stored (or dropped)
        self.dropped = 0  # rows dropped while the disk was full
        self.error: str | None = None  # why the last write failed (None: it worked)
        self._failed_at = 0  # rows queued when a write last failed for lack of room
        self.writes = 0  # transactions written
        self.inline_writes = 0  # ... of which on the event loop (``write_now``)
        #: Whether ``write_now`` may write (``--sync normal``: a commit with no flush to
        #: the disk; with ``full`` the flush stays in the thread, with ``off`` no one waits).
        self.write_inline = store.sync == "normal"
        self._inline_run = 0  # writes made by ``write_now`` since the last in the thread
        #: A write made by ``write_now`` took the store over ``max_bytes``: retention
        #: runs in the thread before the next operation on the file (``call``).
        self._trim_due = False
        #: Seconds without writes after which retention runs anyway.
        self.trim_interval = trim_interval
        #: The position of the newest row stored (rows still queued come after it).
        self.stored_pos = store.last_pos
        #: Called with the store position of the newest row after each write.
        self.on_stored: list[Callable[[int], None]] = []

    # -- the event loop's side ------------------------------------------------------

    def keep(self, row: Row) -> None:
        """Queue ``row`` to be stored (the next write takes it)."""
        self._pending.append(row)
        self.queued += 1
        if len(self._pending) > self.max_pending:
            del self._pending[0]
            self.dropped += 1
            self.committed += 1
        self._wake.set()

    def ack(self, name: str, pos: int, part: int = 0, *, wake: bool = True) -> None:
        """Record that durable subscription ``name`` confirmed up to ``pos`` and ``part``
        messages of the batch after it (``DurableRow``); written with the next batch of
        rows, at once if none is waiting (without ``wake``: with the next write, or at
        the end)."""
        if (pos, part) > self._acks.get(name, (0, 0)):
            self._acks[name] = (pos, part)
            if wake:
                self._wake.set()

    def pending_rows(self) -> list[Row]:
        """The rows queued and not stored yet, oldest first (a copy of the list): they
        will be stored after ``stored_pos``, in this order."""
        return list(self._pending)

    @property
    def full_error(self) -> str | None:
        """Why publishes are refused now: queued rows cannot be written for lack of room
        (None: they can, or nothing waits; an idle trim that failed refuses nothing)."""
        return self.error if self._pending else None

    def forget(self, name: str) -> None:
        """Drop the acks of durable ``name`` not written yet (it is being deleted)."""
        self._acks.pop(name, None)

    def write_now(self) -> bool:
        """Write what is queued at once, on the event loop, if it is little (at most
        ``INLINE_MESSAGES``, ``INLINE_BYTES``), no other operation on the file is under
        way, the last write worked, and fewer than ``INLINE_RUN`` writes were made this
        way since the last one in the thread. The commit does not checkpoint (that waits
        for the next write in the thread). Returns True if it wrote (``committed`` and
        ``stored_pos`` moved on); False leaves the rows to the worker thread, also when
        the write failed (the thread tries again and reports the failure)."""
        rows = self._pending
        if not (rows and self.write_inline and self.error is None and not self._lock.locked()
                and len(rows) <= INLINE_MESSAGES and self._inline_run < INLINE_RUN
                and sum(row.count for row in rows) <= INLINE_MESSAGES
                and sum(len(row.frame) for row in rows) <= INLINE_BYTES):
            return False
        acks = [(name, pos, part) for name, (pos, part) in self._acks.items()]
        try:
            last = self.store.call(self._append_now, rows, acks)
        except (StoreFull, StoreBroken):
            return False
        self._acks = {}
        self._inline_run += 1
        self.inline_writes += 1
        store = self.store
        self._trim_due = self._trim_due or 0 < store.max_bytes < store.bytes
        self._written(len(rows), last)
        return True

    async def wait_stored(self, upto: int) -> None:
        """Wait until the first ``upto`` rows queued are stored. Raises ``StoreFull``
        once a write of them failed for lack of space (rows queued after a failure wait
        for the next try)."""
        while self.committed < upto:
            if self.error is not None and upto <= self._failed_at:
                raise StoreFull(self.error)
            await self._stored.wait()

    async def wait_next_write(self) -> None:
        """Wait until the service next writes, or tries to, or trims while idle."""
        await self._stored.wait()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` (a ``MessageStore`` method) in a worker thread, one at a time.
        Raises ``StoreFull``, ``StoreBroken`` (``MessageStore.call``)."""
        async with self._lock:
            if self._trim_due:  # retention owed by a write made at once: first
                self._trim_due = False
                fn, args = self._trim_then, (fn, *args)
            if self.inline:
                await trio.lowlevel.checkpoint()
                return self.store.call(fn, *args)
            return await trio.to_thread.run_sync(self.store.call, fn, *args)

    def _trim_then(self, fn: Callable[..., T], *args: object) -> T:
        with contextlib.suppress(StoreFull):  # deleting needs room too: later, then
            self.store.trim()
        return fn(*args)

    # -- the service ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write queued rows until cancelled; on the way out (also when cancelled), write
        what is still queued and close the file."""
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.trim_interval) as idle:
                    await self._wake.wait()
                if idle.cancelled_caught:  # nothing written for a while: retention anyway
                    await self._trim_idle()
                    continue
                self._wake = trio.Event()
                while self._pending or self._acks:
                    if not await self._write_once():
                        await trio.sleep(self.retry)
                if self._trim_due:
                    await self._trim_idle()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    async def _write_once(self) -> bool:
        rows = self._pending[:WRITE_ROWS]
        acks = self._acks
        self._acks = {}
        try:
            last = await self.call(self._append_and_trim, rows, acks)
        except BaseException as exc:
            for name, mark in acks.items():  # not written (cancelled too): _close writes them
                self._acks[name] = max(mark, self._acks.get(name, (0, 0)))
            if not isinstance(exc, StoreFull):
                raise
            if self.error is None:
                log.error("%s; publishes are refused until there is room", exc)
            self.error = str(exc)
            self._failed_at = self.queued
            self._signal()
            return False
        if self.error is not None:
            log.warning("message store %s: writing again", self.store.path)
        self.error = None
        self._inline_run = 0
        self._written(len(rows), last)
        return True

    def _written(self, count: int, last: int) -> None:
        """The first ``count`` rows queued are stored, the last at position ``last``."""
        del self._pending[:count]
        self.stored_pos = last
        self.committed += count
        self.writes += 1
        self._signal()
        for callback in self.on_stored:
            callback(last)

    async def _trim_idle(self) -> None:
        """Remove what retention says while no batch comes, or after writes made at
        once took the store over its size (bounded per call)."""
        self._trim_due = False
        try:
            await self.call(self.store.trim)
        except StoreFull as exc:  # deleting needs room too
            self.error = str(exc)
        self._signal()

    def _append_and_trim(self, rows: list[Row], acks: dict[str, tuple[int, int]]) -> int:
        last = self.store.append(rows, [(name, pos, part) for name, (pos, part) in acks.items()])
        self.store.trim()
        return last

    def _append_now(self, rows: list[Row], acks: list[tuple[str, int, int]]) -> int:
        return self.store.append(rows, acks, checkpoint=False)

    def _signal(self) -> None:
        self._stored.set()
        self._stored = trio.Event()

    async def _close(self) -> None:
        if self._pending or self._acks:
            try:
                await self.call(self._append_and_trim, self._pending, self._acks)
                self.committed += len(self._pending)
                self._pending = []
                self._acks = {}
                self._signal()
            except StoreFull as exc:
                log.error("%s: %d messages were not stored", exc, len(self._pending))
        await self.call(self.store.close)


def wall_age(age: float, now: float) -> float:
    """A trio-clock age (``History`` entries) as seconds since 1970."""
    return time.time() - (now - age)
