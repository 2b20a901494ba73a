"""FrameDecoder and encode_frame, tested three ways (h11 style): whole, byte by byte, trailing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pnode.errors import LocalError, RemoteProtocolError
from p2pnode.wire.frames import HEADER_LEN, FrameDecoder, encode_frame

MAX = 64
Feeder = Callable[[bytes], tuple[list[bytes], FrameDecoder]]

BODIES = [b"", b"a", b"hello", b"\x00\xff" * 10, b"", bytes(range(MAX)), b"x"]


def feed_whole(data: bytes, max_frame: int = MAX) -> tuple[list[bytes], FrameDecoder]:
    dec = FrameDecoder(max_frame)
    return dec.feed(data), dec


def feed_bytewise(data: bytes, max_frame: int = MAX) -> tuple[list[bytes], FrameDecoder]:
    dec = FrameDecoder(max_frame)
    out: list[bytes] = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i : i + 1]))
    return out, dec


def feed_chunks(
    data: bytes, size: int, max_frame: int = MAX
) -> tuple[list[bytes], FrameDecoder]:
    dec = FrameDecoder(max_frame)
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out.extend(dec.feed(data[i : i + size]))
    return out, dec


FEEDERS = [
    pytest.param(feed_whole, id="whole"),
    pytest.param(feed_bytewise, id="bytewise"),
    pytest.param(lambda d: feed_chunks(d, 3), id="chunks3"),
    pytest.param(lambda d: feed_chunks(d, 7), id="chunks7"),
]


def test_encode_frame_layout() -> None:
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"
    assert HEADER_LEN == 4


@pytest.mark.parametrize("feeder", FEEDERS)
def test_many_frames(feeder: Feeder) -> None:
    data = b"".join(encode_frame(b) for b in BODIES)
    frames, dec = feeder(data)
    assert frames == BODIES
    assert dec.buffered == 0


@pytest.mark.parametrize("feeder", FEEDERS)
@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 9])
def test_trailing_partial_frame(feeder: Feeder, cut: int) -> None:
    complete = b"".join(encode_frame(b) for b in BODIES)
    tail_frame = encode_frame(b"trailing!")
    frames, dec = feeder(complete + tail_frame[:cut])
    assert frames == BODIES
    assert dec.buffered == cut
    # The rest completes the frame, and nothing more.
    assert dec.feed(tail_frame[cut:]) == [b"trailing!"]
    assert dec.buffered == 0


@pytest.mark.parametrize("feeder", FEEDERS)
def test_zero_length_frames(feeder: Feeder) -> None:
    frames, dec = feeder(encode_frame(b"") * 5)
    assert frames == [b""] * 5
    assert dec.buffered == 0


def test_one_feed_returns_every_complete_frame() -> None:
    bodies = [bytes([i]) * i for i in range(50)]
    dec = FrameDecoder(MAX)
    frames = dec.feed(b"".join(encode_frame(b) for b in bodies))
    assert frames == bodies
    assert all(type(f) is bytes for f in frames)


def test_empty_feed_and_bytearray_input() -> None:
    dec = FrameDecoder(MAX)
    assert dec.feed(b"") == []
    assert dec.feed(bytearray(encode_frame(b"ab"))) == [b"ab"]
    assert dec.feed(bytearray()) == []


def test_returned_frames_do_not_alias_the_buffer() -> None:
    dec = FrameDecoder(MAX)
    data = bytearray(encode_frame(b"abc") + encode_frame(b"de")[:3])
    frames = dec.feed(data)
    data[:] = b"\xff" * len(data)
    assert dec.feed(b"\x02de") == [b"de"]
    assert frames == [b"abc"]


def test_exactly_max_is_accepted() -> None:
    body = b"m" * MAX
    assert feed_whole(encode_frame(body))[0] == [body]
    assert feed_bytewise(encode_frame(body))[0] == [body]


def test_oversize_raises_as_soon_as_the_header_is_in() -> None:
    dec = FrameDecoder(MAX)
    header = (MAX + 1).to_bytes(4, "big")
    for b in header[:3]:
        assert dec.feed(bytes([b])) == []
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(header[3:])  # no body byte has arrived yet
    assert info.value.code == "too_large"
    assert dec.buffered == 0
    # The framing is lost: the decoder refuses further use.
    with pytest.raises(LocalError):
        dec.feed(b"x" * (MAX + 1))
    with pytest.raises(LocalError):
        dec.feed(b"")


def test_oversize_after_valid_frames_in_the_same_feed() -> None:
    dec = FrameDecoder(MAX)
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(encode_frame(b"ok") + (2**32 - 1).to_bytes(4, "big"))
    assert info.value.code == "too_large"
    with pytest.raises(LocalError):
        dec.feed(encode_frame(b"ok"))


def test_huge_declared_length_is_not_buffered() -> None:
    dec = FrameDecoder(1 << 20)
    with pytest.raises(RemoteProtocolError, match="too_large"):
        dec.feed(((1 << 20) + 1).to_bytes(4, "big") + b"partial body")
    assert dec.buffered == 0


def test_buffered_counts_partial_bytes() -> None:
    dec = FrameDecoder(MAX)
    frame = encode_frame(b"abcdef")
    for i, b in enumerate(frame[:-1], start=1):
        assert dec.feed(bytes([b])) == []
        assert dec.buffered == i
    assert dec.feed(frame[-1:]) == [b"abcdef"]
    assert dec.buffered == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_max_frame_must_be_positive(bad: int) -> None:
    with pytest.raises(LocalError):
        FrameDecoder(bad)
