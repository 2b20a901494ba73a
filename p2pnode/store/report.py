"""What ``p2pnode store`` shows: a message store's size, extent, origins and durable
subscriptions, as a JSON object (docs/store.md, "Tooling").

``store_report`` does blocking reads (``MessageStore.stats``, ``durables`` and one
``count_after`` per durable subscription): the node runs it in the store's worker
thread (``StoreService.call``), ``p2pnode store --data-dir``/``--file`` on a file
opened read-only (``read_file``). Both give the same fields; only the node knows its
limits (``max_bytes``, ``max_age_s``: null when read from the file) and adds what its
writer did (``Storing.report``).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..api.monitor import format_time
from ..errors import ConfigError
from ..identity.datadir import LOCK_FILE
from .db import STORE_FILE, MessageStore, StoreBroken

#: Origins listed at most (the ones with the most messages); ``origins_total`` counts all.
MAX_ORIGINS = 64
#: Durable subscriptions listed at most (by name); ``durables`` counts all.
MAX_DURABLES = 256


def store_report(store: MessageStore, *, limits: bool = True,
                 now: float | None = None) -> dict[str, Any]:
    """The report of ``store`` (blocking). ``limits``: include the store's limits
    (False for a file read without the node's settings). ``now``: the wall clock.
    Raises ``StoreBroken`` when the file turns out damaged as it is read."""
    now = time.time() if now is None else now
    try:
        stats = store.stats()
        durables = store.durables()
        subscriptions = [{
            "name": d.name, "topics": list(d.topics), "acked": d.acked,
            "lag": store.count_after(d.acked), "lost": d.lost,
            **_when("updated", d.updated, now),
        } for d in durables[:MAX_DURABLES]]
    except sqlite3.DatabaseError as exc:
        raise StoreBroken(store.path, f"the file is corrupted ({exc})") from None
    return {
        "path": stats.path, "file_bytes": stats.file_bytes, "rows": stats.rows,
        "messages": stats.messages, "bytes": stats.bytes,
        "max_bytes": store.max_bytes if limits else None,
        "max_age_s": store.max_age if limits else None,
        "first_pos": stats.first_pos, "last_pos": stats.last_pos,
        **_when("oldest", stats.oldest_age, now), **_when("newest", stats.newest_age, now),
        "origins_total": len(stats.origins),
        "origins": [{"origin": origin, "messages": count}
                    for origin, count in list(stats.origins.items())[:MAX_ORIGINS]],
        "durables": len(durables),
        "subscriptions": subscriptions,
    }


def _when(key: str, wall: float | None, now: float) -> dict[str, Any]:
    """``{key}_time`` (ISO 8601, UTC) and ``{key}_ago_s``, both null for no time."""
    if wall is None:
        return {f"{key}_time": None, f"{key}_ago_s": None}
    return {f"{key}_time": format_time(wall), f"{key}_ago_s": round(max(0.0, now - wall), 3)}


class ReadOnlyStore(MessageStore):
    """A store file opened for reading only (``p2pnode store`` on a stopped node): it
    must exist, and is never changed or made; a write raises ``StoreBroken``.

    Without a write-ahead log beside it (the node stopped cleanly) the file is read as
    immutable, so that nothing is made beside it; with one (the node was killed, or
    runs), through the log, which holds the newest batches."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)

    @staticmethod
    def _open(path: Path, sync: str) -> sqlite3.Connection:
        if not path.is_file():
            raise StoreBroken(path, "no such file" if not path.exists() else
                              "it is not a regular file")
        mode = "ro" if Path(f"{path}-wal").exists() else "ro&immutable=1"
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True,
                                 isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only=1")
        except sqlite3.DatabaseError as exc:
            raise StoreBroken(path, str(exc)) from None
        return db

    def _check_schema(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
            raise StoreBroken(self.path, "it is not a p2pnode message store (no tables)")
        try:
            super()._check_schema()
        except sqlite3.OperationalError as exc:  # an index this file lacks: reads do
            if "readonly" not in str(exc):       # without it
                raise


def read_file(path: Path) -> dict[str, Any]:
    """The report of the store file ``path``, opened read-only (it is not changed, and
    nothing is made beside it unless a node left its write-ahead log there). Raises
    ``StoreBroken`` (no such file, not a store, corrupted)."""
    store = ReadOnlyStore(path)
    try:
        return store_report(store, limits=False)
    finally:
        store.close()


def data_dir_store(data_dir: Path) -> Path:
    """The store file of a stopped node's data directory. Raises ``ConfigError`` when
    the directory is missing or a node runs with it (then the node must be asked)."""
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: no such directory")
    if data_dir_in_use(data_dir):
        raise ConfigError(
            f"--data-dir {data_dir}: a node runs with this data directory; ask it "
            "instead: p2pnode store (with its --socket)")
    path = data_dir / STORE_FILE
    if not path.exists():
        raise ConfigError(f"--data-dir {data_dir}: no message store there ({STORE_FILE} "
                          "is missing: the node never ran with a store, or ran with "
                          "--store none or --store FILE; for a FILE use --file)")
    return path


def data_dir_in_use(data_dir: Path) -> bool:
    """Whether a running node holds the lock of ``data_dir`` (``DataDirLock``). The
    lock is only tried, and let go at once."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file: no node ever ran there (or it cannot be read)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
