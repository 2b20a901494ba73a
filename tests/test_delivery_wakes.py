"""Events queued during a read of a link wake no writer task: ``send_touched`` writes
them straight to the app's socket and wakes the writer only for what the socket did
not take (api.delivery). Outside a read, an event wakes the writer as before."""

from __future__ import annotations

import socket

import trio
import trio.testing

from p2pnode.api.delivery import DeliveryOps
from p2pnode.api.monitor import MonitorHub
from p2pnode.api.session import ApiStats, Session
from p2pnode.api.subscribers import Subscribers
from p2pnode.config.settings import NodeConfig
from p2pnode.wire.messages import Gossip


class Sends(trio.abc.SendStream):
    """Records what the session's writer task sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Deliveries(DeliveryOps):
    def __init__(self) -> None:
        self.stats = ApiStats()
        self._subs: Subscribers[Session] = Subscribers()
        self._touched: set[Session] = set()
        self._holding = False
        self.monitors = MonitorHub(self._send_event)


def message(n: int) -> Gossip:
    return Gossip(b"\x01" * 16, b"\x02" * 32, "t", b"m%d" % n, 1)


async def test_events_of_a_read_go_straight_to_the_socket_without_the_writer(
        autojump_clock: trio.testing.MockClock) -> None:
    ops = Deliveries()
    session = Session(NodeConfig())
    ops._subs.by_topic["t"] = {session}
    app, node = socket.socketpair()
    node.setblocking(False)
    session.fd = node.fileno()
    stream = Sends()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.out.run_writer, stream)
            await trio.testing.wait_all_tasks_blocked()
            ops.hold_wakes()  # a read of a link begins
            ops.deliver(message(1))
            await trio.testing.wait_all_tasks_blocked()
            assert stream.sent == []  # the writer was not woken: it sleeps on
            ops.send_touched()  # the read is over
            assert b'"data":"m1"' in app.recv(65536)
            await trio.testing.wait_all_tasks_blocked()
            assert stream.sent == []  # nothing was left for it

            # The socket full: what it does not take goes to the writer.
            while True:
                try:
                    node.send(b"x" * 65536)
                except BlockingIOError:
                    break
            ops.hold_wakes()
            ops.deliver(message(2))
            ops.send_touched()
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream.sent) == 1
            assert b'"data":"m2"' in stream.sent[0]

            # Outside a read (a local publish), an event wakes the writer at once.
            ops.deliver(message(3))
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream.sent) == 2
            assert b'"data":"m3"' in stream.sent[1]
            session.out.close()
    finally:
        app.close()
        node.close()
