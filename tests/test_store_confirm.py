"""The ``ok`` to a publish once the message is stored (docs/store.md, "Durability
levels"), and publishes while the disk is full ("When the disk is full"): a real node
with its store, a raw client on its socket, and the store's writes held back or made to
fail (SQLite's ``max_page_count``: SQLITE_FULL) from the test."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.node import Node
from p2pnode.store.db import MessageStore, Row, StoreFull
from p2pnode.store.service import StoreService
from p2pnode.testing.memory import wait_until

from .conftest import loopback_config, running_nodes


class RawConn:
    """A client on a node's socket that can tell whether a reply has come yet."""

    def __init__(self, node: Node) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(node.config.socket_path))
        self.sock.setblocking(False)
        self.buf = b""

    async def send(self, *requests: dict[str, Any]) -> None:
        data = memoryview(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        while data:
            try:
                data = data[self.sock.send(data):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    def pending(self) -> bytes:
        """What has come and not been read yet, without waiting."""
        try:
            while data := self.sock.recv(1 << 20):
                self.buf += data
        except BlockingIOError:
            pass
        return self.buf

    async def line(self) -> dict[str, Any]:
        while b"\n" not in self.pending():
            await trio.lowlevel.wait_readable(self.sock)
        line, self.buf = self.buf.split(b"\n", 1)
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def replies(self, n: int) -> list[dict[str, Any]]:
        """The next ``n`` replies (events skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            obj = await self.line()
            if "event" not in obj:
                out.append(obj)
        return out


Connect = Callable[[Node], "RawConn"]


@pytest.fixture
def connect() -> Iterator[Callable[[Node], RawConn]]:
    """``connect(node)``: a ``RawConn``, closed after the test."""
    conns: list[RawConn] = []

    def make(node: Node) -> RawConn:
        conns.append(RawConn(node))
        return conns[-1]

    yield make
    for conn in conns:
        conn.sock.close()


def service_of(node: Node) -> StoreService:
    service = node.storing.service
    assert service is not None
    return service


@contextmanager
def held_writes(service: StoreService) -> Iterator[threading.Event]:
    """Every write of the store waits (in its worker thread) until the event is set;
    set on the way out. No write is made on the event loop meanwhile (``write_now``)."""
    release = threading.Event()
    real = service.store.append

    def append(rows: list[Row], acks: Any = ()) -> int:
        release.wait(10)
        return real(rows, acks)

    service.store.append = append  # type: ignore[method-assign]
    service.write_inline = False
    try:
        yield release
    finally:
        release.set()
        service.write_inline = True


async def test_the_ok_comes_once_the_message_is_stored(short_tmp: Path, connect: Connect) -> None:
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            conn = connect(node)
            with held_writes(service) as release:
                before = service.queued
                await conn.send({"op": "publish", "topic": "t", "data": "x", "id": 1})
                await wait_until(lambda: service.queued > before)  # flushed: kept
                # The old node had answered by now (before it even signed the batch).
                assert conn.pending() == b""
                release.set()
                (reply,) = await conn.replies(1)
            assert reply["ok"]
            assert reply["id"] == 1
            assert service.committed >= before + 1


async def test_with_sync_off_the_ok_comes_at_once(short_tmp: Path, connect: Connect) -> None:
    with trio.fail_after(10):
        cfg = loopback_config(short_tmp, "a", store_sync="off")
        async with running_nodes([cfg]) as (node,):
            conn = connect(node)
            with held_writes(service_of(node)):
                await conn.send({"op": "publish", "topic": "t", "data": "x", "id": 1})
                (reply,) = await conn.replies(1)  # while the write is held
                assert reply["ok"]


async def test_one_wait_per_read_and_sync_waits_too(short_tmp: Path, connect: Connect) -> None:
    # 3,000 pipelined publishes, most quiet, then a sync: the replies wait for the store
    # a read at a time (a few waits, not one per message), and come in order.
    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            waits = []
            real_wait = service.wait_stored

            async def counting_wait(upto: int) -> None:
                waits.append(upto)
                await real_wait(upto)

            service.wait_stored = counting_wait  # type: ignore[method-assign]
            conn = connect(node)
            n = 3000
            reqs = [{"op": "publish", "topic": "t", "data": f"m{i}", "id": i,
                     "ack": i % 500 == 0} for i in range(n)]
            before = service.queued
            with held_writes(service) as release:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.send, *reqs, {"op": "sync", "id": "s"})
                    await wait_until(lambda: service.queued > before)  # a read flushed
                    assert conn.pending() == b""  # the old node had answered id 0
                    release.set()
                    replies = await conn.replies(n // 500 + 1)
            assert [r["id"] for r in replies] == [*range(0, n, 500), "s"]
            assert all(r["ok"] for r in replies)
            assert 1 <= len(waits) <= 40  # reads of up to 64 KiB: about 6
            stored = await service.call(service.store.stats)
            assert stored.messages >= n


async def test_publishes_to_this_node_do_not_wait_forever(short_tmp: Path,
                                                         connect: Connect) -> None:
    # A message to this node itself is delivered here and never becomes a batch: nothing
    # is stored, and its ok comes anyway (as does the sync after a quiet one).
    with trio.fail_after(10):
        cfg = loopback_config(short_tmp, "a", mesh_interval=0)  # no announcements
        async with running_nodes([cfg]) as (node,):
            service = service_of(node)
            await wait_until(lambda: service.committed == service.queued)
            queued = service.queued
            conn = connect(node)
            await conn.send({"op": "publish", "topic": "t", "data": "me", "to": node.node_hex,
                             "id": 1})
            await conn.send({"op": "publish", "topic": "t", "data": "me", "to": node.node_hex,
                             "ack": False}, {"op": "sync", "id": 2})
            replies = await conn.replies(2)
            assert [r["id"] for r in replies] == [1, 2]
            assert all(r["ok"] for r in replies)
            assert service.queued == queued


async def set_max_pages(service: StoreService, pages: int | None) -> None:
    """Let the store's file grow to ``pages`` pages at most (None: as large as it is now),
    through SQLite's ``max_page_count``: past it, writes fail with SQLITE_FULL."""

    def run() -> None:
        db = service.store._db
        count = pages or db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {count}").fetchone()

    await service.call(run)


async def test_a_full_disk_fails_publishes_clearly_and_the_node_goes_on(
        short_tmp: Path, connect: Connect) -> None:
    big = "x" * 3000  # a batch of three takes new pages
    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            service.retry = 0.05
            path = str(service.store.path)
            conn = connect(node)
            await conn.send({"op": "subscribe", "topics": ["t"], "id": "sub"})
            assert (await conn.replies(1))[0]["ok"]
            await set_max_pages(service, None)
            quiet = {"op": "publish", "topic": "t", "data": big, "ack": False}
            await conn.send(*[{"op": "publish", "topic": "t", "data": big, "id": i}
                              for i in range(3)], quiet, quiet, {"op": "sync", "id": "s"})
            replies = await conn.replies(6)
            assert [r.get("id") for r in replies] == [0, 1, 2, None, None, "s"]
            for r in replies[:5]:
                assert r["error"]["code"] == "store_full"
                assert path in r["error"]["message"]
                assert "not confirmed" in r["error"]["message"]
            assert [r["req"] for r in replies[3:5]] == [5, 6]  # the quiet ones, by number
            assert replies[5]["ok"]
            # While the disk is full: publishes are refused at once; the rest works.
            published = node.published
            await conn.send({"op": "publish", "topic": "t", "data": "y", "id": "p"},
                      {"op": "status", "id": "st"}, {"op": "subscribe", "topics": ["u"]},
                      {"op": "peers", "id": "pe"})
            refused, status, sub, peers = await conn.replies(4)
            assert refused["error"]["code"] == "store_full"
            assert "nothing was published" in refused["error"]["message"]
            assert path in refused["error"]["message"]
            assert node.published == published
            assert status["ok"]
            assert sub["ok"]
            assert peers["ok"]
            # Room again: the messages kept waiting are written, publishes work.
            await set_max_pages(service, 1 << 20)
            await wait_until(lambda: service.error is None, poll=0.02)
            assert service.committed == service.queued
            await conn.send({"op": "publish", "topic": "t", "data": "z", "id": "again"})
            assert (await conn.replies(1))[0]["ok"]
            stats = await service.call(service.store.stats)
            assert stats.messages >= 6  # the five that failed, and the last


async def test_a_connection_has_a_bounded_number_of_publishes_waiting(
        short_tmp: Path, connect: Connect) -> None:
    # client_queue_bytes / 256 = 256 publishes may wait for the store: past that the
    # node stops reading the connection until the store catches up.
    with trio.fail_after(20):
        cfg = loopback_config(short_tmp, "a", client_queue_bytes=64 << 10)
        async with running_nodes([cfg]) as (node,):
            service = service_of(node)
            conn = connect(node)
            n = 5000
            with held_writes(service) as release:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.send, *[
                        {"op": "publish", "topic": "t", "data": "m", "ack": False}
                        for _ in range(n)], {"op": "sync", "id": "s"})
                    await wait_until(lambda: node.published > 256)
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    assert node.published < 2000  # 256, and a read at most on top
                    release.set()
                    (reply,) = await conn.replies(1)
            assert reply == {"id": "s", "ok": True}
            assert node.published == n


async def test_rows_queued_after_a_failed_write_wait_for_the_next_try(tmp_path: Path) -> None:
    # Only the rows a failed write held fail at once: a publish that comes after the
    # failure waits for the next try (there may be room by then), not a store_full.
    store = MessageStore(tmp_path / "s.sqlite3", max_age=0, max_bytes=0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    service = StoreService(store, retry=0.5)
    row = Row(bytes(16), 1, 1, bytes(16), bytes(16), bytes(16), time.time(), 1, b"x" * 8000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            service.keep(row)
            with pytest.raises(StoreFull):
                await service.wait_stored(service.queued)
            store._db.execute("PRAGMA max_page_count=1000000")  # while the writer waits
            service.keep(replace(row, seq=2))
            await service.wait_stored(service.queued)  # the next try writes both
            assert service.error is None
            assert store.rows == 2
            nursery.cancel_scope.cancel()


async def test_an_app_that_stops_sending_still_gets_its_oks(short_tmp: Path,
                                                             connect: Connect) -> None:
    # Publishes, then the end of what the app sends (shutdown): the node answers them
    # once they are stored, before it closes the connection.
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            conn = connect(node)
            with held_writes(service) as release:
                await conn.send(*[{"op": "publish", "topic": "t", "data": "m", "id": i}
                                  for i in range(100)])
                conn.sock.shutdown(socket.SHUT_WR)
                await wait_until(lambda: node.published == 100)
                release.set()
                replies = await conn.replies(100)
            assert [r["id"] for r in replies] == list(range(100))
            assert conn.buf == b""
            while True:  # and then the end of the connection
                await trio.lowlevel.wait_readable(conn.sock)
                if not conn.sock.recv(65536):
                    break
