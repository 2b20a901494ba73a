"""The message store on disk (docs/store.md): ``db`` (the SQLite file, blocking I/O),
``service`` (the trio service that writes it and runs reads in a worker thread),
``reading`` (reads by each origin's order) and ``replay`` (``since`` from the store)."""

from .db import MessageStore, Row, StoreBroken, StoreFull
from .service import StoreService

__all__ = ["MessageStore", "Row", "StoreBroken", "StoreFull", "StoreService"]
