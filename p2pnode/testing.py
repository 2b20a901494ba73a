"""Helpers shared by the tests and the simulator: an in-memory network of nodes.

``MemoryNetwork`` is a ``Transport`` factory: nodes listen on made-up addresses
(``"mem"``, port N) and connect to each other through ``trio`` memory streams,
so whole meshes run in one process, in virtual time if the caller wants.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import trio
import trio.testing

from .net.transport import StreamHandler


@dataclass
class MemoryNetwork:
    """A switchboard of in-memory listeners, keyed by port."""

    _listeners: dict[int, tuple[trio.Nursery, StreamHandler]] = field(default_factory=dict)
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    connections: int = 0

    def transport(self) -> MemoryTransport:
        """A transport attached to this network."""
        return MemoryTransport(self)


class MemoryTransport:
    """A ``Transport`` over a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.port: int | None = None

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        net = self.network
        if port == 0:
            port = next(p for p in net._ports if p not in net._listeners)
        if port in net._listeners:
            raise OSError(f"memory port {port} in use")
        async with trio.open_nursery() as nursery:
            net._listeners[port] = (nursery, handler)
            self.port = port
            try:
                task_status.started(("mem", port))
                await trio.sleep_forever()
            finally:
                del net._listeners[port]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        entry = self.network._listeners.get(port)
        if entry is None:
            raise ConnectionRefusedError(f"nothing listens on mem:{port}")
        nursery, handler = entry
        ours, theirs = trio.testing.memory_stream_pair()
        self.network.connections += 1
        nursery.start_soon(handler, theirs, f"mem:{self.port or 0}")
        return ours
