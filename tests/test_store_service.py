"""The store's trio service (store/service.py): rows written from a worker thread,
waits for publishers, retention while idle, a full disk reported and retried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from p2pnode.store import MessageStore, StoreFull, StoreService
from tests.test_store_db import rows


async def test_rows_are_written_and_waiters_woken(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    service = StoreService(store)
    seen: list[int] = []
    service.on_stored.append(seen.append)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for row in rows(5, age=time.time()):
                service.keep(row)
            await service.wait_stored(service.queued)
            assert service.committed == 5
            assert seen[-1] == 5
            assert [r.seq for r in await service.call(store.after, 0, 10)] == [1, 2, 3, 4, 5]
            nursery.cancel_scope.cancel()
    assert store.closed


async def test_what_is_queued_at_the_stop_is_written(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    service = StoreService(MessageStore(path))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for row in rows(3, age=time.time()):
                service.keep(row)
            nursery.cancel_scope.cancel()  # before the writer had a turn
    assert MessageStore(path).rows == 3


async def test_retention_runs_while_nothing_is_written(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=50.0)
    old = time.time() - 1000
    store.append(rows(4, age=old))
    service = StoreService(store, trim_interval=0.01)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            while store.rows:
                await service.wait_next_write()
            nursery.cancel_scope.cancel()
    assert store.removed == 4


async def test_a_full_disk_is_reported_and_the_rows_written_later(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=0, max_bytes=0)
    store.append(rows(1))
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    service = StoreService(store, retry=0.01)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for row in rows(20, start=2, size=8000, age=time.time()):
                service.keep(row)
            with pytest.raises(StoreFull, match="disk is full"):
                await service.wait_stored(service.queued)
            assert service.error is not None
            assert service.committed == 0
            store._db.execute("PRAGMA max_page_count=1000000")  # room again
            while service.committed < service.queued:  # the next retry writes them
                await service.wait_next_write()
            assert service.error is None
            assert store.rows == 21
            nursery.cancel_scope.cancel()
