"""Requests answered after a wait: ``peers`` with ``wait_min``/``wait_max`` (held until
the number of peers is within bounds, or its timeout, or the client hangs up), and
``store`` (read in the store's worker thread)."""

from __future__ import annotations

import select
import socket as stdsocket
from typing import Any, Protocol

import trio

from ..errors import P2PError
from .protocol import ApiError, Peers, StoreOp, encode_reply


class PeerCount(Protocol):
    """What waiting for peers needs from the node."""

    async def wait_peer_count(self, low: int, high: int) -> None: ...
    def peers_info(self) -> list[dict[str, Any]]: ...


class StoreInfo(Protocol):
    """What the ``store`` op needs from the node."""

    async def store_info(self) -> dict[str, Any]: ...


async def store_reply(backend: StoreInfo, req: StoreOp) -> bytes | ApiError:
    """The reply to ``store``, or the ``store_failed`` error (the node stops, the file
    is broken)."""
    try:
        return encode_reply(req.id, await backend.store_info())
    except P2PError as exc:
        return ApiError("store_failed", str(exc), req.id)


async def wait_peers(backend: PeerCount, req: Peers,
                     stream: trio.SocketStream) -> bytes | ApiError | None:
    """Hold ``req`` until the peer count is within its bounds or its timeout. Returns
    the reply line, the ``timeout`` error, or None if the client hung up meanwhile."""
    low = req.wait_min or 0
    high = req.wait_max if req.wait_max is not None else 1 << 30
    gone = False
    with trio.move_on_after(req.timeout) as scope:
        async with trio.open_nursery() as nursery:

            async def watch_hangup() -> None:
                nonlocal gone
                gone = await hung_up(stream)
                if gone:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch_hangup)
            await backend.wait_peer_count(low, high)
            nursery.cancel_scope.cancel()
    if gone:
        return None
    if scope.cancelled_caught:
        peers = backend.peers_info()
        bounds = " and ".join(
            f"{word} {n}" for word, n in (("at least", req.wait_min), ("at most", req.wait_max))
            if n is not None)
        return ApiError("timeout", f"after {req.timeout}s the node has {len(peers)} "
                        f"peers, not {bounds}", req.id)
    return encode_reply(req.id, {"peers": backend.peers_info()})


async def hung_up(stream: trio.SocketStream) -> bool:
    """Wait until the client hangs up, without consuming what it sends; returns True
    then. A client that sends more, or only shuts down its sending side (it still
    reads: ``echo REQUEST | nc -N``), never counts as gone: this waits for ever."""
    try:
        data = await stream.socket.recv(1, stdsocket.MSG_PEEK)
    except OSError:
        return True
    if not data and _peer_closed(stream.socket.fileno()):
        return True
    await trio.sleep_forever()  # busy or half-closed client: its reply will come
    raise AssertionError("unreachable")


def _peer_closed(fd: int) -> bool:
    """Whether the other end closed the socket entirely (POLLHUP), not just its writes."""
    poller = select.poll()
    poller.register(fd, select.POLLHUP)
    return any(events & select.POLLHUP for _fd, events in poller.poll(0))
