"""net.direct: a link's bytes written and read past trio's TLS stream layers, intact."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from p2pnode.identity import NetworkKey, NodeIdentity
from p2pnode.net.direct import Direct, direct_for
from p2pnode.net.outqueue import OutQueue
from p2pnode.net.tls import make_contexts

Pair = tuple[trio.SSLStream[trio.SocketStream], trio.SSLStream[trio.SocketStream],
             socket.socket]


@contextlib.asynccontextmanager
async def tls_pair() -> AsyncIterator[Pair]:
    """Two TLS streams over a socket pair, handshake done; and the first's socket,
    with a small send buffer (so that a large write goes in parts). Closed after."""
    a, b = socket.socketpair()
    with a, b:
        yield await _handshake(a, b)


async def _handshake(a: socket.socket, b: socket.socket) -> Pair:
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    network = NetworkKey.open()
    server_ctx, _ = make_contexts(NodeIdentity.generate(), network)
    _, client_ctx = make_contexts(NodeIdentity.generate(), network)
    left = trio.SSLStream(trio.SocketStream(trio.socket.from_stdlib_socket(a)), client_ctx,
                          server_hostname="p2pnode")
    right = trio.SSLStream(trio.SocketStream(trio.socket.from_stdlib_socket(b)), server_ctx,
                           server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.do_handshake)
        nursery.start_soon(right.do_handshake)
    return left, right, a


async def read_exactly(receive: object, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = await receive(65_536)  # type: ignore[operator]
        assert data, "the stream ended early"
        got += data
    return bytes(got)


async def test_direct_writes_and_the_writer_task_keep_the_stream_in_order() -> None:
    async with tls_pair() as (left, right, _):
        direct = direct_for(left)
        assert isinstance(direct, Direct)
        assert direct.tls is left
        out = OutQueue(1 << 24)
        out.direct = direct
        # Lone items go at once (the writer task is not even running); ones that follow
        # within LONE_GAP pile up for it; a large one goes in parts, the rest by finish().
        chunks = [b"a" * 10, b"b" * 20, bytes(range(256)) * 4000, b"c" * 30]
        out.put_nowait(chunks[0])
        assert len(out) == 0
        assert out.sent_bytes == 10
        out.put_nowait(chunks[1])
        assert len(out) == 20  # came too soon after the first: queued for the writer
        reader = direct_for(right)
        assert reader is not None
        total = sum(map(len, chunks))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(out.run_writer, left)
            await trio.sleep(0.001)
            out.put_nowait(chunks[2])  # lone again: written at once, in part
            out.put_nowait(chunks[3])
            got = await read_exactly(reader.receive, total)
            out.close()
        assert got == b"".join(chunks)
        assert not direct.pending


async def test_a_partial_direct_write_is_finished_before_anything_else() -> None:
    async with tls_pair() as (left, right, _):
        direct = direct_for(left)
        assert direct is not None
        big = b"x" * 500_000
        assert direct.write_now(big)
        assert direct.pending  # the socket took only part of it
        assert not direct.write_now(b"later")  # never two writes at once
        async with trio.open_nursery() as nursery:
            async def finish() -> None:
                await direct.finish()
                await left.send_all(b"after")  # the ordinary way, once finished
            nursery.start_soon(finish)
            got = await read_exactly(right.receive_some, len(big) + 5)
        assert got == big + b"after"


async def test_direct_receive_reports_the_end_and_tls_errors() -> None:
    async with tls_pair() as (left, right, raw):
        reader = direct_for(right)
        assert reader is not None
        await left.send_all(b"hello")
        assert await reader.receive(100) == b"hello"
        raw.send(b"\x17\x03\x03\x00\x05junk!")  # a record that does not decrypt
        with pytest.raises(trio.BrokenResourceError):
            await reader.receive(100)


async def test_in_memory_streams_have_no_direct_path() -> None:
    one, _ = trio.testing.memory_stream_pair()
    assert direct_for(one) is None
