"""The trio client writes a lone publish with one non-blocking write (no ``send_all``,
no pass through trio's scheduler), and finishes a write the socket took in part with
``send_all``, in order."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pnode.client import Client
from p2pnode.client import protocol as client_protocol


async def read_upto(sock: trio.socket.SocketType, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        data = await sock.recv(1 << 20)
        assert data, "the connection ended early"
        got += data
    return got


async def test_a_lone_publish_is_written_at_once_and_a_partial_write_finished_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_protocol, "LONE_GAP", 0.0)  # every publish counts as lone
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with left, right:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        peer = trio.socket.from_stdlib_socket(right)
        client = Client(stream)
        sends: list[int] = []
        send_all = stream.send_all

        async def counting(data: bytes | bytearray | memoryview) -> None:
            sends.append(len(data))
            await send_all(data)

        stream.send_all = counting  # type: ignore[method-assign]
        await client.publish("t", "first")
        assert sends == []  # one os.write took it all
        assert b'"first"' in await read_upto(peer, b"first")
        big = "y" * 300_000  # more than the socket takes at once
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def read() -> None:
                got.append(await read_upto(peer, b'"last"'))

            nursery.start_soon(read)
            await client.publish("t", big)
            await client.publish("t", "last")
        assert len(sends) >= 1  # the rest of the big one went by send_all
        data = got[0]
        assert data.index(big.encode()) < data.index(b'"last"')
        assert data.count(b'"op":"publish"') == 2
