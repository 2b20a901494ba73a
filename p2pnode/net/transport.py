"""How a node reaches other nodes: TCP here, memory streams in tests and simulations.

A transport listens (handing each inbound stream to a handler) and connects.
Links run over any ``trio.abc.Stream``, so TLS or memory streams fit the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from ..config.settings import format_hostport

StreamHandler = Callable[[trio.abc.Stream, str], Awaitable[None]]


@dataclass(frozen=True)
class TransportCounters:
    """What a transport counts (for the status reply): TLS handshakes done, failed, and
    refused because too many were under way; connections refused per address."""

    handshakes: int = 0
    failed: int = 0
    busy: int = 0
    refused_per_ip: int = 0


class Transport(Protocol):
    """What the node needs from a network."""

    def counters(self) -> TransportCounters:
        """The transport's counters so far."""

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept streams forever, calling ``handler(stream, remote_addr)`` for each
        in its own task. ``task_status.started((host, port))`` reports the address
        really bound once listening."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to ``host:port``. Raises ``OSError`` when that fails."""


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "?"
    return format_hostport(str(addr[0]), int(addr[1]))


class TcpTransport:
    """Plain TCP through trio.

    Args:
        max_per_ip: the most inbound connections open at once from one address; more
            are closed as soon as they are accepted (``refused_per_ip`` counts them).
    """

    def __init__(self, max_per_ip: int | None = None) -> None:
        self.max_per_ip = max_per_ip
        self.per_ip: dict[str, int] = {}
        self.refused_per_ip = 0

    def counters(self) -> TransportCounters:
        """Connections refused per address (no handshakes on plain TCP)."""
        return TransportCounters(refused_per_ip=self.refused_per_ip)

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        try:
            sockname = listeners[0].socket.getsockname()

            async def serve_one(stream: trio.SocketStream) -> None:
                name = _peer_name(stream)
                ip = name.rsplit(":", 1)[0]
                count = self.per_ip.get(ip, 0)
                if self.max_per_ip is not None and count >= self.max_per_ip:
                    self.refused_per_ip += 1
                    await trio.aclose_forcefully(stream)
                    return
                self.per_ip[ip] = count + 1
                try:
                    await handler(stream, name)
                finally:
                    self.per_ip[ip] -= 1
                    if not self.per_ip[ip]:
                        del self.per_ip[ip]
                    await trio.aclose_forcefully(stream)

            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(_accept_loop, listener, serve_one, nursery)
                task_status.started((str(sockname[0]), int(sockname[1])))
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)


async def _accept_loop(
    listener: trio.SocketListener,
    serve_one: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept connections and start a task for each. Survives fd exhaustion."""
    while True:
        try:
            stream = await listener.accept()
        except OSError:
            # EMFILE and friends: back off a little instead of spinning.
            await trio.sleep(0.1)
            continue
        nursery.start_soon(serve_one, stream)
