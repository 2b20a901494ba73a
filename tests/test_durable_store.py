"""The store's side of durable subscriptions: positions per message (``part``), the
file of the first version, losses counted per subscription's topics, bounded reads,
and acks that a cancelled write had taken."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import trio
import trio.testing

from p2pnode.store.db import MessageStore, Row
from p2pnode.store.selecting import DurableFilter, count_lost
from p2pnode.store.service import StoreService
from p2pnode.wire.messages import Batch, BatchBody, Item

ME = b"\x01" * 16
OTHER = b"\x02" * 16


def frame(topics: list[str], to: bytes | None = None, seq: int = 1) -> bytes:
    items = [Item(bytes([k]) * 16, topic, b"x") for k, topic in enumerate(topics)]
    body = BatchBody(b"\x09" * 16, b"\x07" * 16, to, items, epoch=1, seq=seq)
    batch = Batch(b"\x09" * 16, b"\x07" * 16, 0, b"k" * 32,
                  msgspec.msgpack.encode(body), b"s" * 64)
    return msgspec.msgpack.encode(batch)


def row(topics: list[str], seq: int, to: bytes | None = None, age: float = 1e9) -> Row:
    return Row(b"\x07" * 16, 1, seq, seq.to_bytes(16, "big"), b"\x00" * 16, b"\x00" * 16,
               age, len(topics), frame(topics, to, seq))


def test_positions_only_move_forward(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    store.put_durable("d", ["t"], 0)
    store.append([], [("d", 4, 2)])
    assert (store.durable("d").acked, store.durable("d").part) == (4, 2)  # type: ignore[union-attr]
    store.append([], [("d", 4, 1), ("d", 3, 9)])  # behind: ignored
    assert (store.durable("d").acked, store.durable("d").part) == (4, 2)  # type: ignore[union-attr]
    store.append([], [("d", 5, 0)])
    assert (store.durable("d").acked, store.durable("d").part) == (5, 0)  # type: ignore[union-attr]
    store.close()


def test_a_file_of_the_first_version_gets_the_part_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    MessageStore(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE durables; CREATE TABLE durables (name TEXT PRIMARY KEY, "
                     "topics TEXT NOT NULL, acked INTEGER NOT NULL, lost INTEGER NOT NULL "
                     "DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL) WITHOUT ROWID;"
                     "INSERT INTO durables VALUES ('old', '[\"t\"]', 7, 0, 1, 1);")
    db.close()
    store = MessageStore(path)
    found = store.durable("old")
    assert found is not None
    assert (found.acked, found.part, found.topics) == (7, 0, ("t",))
    store.close()


def test_losses_count_its_topics_its_node_and_what_it_acked() -> None:
    frames = {5: (frame(["a", "b", "a"]), 3), 6: (frame(["a", "$mesh"]), 2),
              7: (frame(["a"], OTHER), 1), 8: (frame(["a"], ME), 1),
              9: (frame(["a"], seq=0), 1), 10: (b"junk", 2)}
    durables = [_durable("all", [], 0, 0), _durable("a", ["a"], 4, 0),
                _durable("mid", ["a"], 4, 1), _durable("late", ["#"], 7, 0)]
    lost = count_lost(frames, durables, ME)
    # "all": 3 + 1 ($mesh is not its) + 0 (to another node) + 1 + 0 (unnumbered) + 2 (junk)
    assert lost == {"all": 7, "a": 6, "mid": 5, "late": 3}
    assert DurableFilter(["a"], None).wanted(msgspec.msgpack.decode(
        msgspec.msgpack.decode(frames[7][0], type=Batch).body, type=BatchBody)) == [0]


def _durable(name: str, topics: list[str], acked: int, part: int) -> object:
    from p2pnode.store.db import DurableRow
    return DurableRow(name, tuple(topics), acked, part, 0, 0.0, 0.0)


def test_retention_counts_only_what_each_durable_takes(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=100.0)
    store.node_id = ME
    store.put_durable("a", ["a"], 0)
    store.put_durable("b", ["b"], 0)
    store.append([row(["a", "a", "b"], 1, age=10.0), row(["b"], 2, age=10.0),
                  row(["a"], 3, age=2e9)])
    store.append([], [("a", 0, 1)])  # "a" acked the first message of batch 1
    assert store.trim(now=1000.0) == 2
    assert (store.take_lost("a"), store.take_lost("b")) == (1, 2)
    assert (store.take_lost("a"), store.take_lost("b")) == (0, 0)
    store.close()


def test_after_stops_at_max_bytes(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    store.append([row(["a"], k) for k in range(1, 11)])
    size = len(store.after(0, 1)[0].frame)
    assert [r.pos for r in store.after(0, 100, size * 3)] == [1, 2, 3]
    assert [r.pos for r in store.after(2, 100, 1)] == [3]  # at least one
    assert len(store.after(0, 100)) == 10
    store.close()


async def test_acks_a_cancelled_write_had_taken_are_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    store.put_durable("d", ["t"], 0)
    service = StoreService(store)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            async with service._lock:  # a reader has the file: the write waits for it
                service.ack("d", 5, 1)
                await trio.testing.wait_all_tasks_blocked()
                assert service._acks == {}  # the writer took them
                nursery.cancel_scope.cancel()
    assert store.closed
    again = MessageStore(path)
    found = again.durable("d")
    assert found is not None
    assert (found.acked, found.part) == (5, 1)
    again.close()
