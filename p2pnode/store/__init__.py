"""The message store on disk (docs/store.md): ``db`` (the SQLite file, blocking I/O,
no trio), ``service`` (the trio service that writes it and runs reads in a worker
thread), ``reading`` (reads by each origin's order), ``replay`` (``since`` from the
store) and ``selecting`` (which stored messages a durable subscription takes)."""

from .db import (
    STORE_FILE,
    SYNC_LEVELS,
    DurableRow,
    MessageStore,
    Row,
    StoreBroken,
    StoreFull,
    StoreStats,
)
from .service import StoreService

__all__ = ["STORE_FILE", "SYNC_LEVELS", "DurableRow", "MessageStore", "Row", "StoreBroken",
           "StoreFull", "StoreService", "StoreStats"]
