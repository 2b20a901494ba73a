"""A request that comes alone (docs/performance.md, "What apps get"): read straight from
the app's socket (``Session.receive``), its reply written straight back without a
wake-up of the session's writer task, and replies never stranded behind a request that
waits."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api.session import Session
from p2pnode.config.settings import NodeConfig
from p2pnode.node import Node
from p2pnode.testing.memory import wait_until

from .conftest import loopback_config, running_nodes
from .test_api_server import LineConn


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def session_on(sock: socket.socket) -> Session:
    session = Session(NodeConfig())
    session.fd = sock.fileno()
    return session


async def test_receive_takes_what_is_there_and_waits_for_the_rest(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    session = session_on(a)
    b.sendall(b"one\n")
    with trio.fail_after(5):
        assert await session.receive() == b"one\n"
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def read() -> None:
                got.append(await session.receive())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # nothing there: it waits
            b.sendall(b"two\n")
        assert got == [b"two\n"]
        b.shutdown(socket.SHUT_WR)
        assert await session.receive() == b""


async def test_receive_loses_nothing_to_a_cancellation(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    session = session_on(a)
    b.sendall(b"kept\n")
    with trio.CancelScope() as scope:
        scope.cancel()
        await session.receive()
    assert scope.cancelled_caught
    assert await session.receive() == b"kept\n"


async def test_a_failed_connection_is_a_broken_resource(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"never read")
    b.close()  # with unread data: the other end gets ECONNRESET
    with pytest.raises(trio.BrokenResourceError):
        await session_on(a).receive()


class StepCounter(trio.abc.Instrument):
    """Task steps, by task name."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name] += 1


@pytest.mark.parametrize("store", ["none", "sqlite"])
async def test_a_lone_request_wakes_no_writer_task(short_tmp: Path, store: str) -> None:
    # With the store, the publish's row is written at once (StoreService.write_now)
    # while no other write is under way: the node publishes nothing of its own here.
    cfg = loopback_config(short_tmp, "a", store=store, mesh_interval=0)
    with trio.fail_after(10):
        async with running_nodes([cfg]) as (node,):
            conn = await LineConn.open(node)
            assert (await conn.ask({"op": "sync"}))["ok"]
            service = node.storing.service
            if service is not None:
                await wait_until(lambda: service.committed == service.queued)
            await trio.testing.wait_all_tasks_blocked()  # the session's tasks started
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                sync = await conn.ask({"op": "sync", "id": 1})
                pub = await conn.ask({"op": "publish", "topic": "t", "data": "x", "id": 2})
                await trio.testing.wait_all_tasks_blocked()
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert sync == {"id": 1, "ok": True}
            assert pub["ok"]
            assert any("_serve_client" in name for name in counter.steps)  # it counted
            assert not [name for name in counter.steps if name.endswith("ApiServer._write")]
            assert service is None or service.inline_writes >= 1
            await conn.stream.aclose()


async def test_replies_before_a_waiting_request_go_at_once(node_a: Node) -> None:
    # One read: a sync, then a peers request that waits 5 s for a peer that never
    # comes: the sync's reply goes while it waits.
    with trio.fail_after(10):
        conn = await LineConn.open(node_a)
        await conn.send_raw(b'{"op":"sync","id":"s"}\n'
                            b'{"op":"peers","wait_min":1,"timeout":5,"id":"w"}\n')
        with trio.fail_after(2):
            assert await conn.line() == {"id": "s", "ok": True}
        await conn.stream.aclose()


@pytest.fixture
async def node_a(short_tmp: Path) -> Any:
    async with running_nodes([loopback_config(short_tmp, "a")]) as (n,):
        yield n
