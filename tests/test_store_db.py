"""The message store's file (store/db.py): writes, retention, positions, durable rows,
and the errors a user sees for a file that cannot be used."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from p2pnode.store.db import ROW_OVERHEAD, MessageStore, Row, StoreBroken, StoreFull

ORIGIN = b"o" * 16
PREFIX = b"\x01" * 8


def rows(n: int, *, start: int = 1, age: float = 1000.0, size: int = 100,
         origin: bytes = ORIGIN, epoch: int = 7) -> list[Row]:
    """``n`` batches of 3 messages each; ids 3*seq .. 3*seq+2; ages one second apart."""
    return [Row(origin, epoch, seq, b"b" * 8 + seq.to_bytes(8, "big"),
                PREFIX + (3 * seq).to_bytes(8, "big"), PREFIX + (3 * seq + 2).to_bytes(8, "big"),
                age + seq, 3, bytes([seq % 256]) * size)
            for seq in range(start, start + n)]


def test_rows_come_back_in_the_stores_order_with_their_fields(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    assert store.append(rows(5)) == 5
    assert store.append(rows(3, start=6)) == 8
    got = store.after(2, 4)
    assert [r.pos for r in got] == [3, 4, 5, 6]
    assert [r.seq for r in got] == [3, 4, 5, 6]
    assert got[0].frame == bytes([3]) * 100
    assert got[0].count == 3
    assert store.count_after(6) == 6  # two batches of three
    assert (store.rows, store.bytes) == (8, 8 * (100 + ROW_OVERHEAD))
    store.close()


def test_a_message_id_finds_the_batch_that_holds_it(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    store.append(rows(10))
    for seq in (1, 5, 10):
        for k in range(3):
            assert store.position_of(PREFIX + (3 * seq + k).to_bytes(8, "big")) == seq
    assert store.position_of(PREFIX + (3 * 11).to_bytes(8, "big")) is None  # after the last
    assert store.position_of(b"\x02" * 8 + (3 * 5).to_bytes(8, "big")) is None  # other run
    assert store.position_of(b"\x00" * 16) is None


def test_reopening_keeps_rows_totals_and_positions(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    store.append(rows(4))
    store.close()
    again = MessageStore(path)
    assert (again.rows, again.bytes, again.last_pos) == (4, store.bytes, 4)
    assert again.append(rows(1, start=5)) == 5  # positions go on, never reused


def test_positions_are_not_reused_after_the_newest_rows_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path, max_age=10.0)
    store.append(rows(3, age=0.0))
    assert store.trim(now=10_000.0) == 3  # all past their age
    store.close()
    again = MessageStore(path)
    assert again.rows == 0
    assert again.append(rows(1)) == 4


def test_retention_by_age_removes_the_oldest_by_publication_first(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=100.0, max_bytes=0)
    store.append(rows(10, age=1000.0))  # ages 1001 .. 1010
    assert store.trim(now=1105.5) == 5  # 1001 .. 1005 are more than 100 s old
    assert [r.seq for r in store.after(0, 100)] == [6, 7, 8, 9, 10]
    assert store.trim(now=1105.5) == 0


def test_retention_by_bytes_removes_the_oldest_until_it_fits(tmp_path: Path) -> None:
    per_row = 100 + ROW_OVERHEAD
    store = MessageStore(tmp_path / "s.sqlite3", max_age=0, max_bytes=4 * per_row)
    # Stored out of age order: position does not decide, age of publication does.
    store.append(rows(3, start=4, age=2000.0) + rows(3, start=1, age=1000.0))
    assert store.trim() == 2
    assert sorted(r.seq for r in store.after(0, 100)) == [3, 4, 5, 6]
    assert store.bytes == 4 * per_row


def test_retention_is_bounded_per_call(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=1.0)
    store.append(rows(50, age=0.0))
    assert store.trim(now=10_000.0, max_rows=20) == 20
    assert store.trim(now=10_000.0, max_rows=20) == 20
    assert store.trim(now=10_000.0, max_rows=20) == 10
    assert store.rows == 0


def test_a_durable_subscription_counts_what_retention_took_from_it(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=100.0)
    store.append(rows(10, age=1000.0))
    store.put_durable("night", ["sensors/#"], acked=3)
    store.put_durable("ahead", ["sensors/#"], acked=10)
    # Removes positions 1..5: the first had 4 and 5 unread (frames that cannot be
    # read as batches count whole).
    store.trim(now=1105.5)
    assert store.take_lost("night") == 6
    assert store.take_lost("night") == 0  # told once
    assert store.take_lost("ahead") == 0
    # Acks come with writes, and only move forward.
    store.append([], acks=[("night", 8, 0), ("ahead", 2, 0)])
    durables = {d.name: d for d in store.durables()}
    assert (durables["night"].acked, durables["ahead"].acked) == (8, 10)
    assert durables["night"].topics == ("sensors/#",)
    assert store.delete_durable("night")
    assert not store.delete_durable("night")
    assert store.durable("night") is None


def test_changing_a_durables_topics_keeps_its_position(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    store.put_durable("d", ["a"], acked=5)
    row = store.put_durable("d", ["b", "a", "b"], acked=0)
    assert (row.topics, row.acked) == (("a", "b"), 5)


def test_each_run_of_a_node_gets_a_higher_number(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    assert store.claim_epoch(500) == 500
    store.close()
    again = MessageStore(path)
    assert again.claim_epoch(100) == 501  # the clock went back: still above the last run
    assert again.claim_epoch(900) == 900


def test_a_file_that_is_not_a_store_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 300)
    with pytest.raises(StoreBroken) as caught:
        MessageStore(path)
    text = str(caught.value)
    assert str(path) in text
    assert "corrupted" in text
    assert "mv " in text
    assert "--store none" in text
    assert path.read_bytes().startswith(b"this is not")  # never wiped


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    MessageStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreBroken, match="newer p2pnode"):
        MessageStore(path)


def test_a_directory_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.sqlite3").mkdir()
    with pytest.raises(StoreBroken, match="not a regular file"):
        MessageStore(tmp_path / "s.sqlite3")


def test_a_full_disk_fails_the_write_and_keeps_what_was_stored(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3", max_age=0, max_bytes=0)
    store.append(rows(2))
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreFull, match="disk is full"):
        store.append(rows(50, start=3, size=4000))
    assert (store.rows, store.last_pos) == (2, 2)  # nothing of the failed write counted
    assert [r.seq for r in store.after(0, 100)] == [1, 2]


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    MessageStore(path).close()
    assert os.stat(path).st_mode & 0o077 == 0


def test_totals_after_reopening_count_rows_written_since_they_were_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path, max_age=0, max_bytes=0)
    for start in range(1, 6001, 500):  # the kept totals are updated once in between
        store.append(rows(500, start=start, size=10))
    store.trim()
    expected = (store.rows, store.bytes, store.last_pos)
    store.close()
    again = MessageStore(path)
    assert (again.rows, again.bytes, again.last_pos) == expected == (
        6000, 6000 * (10 + ROW_OVERHEAD), 6000)
