"""The simulated network's frame-level effects: loss (dropped or retransmitted frames)
and counting frames per message tag (p2pnode.testing.SimNet), in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pnode.testing import SimNet
from p2pnode.testing.simnet import RTO, frame_tag
from p2pnode.wire import FrameDecoder
from p2pnode.wire.messages import Accept, Bye, Hello, Ping, decode_message, encode_message

HELLO = Hello(1, bytes(16), "a", "mem:1")


def ping(k: int) -> bytes:
    return encode_message(Ping(float(k), k, False))


async def carry(net: SimNet, frames: list[bytes], *, split: int = 0) -> list[tuple[float, object]]:
    """Write ``frames`` from node 1 to node 2 (cut into ``split``-byte writes if given);
    return what node 2 decodes, with the virtual time each frame arrived."""
    a, b = net.stream_pair(1, 2)
    data = b"".join(frames)
    pieces = [data[k:k + split] for k in range(0, len(data), split)] if split else frames
    for piece in pieces:
        await a.send_all(piece)
    await a.aclose()
    decoder = FrameDecoder(1 << 20)
    got: list[tuple[float, object]] = []
    while chunk := await b.receive_some():
        got += [(trio.current_time(), decode_message(body)) for body in decoder.feed(chunk)]
    return got


def run(net: SimNet, frames: list[bytes], **kw: int) -> list[tuple[float, object]]:
    async def main() -> list[tuple[float, object]]:
        return await carry(net, frames, **kw)
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_frame_tags_are_read_from_the_body() -> None:
    assert frame_tag(memoryview(encode_message(HELLO))[4:]) == 1
    assert frame_tag(memoryview(ping(3))[4:]) == 6
    assert frame_tag(b"") == -1
    assert frame_tag(b"\x01\x02") == -1  # not an array


def test_no_loss_carries_every_frame_and_counts_them_by_tag() -> None:
    net = SimNet(count_frames=True)
    frames = [encode_message(HELLO), encode_message(Accept())] + [ping(k) for k in range(50)]
    got = run(net, frames, split=7)  # frames cut across writes are still counted whole
    assert [m for _, m in got] == [decode_message(f[4:]) for f in frames]
    assert net.frame_counts == {1: 1, 2: 1, 6: 50}
    assert net.frame_bytes[6] == sum(len(f) for f in frames[2:])
    assert net.frames_lost == 0


def test_drop_loses_about_the_share_asked_but_never_the_handshake() -> None:
    net = SimNet(loss=0.2, seed=5)
    frames = [encode_message(HELLO), encode_message(Accept())]
    frames += [ping(k) for k in range(1000)] + [encode_message(Bye("x"))]
    got = [m for _, m in run(net, frames, split=100)]
    assert got[:2] == [HELLO, Accept()]
    assert got[-1] == Bye("x")
    pings = [m for m in got if isinstance(m, Ping)]
    assert 1000 - len(pings) == net.frames_lost
    assert 150 < net.frames_lost < 250
    assert [p.links for p in pings] == sorted(p.links for p in pings)  # order kept


def test_the_same_seed_loses_the_same_frames() -> None:
    frames = [ping(k) for k in range(300)]
    first = [m for _, m in run(SimNet(loss=0.1, seed=9), frames)]
    second = [m for _, m in run(SimNet(loss=0.1, seed=9), frames)]
    other = [m for _, m in run(SimNet(loss=0.1, seed=10), frames)]
    assert first == second != other


def test_retransmit_delivers_everything_late_and_in_order() -> None:
    net = SimNet(loss=0.1, loss_mode="retransmit", seed=3, latency=lambda: 0.001)
    frames = [ping(k) for k in range(200)]
    got = run(net, frames)
    assert [m for _, m in got] == [decode_message(f[4:]) for f in frames]
    assert net.frames_lost > 5
    times = [t for t, _ in got]
    assert times == sorted(times)
    assert times[-1] >= RTO  # at least one retransmission timeout was waited out


@pytest.mark.parametrize(("kw", "message"), [
    ({"loss": 1.0}, "loss 1.0"), ({"loss": -0.1}, "loss -0.1"),
    ({"loss_mode": "eat"}, "loss_mode 'eat'"),
])
def test_bad_loss_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimNet(**kw)  # type: ignore[arg-type]


def test_a_reader_behind_a_chunk_not_yet_due_is_not_woken_by_later_writes() -> None:
    # Chunks arrive in order, each after its latency: a write behind one not yet due
    # changes nothing for the reader (it sleeps until the first is due), so it is not
    # woken for it; a write into an empty pipe wakes it.
    latencies = iter([1.0, 0.25, 0.25])
    net = SimNet(latency=lambda: next(latencies))
    wakes: list[float] = []

    async def main() -> list[tuple[float, bytes]]:
        a, b = net.stream_pair(1, 2)
        pipe = a._out
        inner = pipe._wake

        def wake() -> None:
            wakes.append(trio.current_time())
            inner()

        pipe._wake = wake  # type: ignore[method-assign]
        got: list[tuple[float, bytes]] = []

        async def reader() -> None:
            while len(got) < 3:
                data = await b.receive_some(1)
                got.append((trio.current_time(), data))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await a.send_all(b"1")  # due at 1.0
            await trio.sleep(0.5)
            await a.send_all(b"2")  # due at 0.75, behind "1": read at 1.0
            await trio.sleep(1.0)
            await a.send_all(b"3")  # into an empty pipe, due at 1.75
        return got

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == [(1.0, b"1"), (1.0, b"2"), (1.75, b"3")]
    # Writes at 0.0 and 1.5 (into an empty pipe) and reads (which wake a writer waiting
    # for room) at 1.0, 1.0 and 1.75; none for the write at 0.5.
    assert wakes == [0.0, 1.0, 1.0, 1.5, 1.75]
