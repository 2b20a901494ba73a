"""The message store on disk (docs/store.md): the SQLite file (``db``, blocking I/O,
no trio) and the trio service that writes to it from a worker thread (``service``)."""

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
