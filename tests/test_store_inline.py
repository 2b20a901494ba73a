"""Small writes made at once on the event loop (``StoreService.write_now``, docs/store.md
"Durability levels"): a lone publish is confirmed once its message is committed,
without the round trip to the store's worker thread; big writes, writes while the file
is busy, ``--sync full`` and the write-ahead log's checkpoints stay in the thread."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import trio

from p2pnode.store import MessageStore, StoreService
from p2pnode.store.service import INLINE_MESSAGES, INLINE_RUN
from tests.test_store_db import rows

from .conftest import loopback_config, running_nodes
from .test_store_confirm import Connect, connect, service_of

__all__ = ["connect"]  # the fixture, used by name


def test_an_append_without_checkpoint_leaves_the_log_to_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    size = path.stat().st_size
    for seq in range(1, 401):  # 400 commits of a 4 KiB row: over 1,000 pages of log
        store.append(rows(1, start=seq, size=4000), checkpoint=False)
    assert Path(f"{path}-wal").stat().st_size > 1000 * 4096
    assert path.stat().st_size == size  # nothing copied into the file
    store.append(rows(1, start=401))  # a write that may checkpoint does
    assert path.stat().st_size > size + 400 * 4000
    assert store.rows == 401


async def test_small_writes_go_at_once_and_give_way_to_the_thread(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    service = StoreService(store)
    extra = INLINE_MESSAGES // 3 + 1  # rows of 3 messages: over INLINE_MESSAGES
    batch = iter(rows(INLINE_RUN + 1 + extra, age=time.time()))
    seen: list[int] = []
    service.on_stored.append(seen.append)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for n in range(1, INLINE_RUN + 1):
                service.keep(next(batch))
                assert service.write_now()
                assert service.committed == service.queued == n  # stored on return
                assert seen[-1] == n
            service.keep(next(batch))
            assert not service.write_now()  # INLINE_RUN in a row: the thread's turn
            await service.wait_stored(service.queued)
            assert service.inline_writes == INLINE_RUN
            assert service.writes == INLINE_RUN + 1
            for _ in range(extra):
                service.keep(next(batch))
            assert not service.write_now()  # too many messages for the event loop
            await service.wait_stored(service.queued)
            assert store.rows == INLINE_RUN + 1 + extra
            nursery.cancel_scope.cancel()


async def test_no_write_at_once_while_the_thread_uses_the_file(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    service = StoreService(store)
    release = threading.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            nursery.start_soon(service.call, release.wait, 10)  # holds the file
            await trio.testing.wait_all_tasks_blocked()
            service.keep(rows(1, age=time.time())[0])
            assert not service.write_now()
            assert service.committed == 0
            release.set()
            await service.wait_stored(service.queued)
            assert service.inline_writes == 0
            nursery.cancel_scope.cancel()


async def test_with_sync_full_every_write_stays_in_the_thread(tmp_path: Path) -> None:
    service = StoreService(MessageStore(tmp_path / "s.sqlite3", sync="full"))
    service.keep(rows(1, age=time.time())[0])
    assert not service.write_now()
    assert service.committed == 0
    service.store.close()


def publish_and_read(path: Path, store_file: Path, n: int) -> list[tuple[str, bool]]:
    """Lone publishes on the socket (blocking); for each reply, its msg_id and whether
    another connection to the store's file sees the message at that moment."""
    out = []
    reader = sqlite3.connect(store_file)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        for i in range(n):
            sock.sendall(b'{"op":"publish","topic":"t","data":"m%d"}\n' % i)
            buf = b""
            while not buf.endswith(b"\n"):
                buf += sock.recv(65536)
            msg_id = json.loads(buf)["msg_id"]
            found = reader.execute("SELECT count(*) FROM batches WHERE first_id <= ? AND "
                                   "last_id >= ?", (bytes.fromhex(msg_id),) * 2).fetchone()
            out.append((msg_id, found[0] == 1))
    reader.close()
    return out


async def test_a_lone_publish_is_committed_when_its_ok_comes(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            await trio.testing.wait_all_tasks_blocked()
            before = service.inline_writes
            got = await trio.to_thread.run_sync(
                publish_and_read, node.config.socket_path, service.store.path, 20)
            assert all(found for _id, found in got)  # each visible to another reader
            assert service.inline_writes - before >= 10  # most without the thread
            assert service.committed == service.queued


async def test_a_publish_waits_for_a_write_under_way_in_the_thread(
        short_tmp: Path, connect: Connect) -> None:
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
            service = service_of(node)
            release = threading.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(service.call, release.wait, 10)  # the file is busy
                await trio.testing.wait_all_tasks_blocked()
                conn = connect(node)
                before = service.queued
                await conn.send({"op": "publish", "topic": "t", "data": "x", "id": 1})
                await trio.testing.wait_all_tasks_blocked()
                assert service.queued == before + 1  # flushed and kept ...
                assert conn.pending() == b""  # ... and not confirmed: not written
                release.set()
                (reply,) = await conn.replies(1)
            assert reply["ok"]
            assert service.committed >= before + 1


async def test_retention_runs_before_the_next_use_of_the_file(tmp_path: Path) -> None:
    # Writes made at once do not trim: once they take the store over its size, the
    # next operation in the thread (here a read) first removes the oldest rows.
    store = MessageStore(tmp_path / "s.sqlite3", max_age=0, max_bytes=2000)
    service = StoreService(store)
    for row in rows(10, size=400, age=time.time()):
        service.keep(row)
        assert service.write_now()
    assert store.rows == 10  # over 2,000 bytes, not trimmed yet
    with trio.fail_after(10):
        stats = await service.call(store.stats)
    assert store.bytes <= 2000
    assert stats.rows == store.rows < 10
    assert [r.seq for r in await service.call(store.after, 0, 10)][-1] == 10  # newest kept
    store.close()
