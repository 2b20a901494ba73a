"""What ``p2pnode store`` reads from a store file (store/report.py): the report's
fields, the counts kept in memory for ``status``, the read-only opening that never
changes a stopped node's file, and the errors for a file or directory that cannot
be read."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from p2pnode.errors import ConfigError
from p2pnode.identity.datadir import DataDirLock
from p2pnode.store import report as report_module
from p2pnode.store.db import MessageStore, StoreBroken
from p2pnode.store.report import ReadOnlyStore, data_dir_store, read_file, store_report

from .test_store_db import ORIGIN, rows

OTHER = b"p" * 16


def filled(path: Path) -> MessageStore:
    """A store with 4 batches of ORIGIN and 2 of OTHER (3 messages each), published at
    1001-1004 and 2001-2002, and two durable subscriptions at positions 2 and 6."""
    store = MessageStore(path)
    store.append(rows(4))
    store.append(rows(2, origin=OTHER, age=2000.0))
    store.put_durable("behind", ["orders/#"], 2)
    store.put_durable("caught-up", ["a", "b"], 6)
    return store


def files_of(directory: Path) -> dict[str, str]:
    """Every file of ``directory`` with its SHA-256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_the_report_has_size_extent_origins_and_durables_with_their_lag(
        tmp_path: Path) -> None:
    store = filled(tmp_path / "s.sqlite3")
    got = store_report(store, now=2010.0)
    assert (got["rows"], got["messages"], got["first_pos"], got["last_pos"]) == (6, 18, 1, 6)
    assert got["bytes"] == store.bytes
    assert got["file_bytes"] > 0
    assert (got["max_bytes"], got["max_age_s"]) == (store.max_bytes, store.max_age)
    assert (got["oldest_ago_s"], got["newest_ago_s"]) == (1009.0, 8.0)
    assert got["oldest_time"] == "1970-01-01T00:16:41.000Z"
    assert got["origins_total"] == 2
    assert got["origins"] == [{"origin": ORIGIN.hex(), "messages": 12},
                              {"origin": OTHER.hex(), "messages": 6}]
    assert got["durables"] == 2
    behind, caught_up = got["subscriptions"]
    assert (behind["name"], behind["topics"], behind["acked"]) == ("behind", ["orders/#"], 2)
    assert (behind["lag"], behind["lost"]) == (12, 0)  # positions 3-6, 3 messages each
    assert (caught_up["lag"], caught_up["topics"]) == (0, ["a", "b"])
    assert got == store_report(store, now=2010.0)
    store.close()


def test_an_empty_store_has_no_oldest_or_newest(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "s.sqlite3")
    got = store_report(store, limits=False)
    assert (got["rows"], got["messages"], got["origins"], got["subscriptions"]) == (0, 0, [], [])
    assert got["oldest_time"] is got["newest_ago_s"] is got["max_bytes"] is None
    store.close()


def test_the_lists_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "MAX_ORIGINS", 1)
    monkeypatch.setattr(report_module, "MAX_DURABLES", 1)
    store = filled(tmp_path / "s.sqlite3")
    got = store_report(store)
    assert [o["messages"] for o in got["origins"]] == [12]  # the most first
    assert got["origins_total"] == 2
    assert [d["name"] for d in got["subscriptions"]] == ["behind"]
    assert got["durables"] == 2
    store.close()


def test_counts_kept_in_memory_follow_writes_retention_and_a_reopening(
        tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = filled(path)
    assert (store.messages, store.durable_count) == (18, 2)
    store.max_bytes = 1
    while store.trim(now=2010.0, max_rows=2):
        pass
    assert (store.rows, store.messages, store.bytes) == (0, 0, 0)
    store.append(rows(1, start=9))
    assert store.delete_durable("behind")
    assert (store.messages, store.durable_count) == (3, 1)
    store.close()
    again = MessageStore(path)
    assert (again.rows, again.messages, again.durable_count) == (1, 3, 1)
    again.close()


def test_a_store_written_before_messages_were_counted_is_counted_at_open(
        tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    filled(path).close()
    db = sqlite3.connect(path)  # totals as kept before: rows, bytes, up to which position
    db.execute("INSERT OR REPLACE INTO meta VALUES ('totals', '6 1320 6')")
    db.commit()
    db.close()
    store = MessageStore(path)
    assert (store.rows, store.messages) == (6, 18)
    store.append(rows(1, start=9))
    store.close()
    again = ReadOnlyStore(path)
    assert again.messages == 21
    again.close()


def test_reading_a_stopped_nodes_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    filled(path).close()
    before = files_of(tmp_path)
    got = read_file(path)
    assert (got["rows"], got["messages"], got["durables"]) == (6, 18, 2)
    assert (got["max_bytes"], got["max_age_s"]) == (None, None)  # the node's settings
    assert files_of(tmp_path) == before  # no write-ahead log or index made beside it
    ro = ReadOnlyStore(path)
    with pytest.raises(StoreBroken, match="readonly"):
        ro.append(rows(1, start=50))
    ro.close()
    assert files_of(tmp_path) == before


def test_the_write_ahead_log_of_a_killed_node_is_read(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    store = filled(live / "s.sqlite3")
    assert (live / "s.sqlite3-wal").exists()  # the newest batches are in the log
    crashed = tmp_path / "crashed"
    shutil.copytree(live, crashed)  # as kill -9 leaves them: file, log and index
    store.close()
    before = files_of(crashed)
    got = read_file(crashed / "s.sqlite3")
    assert (got["rows"], got["messages"], got["durables"]) == (6, 18, 2)
    assert files_of(crashed)["s.sqlite3"] == before["s.sqlite3"]  # nothing folded in


@pytest.mark.parametrize(("content", "problem"), [
    (None, "no such file"),
    (b"", "not a p2pnode message store"),
    (b"hello, this is not a database" * 40, "corrupted or not a p2pnode store"),
])
def test_a_file_that_cannot_be_read_is_refused_naming_it(
        tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "s.sqlite3"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StoreBroken, match=problem) as caught:
        read_file(path)
    assert str(path) in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == (["s.sqlite3"] if content is not None else [])


def test_a_data_directory_is_read_only_while_no_node_holds_it(tmp_path: Path) -> None:
    data = tmp_path / "node"
    with pytest.raises(ConfigError, match="no such directory"):
        data_dir_store(data)
    data.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=r"no message store there \(store.sqlite3"):
        data_dir_store(data)
    filled(data / "store.sqlite3").close()
    assert data_dir_store(data) == data / "store.sqlite3"
    lock = DataDirLock(data)
    lock.acquire()
    try:
        with pytest.raises(ConfigError, match="a node runs with this data directory"):
            data_dir_store(data)
    finally:
        lock.release()
    assert data_dir_store(data) == data / "store.sqlite3"
    lock.acquire()  # the probe let the lock go: a node can still start
    lock.release()


def test_damage_found_while_reading_is_a_broken_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    store.append(rows(200, size=2000))
    store.close()
    db = sqlite3.connect(path)  # totals kept up to the last row: the open reads no row
    db.execute("INSERT OR REPLACE INTO meta VALUES ('totals', ?)",
               (f"200 {store.bytes} 200 600",))
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 40 * 4096
    data[20 * 4096:30 * 4096] = b"\xff" * (10 * 4096)  # pages of rows, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreBroken, match="corrupted") as caught:
        read_file(path)
    assert str(path) in str(caught.value)
    with pytest.raises(StoreBroken, match="corrupted"):  # the node's open checks it all
        MessageStore(path)


def test_a_file_without_a_newer_index_is_read_without_making_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    filled(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX batches_run")  # as a file written before it was added
    db.commit()
    db.close()
    before = files_of(tmp_path)
    assert read_file(path)["messages"] == 18
    assert files_of(tmp_path) == before
