"""An in-memory network for tests and simulations: bounded pipes, latency, failures.

Each connection is two one-way ``Pipe``s. A pipe holds at most ``capacity`` bytes
in flight, so a reader that stops reading makes its writer block, as a full TCP
window does. Data becomes readable ``latency()`` seconds after it was sent
(trio time: run under ``trio.testing.MockClock`` and a mesh of thousands of
nodes runs in seconds). A node can be frozen (like ``SIGSTOP``: it neither reads
nor writes) and the path between two nodes can be cut (like a pulled cable: data
waits, nothing is lost or reset) and restored.

Frame-level effects (plaintext links only: the memory network's links are, TLS ones
would be opaque): ``loss`` drops that share of the frames written (``loss_mode
"drop"``: the frame is gone, as if the sender never wrote it) or delays them as TCP
retransmission does (``"retransmit"``: each loss costs a retransmission timeout,
doubling, and the frames behind it wait: head-of-line blocking). The handshake and
closing frames (Hello, Accept, Refuse, Bye) are never dropped. ``count_frames``
counts the frames written and their bytes per message tag (``frame_bytes``).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from typing import Final

import trio
import trio.lowlevel

#: Message tags (``wire.messages``) that ``loss`` never drops: the handshake and Bye.
#: TCP would deliver them late, not lose them; dropping them tests only the handshake
#: timeout.
LOSSLESS_TAGS: Final = frozenset({1, 2, 3, 5})
#: Loss modes: drop the frame, or deliver it after a retransmission timeout.
LOSS_MODES: Final = ("drop", "retransmit")
#: The first retransmission timeout (Linux's minimum RTO), doubled per repeated loss.
RTO: Final = 0.2


def frame_tag(body: bytes | memoryview) -> int:
    """The message tag of a frame body (a msgpack array whose first element is a small
    int), or -1 if it does not look like one."""
    if not body:
        return -1
    head = body[0]
    pos = 1 if 0x90 <= head <= 0x9F else 3 if head == 0xDC else 5 if head == 0xDD else 0
    if not pos or len(body) <= pos or body[pos] >= 0x80:
        return -1
    return body[pos]


class SimNet:
    """Failure state shared by every pipe of one simulated network.

    Args:
        capacity: bytes in flight per direction of a connection.
        latency: returns the one-way delay of each chunk written, in seconds.
        bandwidth: bytes per second per direction of a connection (None: unlimited).
        loss: share of frames lost (0 to below 1; see the module's docstring).
        loss_mode: ``"drop"`` or ``"retransmit"``.
        seed: seeds the loss draws (the same seed and schedule, the same losses).
        count_frames: count the frames written, per tag (``frame_bytes``, ``frame_counts``).
    """

    def __init__(self, capacity: int = 256 * 1024,
                 latency: Callable[[], float] | None = None,
                 bandwidth: float | None = None, *, loss: float = 0.0,
                 loss_mode: str = "drop", seed: int = 0,
                 count_frames: bool = False) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss {loss}: a share, at least 0 and below 1")
        if loss_mode not in LOSS_MODES:
            raise ValueError(f"loss_mode {loss_mode!r}: one of {', '.join(LOSS_MODES)}")
        self.capacity = capacity
        self.latency = latency or (lambda: 0.0)
        self.bandwidth = bandwidth
        self.frozen: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self._changed = trio.lowlevel.ParkingLot()
        self.loss = loss
        self.loss_mode = loss_mode
        self.rng = random.Random(seed)
        self.count_frames = count_frames
        #: Per message tag: frames written and their bytes (length prefix included).
        self.frame_counts: collections.Counter[int] = collections.Counter()
        self.frame_bytes: collections.Counter[int] = collections.Counter()
        #: Frames dropped (``"drop"``) or delayed (``"retransmit"``) by ``loss``.
        self.frames_lost = 0

    @property
    def parses_frames(self) -> bool:
        """Whether pipes cut what they carry into frames (loss or counting is on)."""
        return self.loss > 0 or self.count_frames

    def frames_out(self, frames: list[bytes]) -> list[tuple[bytes, float]]:
        """Count ``frames`` (whole frames, length prefix included) and apply the loss:
        the pieces to send, each with its extra delay (retransmissions)."""
        out: list[tuple[bytes, float]] = []
        kept = bytearray()
        retransmit = self.loss_mode == "retransmit"
        for frame in frames:
            tag = frame_tag(memoryview(frame)[4:])
            if self.count_frames:
                self.frame_counts[tag] += 1
                self.frame_bytes[tag] += len(frame)
            lost = 0
            if self.loss and tag not in LOSSLESS_TAGS:
                while lost < 8 and self.rng.random() < self.loss:
                    lost += 1
                    if not retransmit:
                        break
            if not lost:
                kept += frame
                continue
            self.frames_lost += 1
            if retransmit:  # RTO, then 2 RTO, ...: in all RTO * (2^lost - 1)
                if kept:
                    out.append((bytes(kept), 0.0))
                    kept = bytearray()
                out.append((frame, RTO * (2 ** lost - 1)))
        if kept:
            out.append((bytes(kept), 0.0))
        return out

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
        self._partial = bytearray()  # the start of a frame not written whole yet
        self._held_until = 0.0  # a retransmitted frame arrives then; the rest waits

    def _wake(self) -> None:
        self._lot.unpark_all()

    def _frames(self, data: bytes) -> list[tuple[bytes, float]]:
        """Cut ``data`` (after what an earlier write left unfinished) into whole frames
        and pass them through ``SimNet.frames_out``."""
        buf = self._partial
        buf += data
        frames: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 4:
            stop = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
            if stop > len(buf):
                break
            frames.append(bytes(buf[pos:stop]))
            pos = stop
        del buf[:pos]
        return self.net.frames_out(frames)

    async def write(self, data: bytes) -> None:
        if self.net.parses_frames:
            for piece, extra in self._frames(data):
                await self._put(piece, extra)
        else:
            await self._put(data, 0.0)
        # A cancellation point without a reschedule: the writer's own loop yields
        # elsewhere, and a full reschedule per write adds a wake-up per batch copy.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _put(self, data: bytes, extra: float) -> None:
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
            due = self.busy_until + net.latency()
            if extra or self._held_until > due:
                # In order, as TCP delivers: nothing overtakes a retransmitted frame.
                due = self._held_until = max(due + extra, self._held_until)
            # Wake the reader only if it waits for data: behind a chunk not yet due it
            # sleeps until that one is due anyway (the pipe delivers in order).
            waiting = not self.chunks
            self.chunks.append((due, part))
            self.size += len(part)
            if waiting:
                self._wake()

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
