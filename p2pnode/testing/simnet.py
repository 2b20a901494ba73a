"""An in-memory network for tests and simulations: bounded pipes, latency, failures.

Each connection is two one-way ``Pipe``s. A pipe holds at most ``capacity`` bytes
in flight, so a reader that stops reading makes its writer block, as a full TCP
window does. Data becomes readable ``latency()`` seconds after it was sent
(trio time: run under ``trio.testing.MockClock`` and a mesh of thousands of
nodes runs in seconds). A node can be frozen (like ``SIGSTOP``: it neither reads
nor writes) and the path between two nodes can be cut (like a pulled cable: data
waits, nothing is lost or reset) and restored.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio
import trio.lowlevel


class SimNet:
    """Failure state shared by every pipe of one simulated network.

    Args:
        capacity: bytes in flight per direction of a connection.
        latency: returns the one-way delay of each chunk written, in seconds.
        bandwidth: bytes per second per direction of a connection (None: unlimited).
    """

    def __init__(self, capacity: int = 256 * 1024,
                 latency: Callable[[], float] | None = None,
                 bandwidth: float | None = None) -> None:
        self.capacity = capacity
        self.latency = latency or (lambda: 0.0)
        self.bandwidth = bandwidth
        self.frozen: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self._changed = trio.lowlevel.ParkingLot()

    def freeze(self, node: int) -> None:
        """``node`` stops reading and writing (its data stays queued)."""
        self.frozen.add(node)

    def thaw(self, node: int) -> None:
        self.frozen.discard(node)
        self._changed.unpark_all()

    def cut_path(self, a: int, b: int) -> None:
        """Nothing written between ``a`` and ``b`` arrives until ``restore_path``."""
        self.cut.add(frozenset((a, b)))

    def restore_path(self, a: int, b: int) -> None:
        self.cut.discard(frozenset((a, b)))
        self._changed.unpark_all()

    def blocked(self, reader: int, writer: int) -> bool:
        return reader in self.frozen or frozenset((reader, writer)) in self.cut

    async def wait_changed(self) -> None:
        await self._changed.park()

    def stream_pair(self, a: int, b: int) -> tuple[SimStream, SimStream]:
        """A connection between nodes ``a`` and ``b``: (a's end, b's end)."""
        ab, ba = Pipe(self, a, b), Pipe(self, b, a)
        return SimStream(self, a, ab, ba), SimStream(self, b, ba, ab)


class Pipe:
    """Bytes from ``writer`` to ``reader``, delivered after a latency, bounded."""

    def __init__(self, net: SimNet, writer: int, reader: int) -> None:
        self.net = net
        self.writer = writer
        self.reader = reader
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.size = 0
        self.write_closed = False  # EOF after the queued data
        self.read_closed = False  # writes fail: the reader is gone
        self.busy_until = 0.0  # when the last byte written has been put on the "wire"
        self._lot = trio.lowlevel.ParkingLot()

    def _wake(self) -> None:
        self._lot.unpark_all()

    async def write(self, data: bytes) -> None:
        net = self.net
        view = memoryview(data)
        while view:
            if self.read_closed or self.write_closed:
                raise trio.BrokenResourceError("the other end is closed")
            if self.writer in net.frozen:
                await net.wait_changed()
                continue
            room = net.capacity - self.size
            if room <= 0:
                await self._lot.park()
                continue
            part = bytes(view[:room])
            view = view[room:]
            now = trio.current_time()
            if net.bandwidth:
                self.busy_until = max(now, self.busy_until) + len(part) / net.bandwidth
            else:
                self.busy_until = now
            self.chunks.append((self.busy_until + net.latency(), part))
            self.size += len(part)
            self._wake()
        # A cancellation point without a reschedule: the writer's own loop yields
        # elsewhere, and a full reschedule per write adds a wake-up per batch copy.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def read(self, max_bytes: int) -> bytes:
        net = self.net
        while True:
            if self.read_closed:
                raise trio.ClosedResourceError("this end is closed")
            if net.blocked(self.reader, self.writer):
                await net.wait_changed()
                continue
            if self.chunks:
                due, _ = self.chunks[0]
                now = trio.current_time()
                if due <= now:
                    return self._take(max_bytes, now)
                with trio.move_on_at(due):
                    await self._lot.park()
                continue
            if self.write_closed:
                return b""
            await self._lot.park()

    def _take(self, max_bytes: int, now: float) -> bytes:
        out = bytearray()
        while self.chunks and self.chunks[0][0] <= now and len(out) < max_bytes:
            due, chunk = self.chunks.popleft()
            take = max_bytes - len(out)
            if len(chunk) > take:
                self.chunks.appendleft((due, chunk[take:]))
                chunk = chunk[:take]
            out += chunk
        self.size -= len(out)
        self._wake()
        return bytes(out)

    def close_write(self) -> None:
        self.write_closed = True
        self._wake()

    def close_read(self) -> None:
        self.read_closed = True
        self.chunks.clear()
        self.size = 0
        self._wake()


class SimStream(trio.abc.Stream):
    """One end of a simulated connection."""

    def __init__(self, net: SimNet, owner: int, out: Pipe, inp: Pipe) -> None:
        self.net = net
        self.owner = owner
        self._out = out
        self._in = inp
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        await self._out.write(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        return await self._in.read(max_bytes or 65536)

    async def aclose(self) -> None:
        self._closed = True
        self._out.close_write()
        self._in.close_read()
        await trio.lowlevel.checkpoint()
