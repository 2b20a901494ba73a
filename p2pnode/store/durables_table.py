"""The durable subscriptions' table of the message store (``db.MessageStore`` takes
these methods): each subscription's name, topics, position and the messages
retention took from it. Blocking I/O, no trio."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DurableRow", "DurableTable"]


@dataclass(frozen=True, slots=True)
class DurableRow:
    """A durable subscription as stored."""

    name: str
    topics: tuple[str, ...]
    acked: int  # the store position it has confirmed up to (that batch included)
    part: int  # ... and the messages it confirmed of the batch at ``acked + 1``
    lost: int  # messages removed by retention before it had them, not yet reported
    created: float
    updated: float


class DurableTable:
    """The durable subscriptions' rows; ``MessageStore`` provides ``_db`` and ``_write``."""

    _db: sqlite3.Connection
    durable_count: int

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        raise NotImplementedError

    def _count_durables(self) -> None:
        #: Durable subscriptions stored (``status`` reads it without touching the file).
        self.durable_count = int(self._db.execute("SELECT COUNT(*) FROM durables")
                                 .fetchone()[0])

    def durables(self) -> list[DurableRow]:
        """Every durable subscription."""
        return [DurableRow(name, tuple(json.loads(topics)), acked, part, lost, created,
                           updated)
                for name, topics, acked, part, lost, created, updated in self._db.execute(
                    "SELECT name, topics, acked, part, lost, created, updated FROM durables "
                    "ORDER BY name")]

    def durable(self, name: str) -> DurableRow | None:
        """The durable subscription ``name``, or None."""
        for row in self._durable_rows(name):
            return row
        return None

    def _durable_rows(self, name: str) -> list[DurableRow]:
        return [DurableRow(n, tuple(json.loads(t)), a, p, lost, c, u)
                for n, t, a, p, lost, c, u in self._db.execute(
                    "SELECT name, topics, acked, part, lost, created, updated "
                    "FROM durables WHERE name = ?", (name,))]

    def put_durable(self, name: str, topics: Iterable[str], acked: int) -> DurableRow:
        """Create the durable subscription ``name`` at position ``acked``, or change the
        topics of an existing one (its position stays). Returns it as stored."""
        now = time.time()
        listed = json.dumps(sorted(set(topics)))
        self._write("INSERT INTO durables (name, topics, acked, lost, created, updated) "
                    "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "topics = excluded.topics, updated = excluded.updated",
                    (name, listed, acked, now, now))
        self._count_durables()
        row = self.durable(name)
        assert row is not None
        return row

    def take_lost(self, name: str) -> int:
        """The messages durable ``name`` lost to retention since last asked (then 0)."""
        row = self.durable(name)
        if row is None or not row.lost:
            return 0
        self._write("UPDATE durables SET lost = 0 WHERE name = ?", (name,))
        return row.lost

    def delete_durable(self, name: str) -> bool:
        """Remove durable ``name``; False if there was none."""
        if self.durable(name) is None:
            return False
        self._write("DELETE FROM durables WHERE name = ?", (name,))
        self._count_durables()
        return True
