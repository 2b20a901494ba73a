"""A bounded, coalescing output queue with one writer task per stream.

Producers append bytes synchronously (no await per message); the writer task
sends everything that has piled up in one ``send_all``. This is what lets a
link carry hundreds of thousands of frames per second (docs/architecture.md).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import trio

SLICE = 16 * 1024  # the most bytes handed to one send_all
#: Seconds since the last direct write past which a frame counts as lone and is written
#: at once by the task that queued it (``OutQueue.direct``); frames that come closer
#: together pile up for the writer task, which sends them in one piece.
LONE_GAP = 0.0002


class DirectWriter(Protocol):
    """Writes a stream's bytes at once, without waiting (``net.direct.Direct``)."""

    @property
    def pending(self) -> bool: ...
    def write_now(self, data: bytes | bytearray) -> bool: ...
    async def finish(self) -> None: ...


class OutQueue:
    """Bytes waiting to be written to one stream, at most ``limit`` of them.

    Args:
        limit: the most bytes held (not counting a batch already being sent).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._closing = False
        self.dropped = 0  # items refused because the queue was full
        self.sent_bytes = 0
        #: True once the queue refused an item, until the writer next makes progress.
        #: A queue that stays in this state has a stuck reader on the other end.
        self.overflowing = False
        #: Trio time at which the send under way last made progress (None: not sending).
        self._progress_at: float | None = None
        #: Writes a lone item at once, from the task that queues it, when the writer
        #: task is idle (None: the writer sends everything).
        self.direct: DirectWriter | None = None
        self._direct_at = float("-inf")  # perf_counter of the last direct write

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def closing(self) -> bool:
        """True once ``close()`` was called."""
        return self._closing

    def put_nowait(self, data: bytes, *, wake: bool = True) -> bool:
        """Queue ``data`` if it fits; otherwise drop it, count it and return False.
        Without ``wake`` an idle writer task is not woken: the caller sends it itself
        (``try_send``) and then calls ``wake`` for what the socket did not take."""
        if self._closing:
            return False
        if len(self._buf) + len(data) > self.limit:
            self.dropped += 1
            self.overflowing = True
            return False
        self._buf += data
        if not wake:
            return True
        if self.direct is None or self._progress_at is not None or not self._write_direct():
            self._wake.set()
        return True

    def _write_direct(self) -> bool:
        """Write what is queued at once if it comes alone (``LONE_GAP``); True if it
        went (what the socket did not take, the writer sends first when woken)."""
        now = time.perf_counter()
        if now - self._direct_at < LONE_GAP:
            return False
        assert self.direct is not None
        if not self.direct.write_now(self._buf):
            return False
        self._direct_at = now
        self.sent_bytes += len(self._buf)
        self._buf = bytearray()
        self.overflowing = False
        self._drained.set()
        if self.direct.pending:
            self._wake.set()
        return True

    def put_force(self, data: bytes, *, wake: bool = True) -> None:
        """Queue ``data`` even over the limit. Only for a link's frames sent once (Hello,
        Accept, Refuse, Bye) and for replies to local API clients (who are not read
        further while their queue is over half full); never for anything a peer can
        make us send again and again. Without ``wake`` the writer task is not woken: the
        caller sends it itself (``try_send``), or calls ``wake`` before it waits."""
        if not self._closing:
            self._buf += data
            if wake:
                self._wake.set()

    def wake(self) -> None:
        """Have the writer task send what is queued (after ``put_force(wake=False)``)."""
        if self._buf:
            self._wake.set()

    def stalled_for(self, now: float) -> float:
        """Seconds (up to ``now``) that the writer has been sending without getting a
        slice through; 0 while it is not sending. A reader that stopped reading shows
        here once the transport's own buffers are full."""
        return 0.0 if self._progress_at is None else now - self._progress_at

    def close(self) -> None:
        """Stop taking data; the writer sends what is queued, then returns."""
        self._closing = True
        self._wake.set()
        self._drained.set()

    async def wait_writable(self) -> None:
        """Wait until the queue is at most half full (backpressure for producers)."""
        while len(self._buf) > self.limit // 2 and not self._closing:
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()

    async def run_writer(self, stream: trio.abc.SendStream) -> None:
        """Send queued bytes to ``stream`` until ``close()`` and the queue is empty.

        Raises what ``send_all`` raises (``trio.BrokenResourceError`` when the
        peer is gone). A send cancelled midway leaves the framing unknown: the
        caller must close the stream.
        """
        while True:
            if self.direct is not None and self.direct.pending:
                self._progress_at = trio.current_time()
                try:
                    await self.direct.finish()
                finally:
                    self._progress_at = None
                continue
            if not self._buf:
                if self._closing:
                    return
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await self._send(stream)

    def try_send(self, fd: int) -> None:
        """Write what is queued to the socket ``fd`` at once, without waiting, if no send
        is under way: what the socket does not take now (all of it when its buffer is
        full) is left to the writer. For a plain socket stream only (not TLS)."""
        if not self._buf or self._progress_at is not None or self._closing:
            return
        try:
            n = os.write(fd, self._buf)
        except OSError:  # full (BlockingIOError), or broken: the writer finds out
            return
        del self._buf[:n]
        self.sent_bytes += n
        self.overflowing = False
        self._drained.set()

    async def _send(self, stream: trio.abc.SendStream) -> None:
        data, self._buf = self._buf, bytearray()
        self._drained.set()
        self.overflowing = False
        # Send in slices, so that progress (sent_bytes) shows while a large batch
        # crawls over a slow link; a stuck peer shows none.
        view = memoryview(data)
        self._progress_at = trio.current_time()
        try:
            for start in range(0, len(data), SLICE):
                await stream.send_all(view[start : start + SLICE])
                self.sent_bytes += min(SLICE, len(data) - start)
                self._progress_at = trio.current_time()
        finally:
            self._progress_at = None
