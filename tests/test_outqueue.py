"""OutQueue: bounded, coalescing, one writer per stream. Virtual time, fail_after ceilings."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pnode.net.outqueue import OutQueue


class RecordingStream(trio.abc.SendStream):
    """Records every send_all; while ``gate`` is set to an unset Event, sends block on it."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.raw: list[bytes | bytearray | memoryview] = []
        self.gate: trio.Event | None = None
        self.in_send = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.raw.append(data)
        self.calls.append(bytes(data))
        self.in_send = True
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self.in_send = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def received(self) -> bytes:
        return b"".join(self.calls)


def frames(n: int, start: int = 0) -> list[bytes]:
    return [b"frame-%04d;" % i for i in range(start, start + n)]


# -- Synchronous side -----------------------------------------------------------------------


def test_put_nowait_beyond_the_limit_drops_and_counts() -> None:
    q = OutQueue(10)
    assert q.put_nowait(b"x" * 6) is True
    assert q.put_nowait(b"y" * 5) is False
    assert q.dropped == 1
    assert len(q) == 6
    assert q.put_nowait(b"z" * 4) is True  # exactly the limit fits
    assert len(q) == 10
    assert q.put_nowait(b"!") is False
    assert q.dropped == 2


def test_put_force_always_queues() -> None:
    q = OutQueue(10)
    q.put_nowait(b"x" * 10)
    q.put_force(b"control" * 10)
    assert len(q) == 80
    assert q.dropped == 0
    assert q.put_nowait(b"y") is False


def test_nothing_is_queued_after_close() -> None:
    q = OutQueue(10)
    q.put_nowait(b"a")
    q.close()
    assert q.closing
    assert q.put_nowait(b"b") is False
    q.put_force(b"c")
    assert len(q) == 1
    assert q.dropped == 0  # refused because closed, not because full


# -- The writer -----------------------------------------------------------------------------


async def test_writer_coalesces_what_piled_up_into_one_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(1 << 20)
    stream = RecordingStream()
    items = frames(200)
    for item in items:
        assert q.put_nowait(item)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream.calls) == 1
            q.close()
    assert stream.received() == b"".join(items)
    assert q.sent_bytes == len(stream.received())


async def test_writer_batches_puts_made_during_a_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(1 << 20)
    stream = RecordingStream()
    stream.gate = trio.Event()
    first, second = frames(3), frames(300, start=3)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            for item in first:
                q.put_nowait(item)
            await trio.testing.wait_all_tasks_blocked()
            assert stream.in_send
            assert len(stream.calls) == 1
            for item in second:  # all of these pile up while the first send is blocked
                q.put_nowait(item)
            assert len(q) == sum(map(len, second))
            stream.gate.set()
            stream.gate = None
            await trio.testing.wait_all_tasks_blocked()
            q.close()
    assert stream.calls == [b"".join(first), b"".join(second)]
    # What was handed to send_all is never changed afterwards.
    assert [bytes(r) for r in stream.raw] == stream.calls
    assert q.sent_bytes == sum(map(len, first + second))


async def test_all_bytes_arrive_in_order_over_a_memory_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(1 << 16)
    send, receive = trio.testing.memory_stream_one_way_pair()
    items = frames(1000)
    expected = b"".join(items)
    got = bytearray()

    async def produce() -> None:
        for i, item in enumerate(items):
            q.put_nowait(item)
            if i % 37 == 0:
                await trio.lowlevel.checkpoint()  # let the writer run between bursts
        q.close()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, send)
            nursery.start_soon(produce)
            while len(got) < len(expected):
                got += await receive.receive_some()
    assert bytes(got) == expected
    assert q.dropped == 0


async def test_close_flushes_then_returns(autojump_clock: trio.testing.MockClock) -> None:
    q = OutQueue(1 << 16)
    stream = RecordingStream()
    q.put_nowait(b"last words")
    q.put_force(b"bye")
    q.close()
    with trio.fail_after(5):
        await q.run_writer(stream)  # returns by itself once everything is sent
    assert stream.received() == b"last wordsbye"
    assert len(q) == 0


async def test_close_wakes_an_idle_writer(autojump_clock: trio.testing.MockClock) -> None:
    q = OutQueue(100)
    stream = RecordingStream()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()
            q.close()
    assert stream.calls == []


async def test_close_during_a_send_still_sends_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(100)
    stream = RecordingStream()
    stream.gate = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            q.put_nowait(b"one")
            await trio.testing.wait_all_tasks_blocked()
            q.put_nowait(b"two")
            q.close()
            stream.gate.set()
            stream.gate = None
    assert stream.calls == [b"one", b"two"]


async def test_writer_raises_broken_when_the_peer_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(100)
    send, receive = trio.testing.memory_stream_one_way_pair()
    await receive.aclose()
    q.put_nowait(b"data")
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await q.run_writer(send)


async def test_stalled_for_counts_the_time_a_send_makes_no_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(1 << 20)
    stream = RecordingStream()
    stream.gate = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            await trio.sleep(5)
            assert q.stalled_for(trio.current_time()) == 0.0  # idle is not stalled
            start = trio.current_time()
            q.put_nowait(b"x" * 40_000)  # three slices
            await trio.sleep(2.5)  # the first slice is blocked
            assert q.stalled_for(trio.current_time()) == pytest.approx(2.5)
            stream.gate.set()
            stream.gate = None
            await trio.testing.wait_all_tasks_blocked()
            assert q.sent_bytes == 40_000
            assert q.stalled_for(trio.current_time()) == 0.0
            assert trio.current_time() == pytest.approx(start + 2.5)
            q.close()


# -- Backpressure -----------------------------------------------------------------------------


async def test_wait_writable_returns_at_once_when_at_most_half_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(100)
    q.put_nowait(b"x" * 50)
    start = trio.current_time()
    with trio.fail_after(5):
        await q.wait_writable()
    assert trio.current_time() == start


async def test_wait_writable_blocks_while_over_half_full_until_the_writer_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    q = OutQueue(100)
    stream = RecordingStream()
    stream.gate = trio.Event()
    woke: list[int] = []

    async def producer() -> None:
        await q.wait_writable()
        woke.append(len(q))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            q.put_nowait(b"x" * 51)
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []  # blocked: over half full and nobody drains
            nursery.start_soon(q.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()
            # The writer took the batch (the bytes being sent no longer count).
            assert woke == [0]
            assert stream.in_send

            # Over half full again while the send is still blocked: wait again.
            q.put_nowait(b"y" * 60)
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [0]
            stream.gate.set()
            stream.gate = None
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [0, 0]
            q.close()
    assert stream.received() == b"x" * 51 + b"y" * 60


async def test_close_releases_wait_writable(autojump_clock: trio.testing.MockClock) -> None:
    q = OutQueue(100)
    q.put_nowait(b"x" * 90)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.wait_writable)
            await trio.testing.wait_all_tasks_blocked()
            q.close()
            # The writer is not running: only close() can release the waiter.
            nursery.cancel_scope.deadline = trio.current_time() + 1
    assert not nursery.cancel_scope.cancelled_caught


async def test_a_reply_queued_without_wake_waits_for_wake(
        autojump_clock: trio.abc.Clock) -> None:
    # The API server queues a read's replies without waking the writer, writes them
    # itself (try_send) and wakes the writer only for what the socket did not take.
    q = OutQueue(1 << 20)
    stream = RecordingStream()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()
            q.put_force(b"reply", wake=False)
            await trio.testing.wait_all_tasks_blocked()
            assert stream.calls == []  # the writer sleeps on
            q.wake()
            await trio.testing.wait_all_tasks_blocked()
            assert stream.calls == [b"reply"]
            q.close()


def test_try_send_writes_what_the_socket_takes_and_leaves_the_rest() -> None:
    """``try_send``: everything at once into a socket with room; with the socket's
    buffer full, nothing (no wait, no error: the writer sends it later); nothing once
    the queue is closing."""
    import socket

    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        q = OutQueue(limit=1 << 20)
        q.put_nowait(b"event 1\n")
        q.try_send(a.fileno())
        assert len(q) == 0
        assert q.sent_bytes == 8
        assert b.recv(100) == b"event 1\n"
        while True:  # fill the socket: the reader reads nothing
            try:
                a.send(b"x" * 65536)
            except BlockingIOError:
                break
        q.put_nowait(b"event 2\n")
        q.try_send(a.fileno())
        assert len(q) == 8  # left for the writer
        q.close()
        q.try_send(a.fileno())
        assert len(q) == 8
    finally:
        a.close()
        b.close()


async def test_try_send_leaves_a_send_under_way_alone() -> None:
    """While the writer's send is under way, ``try_send`` writes nothing (never two
    writers on one stream: the bytes would interleave)."""
    import socket

    a, b = socket.socketpair()
    q = OutQueue(limit=1 << 20)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    try:
        while True:  # a full socket: the writer's send waits
            try:
                a.send(b"x" * 65536)
            except BlockingIOError:
                break
        q.put_nowait(b"y" * 1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(q.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for room
            b.setblocking(False)
            while True:  # room again, before the writer gets a turn
                try:
                    b.recv(1 << 20)
                except BlockingIOError:
                    break
            q.put_nowait(b"event\n")
            q.try_send(a.fileno())
            assert len(q) == 6  # not written past the writer's send
            nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()
        b.close()
