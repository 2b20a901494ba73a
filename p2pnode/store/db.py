"""The message store on disk: every batch the node publishes or receives, in SQLite.

One table of batches, each with its place in the store's own order (``pos``: given
once, when the batch is first stored, never reused), its origin's order (``epoch``,
``seq``), the range of its message ids, its age of publication (wall clock, seconds
since 1970) and the batch as it travels (``frame``: the encoded ``Batch``, signed).
Durable subscriptions keep their position in a second table: ``acked``, the last
``pos`` confirmed whole, and ``part``, the messages confirmed of the batch at ``acked + 1``
(acks are per message, a batch holds several).

This module does blocking I/O and nothing else: no trio. ``store.service`` runs it in
a worker thread. A ``MessageStore`` must be used by one thread at a time.

Retention is by age of publication and by bytes, the oldest by age first, a bounded
number of rows per call (``trim``), so that it never holds the writer for long.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError, LocalError
from .durables_table import DurableRow, DurableTable
from .selecting import count_lost

__all__ = ["STORE_FILE", "SYNC_LEVELS", "DurableRow", "MessageStore", "Row", "StoreBroken",
           "StoreFull", "StoreStats"]

T = TypeVar("T")
STORE_FILE = "store.sqlite3"
SCHEMA_VERSION = 1
#: ``--sync``: SQLite's ``synchronous`` for each level (docs/store.md says what each survives).
SYNC_LEVELS = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}
ROW_OVERHEAD = 120  # bytes counted per row on top of its frame (index entries, columns)
TRIM_ROWS = 2_000  # rows removed at most per ``trim`` call
TOTALS_EVERY = 4096  # rows written between two updates of the kept totals
#: Pages in the write-ahead log past which a commit copies it into the file (SQLite's
#: default ``wal_autocheckpoint``).
WAL_CHECKPOINT_PAGES = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    pos INTEGER PRIMARY KEY,
    origin BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    bid BLOB NOT NULL,
    first_id BLOB NOT NULL,
    last_id BLOB NOT NULL,
    age REAL NOT NULL,
    count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    frame BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_first_id ON batches (first_id);
CREATE INDEX IF NOT EXISTS batches_age ON batches (age);
CREATE INDEX IF NOT EXISTS batches_run ON batches (origin, epoch, seq);
CREATE TABLE IF NOT EXISTS durables (
    name TEXT PRIMARY KEY,
    topics TEXT NOT NULL,
    acked INTEGER NOT NULL,
    part INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""


class StoreBroken(ConfigError):
    """The store file cannot be used (not a database, corrupted, unreadable, from a
    newer version). The message names the file and how to start afresh."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"message store {path} cannot be used: {problem}. To start afresh, stop the "
            f"node and move the file away (mv {path} {path}.broken, and its -wal and "
            "-shm files if any: docs/store.md, Starting afresh), or run with --store none")
        self.path = path
        self.problem = problem


class StoreFull(LocalError):
    """A write failed because the disk (or the file system's quota) is full."""


@dataclass(frozen=True, slots=True)
class Row:
    """One batch to store, or as stored (``pos`` 0 until it is)."""

    origin: bytes
    epoch: int
    seq: int
    bid: bytes
    first_id: bytes
    last_id: bytes
    age: float  # its age of publication, seconds since 1970
    count: int  # messages in it
    frame: bytes  # the encoded Batch
    pos: int = 0

    @property
    def key(self) -> bytes:
        """The batch's key in the router (origin + batch id)."""
        return self.origin + self.bid


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What ``p2pnode store`` and ``status`` show."""

    path: str
    file_bytes: int
    rows: int
    messages: int
    bytes: int  # counted against ``max_bytes`` (frames plus ROW_OVERHEAD each)
    first_pos: int
    last_pos: int
    oldest_age: float | None
    newest_age: float | None
    origins: dict[str, int]  # origin hex -> messages stored


_COLUMNS = "origin, epoch, seq, bid, first_id, last_id, age, count, frame, pos"


def _row(values: tuple[object, ...]) -> Row:
    return Row(*values)  # type: ignore[arg-type]


class MessageStore(DurableTable):
    """An open store file. Raises ``StoreBroken`` when the file cannot be used.

    Args:
        path: the SQLite file (made if missing, mode 0600).
        sync: ``off``, ``normal`` or ``full`` (``SYNC_LEVELS``).
        max_age: seconds a batch is kept after its publication (0: no limit).
        max_bytes: bytes kept at most (0: no limit).
    """

    def __init__(self, path: Path, *, sync: str = "normal", max_age: float = 86_400.0,
                 max_bytes: int = 256 << 20) -> None:
        if sync not in SYNC_LEVELS:
            raise LocalError(f"sync must be one of {', '.join(SYNC_LEVELS)}")
        self.path = path
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.sync = sync
        self._db = self._open(path, sync)
        try:
            self._check_schema()
            self.last_pos = max(int(self._meta("last_pos") or 0), self._db.execute(
                "SELECT COALESCE(MAX(pos), 0) FROM batches").fetchone()[0])
            #: Where this run of the node begins: the last position given before it,
            #: and the wall-clock time it opened the store (``store.replay``).
            self.boot_pos = self.last_pos
            self.boot_time = time.time()
            self._load_totals()
        except (sqlite3.DatabaseError, StoreBroken) as exc:
            self._db.close()
            if isinstance(exc, StoreBroken):
                raise
            raise StoreBroken(path, _problem(exc)) from None
        self.removed = 0  # rows removed by retention since the store was opened
        #: This node's id: messages sent to another node are nobody's loss here.
        self.node_id: bytes | None = None
        self.closed = False

    @staticmethod
    def _open(path: Path, sync: str) -> sqlite3.Connection:
        if path.exists() and not path.is_file():
            raise StoreBroken(path, "it is not a regular file")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise StoreBroken(path, exc.strerror or str(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise StoreBroken(path, _problem(exc)) from None
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute(f"PRAGMA synchronous={SYNC_LEVELS[sync]}")
            db.execute("PRAGMA busy_timeout=2000")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreBroken(path, _problem(exc)) from None
        return db

    def _check_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreBroken(self.path, f"it was written by a newer p2pnode (schema "
                                         f"{version}, this one reads {SCHEMA_VERSION})")
        if version == 0:  # a new file (IF NOT EXISTS: a half-made one is finished)
            self._db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; "
                                   "COMMIT;")
        else:  # damage anywhere in the file is found now, not in the middle of a run
            check = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise StoreBroken(self.path, "the file is corrupted (SQLite's quick_check: "
                                             f"{' '.join(str(check).split())})")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(durables)")}
        if "part" not in columns:  # a file of the first version of this table
            self._db.execute("ALTER TABLE durables ADD COLUMN part INTEGER NOT NULL DEFAULT 0")
        self._count_durables()
        # Each origin's batches in its order (``store.reading``): made in a file from
        # before it was added.
        self._db.execute("CREATE INDEX IF NOT EXISTS batches_run ON batches "
                         "(origin, epoch, seq)")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (it does on SQLITE_FULL): the error
            # that matters is the first one, not "no transaction is active".
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """SQLite's errors raised as the store's: ``StoreFull`` when the disk is full,
        ``StoreBroken`` otherwise (naming the file)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_full(exc):
                raise StoreFull(f"message store {self.path}: the disk is full") from None
            raise StoreBroken(self.path, _problem(exc)) from None

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` (a method of this store), with SQLite's errors raised as
        ``StoreFull`` or ``StoreBroken`` (a file damaged after it was opened)."""
        with self._sqlite_errors():
            return fn(*args)

    def _load_totals(self) -> None:
        """Rows, bytes and messages up to a position are kept now and then
        (``_put_totals``); the rows after it are counted (a short range of the primary
        key). A file kept before messages were counted has them counted once."""
        totals = self._meta("totals")
        kept = [int(n) for n in totals.split()] if isinstance(totals, str) else []
        self.rows, self.bytes, upto = kept[:3] if kept else (0, 0, 0)
        if len(kept) == 4:
            self.messages = kept[3]
        else:
            self.messages = int(self._db.execute(
                "SELECT COALESCE(SUM(count), 0) FROM batches WHERE pos <= ?",
                (upto,)).fetchone()[0])
        more_bytes, more_rows, more_messages = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) + COUNT(*) * ?, COUNT(*), COALESCE(SUM(count), 0) "
            "FROM batches WHERE pos > ?", (ROW_OVERHEAD, upto)).fetchone()
        self.rows += more_rows
        self.bytes += more_bytes
        self.messages += more_messages
        self._totals_pos = upto

    def _put_totals(self, rows: int, size: int, upto: int, messages: int) -> None:
        """Keep the rows, bytes and messages stored up to position ``upto``, and that
        position as the last one given (positions are never reused, even when the newest
        rows go)."""
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [("totals", f"{rows} {size} {upto} {messages}"),
                              ("last_pos", upto)])
        self._totals_pos = upto

    def claim_epoch(self, epoch: int) -> int:
        """The number of this run of the node: ``epoch``, or more if a run stored
        earlier had that number or a higher one (a clock set back), so that no peer
        sees a new message under an old number. Stored before it is returned."""
        last = self._meta("epoch")
        epoch = max(epoch, int(last) + 1) if last is not None else epoch
        self._write("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))
        return epoch

    def get_meta(self, key: str) -> int | str | None:
        """The value kept under ``key`` (None: none): ``epoch``, ``interest``, ..."""
        return self._meta(key)

    def set_meta(self, key: str, value: int | str) -> None:
        """Keep ``value`` under ``key`` (written at once)."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _meta(self, key: str) -> int | str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the file (a checkpoint folds the write-ahead log into it). Safe to call
        more than once."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # -- writing ------------------------------------------------------------------

    def append(self, rows: Iterable[Row], acks: Iterable[tuple[str, int, int]] = (), *,
               checkpoint: bool = True) -> int:
        """Store ``rows`` and apply durable ``acks`` (name, ``acked``, ``part``: a position
        further than the stored one replaces it) in one transaction. Returns the position
        of the last row stored. Raises ``StoreFull`` (nothing of it is stored) or
        ``StoreBroken``. Without ``checkpoint`` the commit never copies the write-ahead
        log into the file (SQLite's automatic checkpoint, which flushes to the disk: it
        is left to the next write that allows it)."""
        if checkpoint:
            return self._append(rows, acks)
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            return self._append(rows, acks)
        finally:
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")

    def _append(self, rows: Iterable[Row], acks: Iterable[tuple[str, int, int]]) -> int:
        values = []
        pos = self.last_pos
        added = 0
        messages = 0
        for row in rows:
            pos += 1
            size = len(row.frame)
            added += size + ROW_OVERHEAD
            messages += row.count
            values.append((row.origin, row.epoch, row.seq, row.bid, row.first_id,
                           row.last_id, row.age, row.count, size, row.frame, pos))
        with self._sqlite_errors(), self._transaction():
            self._db.executemany(
                "INSERT INTO batches (origin, epoch, seq, bid, first_id, last_id, age, "
                "count, size, frame, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values)
            for name, acked, part in acks:
                self._db.execute("UPDATE durables SET acked = ?, part = ?, updated = ? "
                                 "WHERE name = ? AND (acked, part) < (?, ?)",
                                 (acked, part, time.time(), name, acked, part))
            if pos - self._totals_pos >= TOTALS_EVERY:  # not every write: it costs
                self._put_totals(self.rows + len(values), self.bytes + added, pos,
                                 self.messages + messages)
        self.last_pos = pos
        self.rows += len(values)
        self.bytes += added
        self.messages += messages
        return int(pos)

    def trim(self, now: float | None = None, max_rows: int = TRIM_ROWS) -> int:
        """Remove at most ``max_rows`` of the oldest rows (by age of publication) that
        are past ``max_age`` or over ``max_bytes``; count what each durable subscription
        loses. Returns the number removed (call again while it is ``max_rows``)."""
        now = time.time() if now is None else now
        doomed: list[tuple[int, int, int]] = []  # (pos, size, count)
        if self.max_age > 0:
            doomed = self._db.execute(
                "SELECT pos, size, count FROM batches WHERE age < ? ORDER BY age LIMIT ?",
                (now - self.max_age, max_rows)).fetchall()
        over = self.bytes - self.max_bytes if self.max_bytes > 0 else 0
        over -= sum(size + ROW_OVERHEAD for _pos, size, _count in doomed)
        if over > 0 and len(doomed) < max_rows:
            taken = {pos for pos, _s, _c in doomed}
            cursor = self._db.execute("SELECT pos, size, count FROM batches ORDER BY age "
                                      "LIMIT ?", (max_rows,))
            for pos, size, count in cursor:
                if over <= 0 or len(doomed) >= max_rows:
                    break
                if pos not in taken:
                    doomed.append((pos, size, count))
                    over -= size + ROW_OVERHEAD
        if not doomed:
            return 0
        self._remove(doomed)
        return len(doomed)

    def _remove(self, doomed: list[tuple[int, int, int]]) -> None:
        lost = self._lost(doomed)
        with self._sqlite_errors(), self._transaction():
            self._db.executemany("DELETE FROM batches WHERE pos = ?",
                                 [(pos,) for pos, _s, _c in doomed])
            self._put_totals(self.rows - len(doomed), self.bytes - sum(
                size + ROW_OVERHEAD for _pos, size, _count in doomed), self.last_pos,
                self.messages - sum(count for _pos, _size, count in doomed))
            self._db.executemany("UPDATE durables SET lost = lost + ? WHERE name = ?",
                                 [(n, name) for name, n in lost.items() if n])
        self.rows -= len(doomed)
        self.bytes -= sum(size + ROW_OVERHEAD for _pos, size, _count in doomed)
        self.messages -= sum(count for _pos, _size, count in doomed)
        self.removed += len(doomed)

    def _lost(self, doomed: list[tuple[int, int, int]]) -> dict[str, int]:
        """What each durable subscription loses when ``doomed`` rows go: its messages
        (of its topics, to everyone or to ``node_id``) that it had not confirmed."""
        durables = self.durables()
        if not durables:
            return {}
        low = min(d.acked for d in durables)
        frames = {pos: (frame, count) for pos, _s, count in doomed if pos > low
                  for (frame,) in self._db.execute("SELECT frame FROM batches WHERE pos = ?",
                                                   (pos,))}
        return count_lost(frames, durables, self.node_id)

    # -- reading ------------------------------------------------------------------

    def newest(self, max_rows: int, max_bytes: int, min_age: float) -> list[Row]:
        """The newest rows (by position) that fit in ``max_rows`` and ``max_bytes`` and
        were published after ``min_age``, oldest first: what a restarted node puts back
        in its history in memory."""
        out: list[Row] = []
        total = 0
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM batches ORDER BY pos DESC")
        for values in cursor:
            row = _row(values)
            total += len(row.frame) + ROW_OVERHEAD
            if len(out) >= max_rows or total > max_bytes:
                break
            if row.age >= min_age:
                out.append(row)
        cursor.close()
        out.reverse()
        return out

    def after(self, pos: int, limit: int, max_bytes: int = 0) -> list[Row]:
        """At most ``limit`` rows after position ``pos``, in the store's order; with
        ``max_bytes``, only as many as reach that many bytes of frames (at least one)."""
        out: list[Row] = []
        total = 0
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM batches WHERE pos > ? ORDER BY pos LIMIT ?", (pos, limit))
        for values in cursor:
            row = _row(values)
            out.append(row)
            total += len(row.frame)
            if max_bytes and total >= max_bytes:
                break
        cursor.close()
        return out

    def position_of(self, msg_id: bytes) -> int | None:
        """The position of the stored batch that holds message ``msg_id`` (by the id
        ranges: ids are a per-run prefix and a counter), or None."""
        row = self._db.execute(
            "SELECT pos, last_id FROM batches WHERE first_id <= ? ORDER BY first_id DESC "
            "LIMIT 1", (msg_id,)).fetchone()
        if row is None or row[1] < msg_id or row[1][:8] != msg_id[:8]:
            return None
        return int(row[0])

    def count_after(self, pos: int) -> int:
        """Messages stored after position ``pos``."""
        return int(self._db.execute("SELECT COALESCE(SUM(count), 0) FROM batches "
                                    "WHERE pos > ?", (pos,)).fetchone()[0])

    def stats(self) -> StoreStats:
        """Size, extent and per-origin counts of what is stored."""
        first, messages, oldest, newest = self._db.execute(
            "SELECT MIN(pos), COALESCE(SUM(count), 0), MIN(age), MAX(age) "
            "FROM batches").fetchone()
        origins = {origin.hex(): n for origin, n in self._db.execute(
            "SELECT origin, SUM(count) FROM batches GROUP BY origin ORDER BY 2 DESC")}
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return StoreStats(str(self.path), size, self.rows, messages, self.bytes,
                          first or 0, self.last_pos, oldest, newest, origins)

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._sqlite_errors(), self._transaction():
            self._db.execute(sql, args)


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc)


def _problem(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"the file is corrupted or not a p2pnode store ({text})"
    return text
