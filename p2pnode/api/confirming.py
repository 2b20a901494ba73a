"""Publish replies that wait for the message store (docs/store.md, "Durability levels").

With the store on and ``--sync normal`` or ``full``, the ``ok`` to a publish means
that the message is stored: it survives a crash of the node. The server handles a
read's requests as usual, but the replies that confirm publishes (and everything
after them, replies come in order) are held in the connection's ``ReplyOrder``; once
the read's publishes are flushed into the router (which hands their batches to the
store), one wait for the store covers them all (``StoreGate.wait``): one wait per
read, not per message. A quiet publish (``"ack": false``) holds a place too, empty
unless the store fails it. A ``sync`` needs nothing of its own: its reply is put
behind the held ones.

While the disk is full, the waiting publishes get a ``store_full`` error instead
(their messages went out, and are stored once there is room unless the node stops
first), and new publishes are refused before anything is sent
(``store_refusal``).
"""

from __future__ import annotations

from typing import Protocol

from ..store.db import StoreFull
from .protocol import ApiError, Scalar, encode_error
from .requests import Held, ReplyOrder

__all__ = ["ConfirmingStore", "StoreGate", "store_refusal"]


class ConfirmingStore(Protocol):
    """What the API needs of the store service (``store.service.StoreService``)."""

    @property
    def queued(self) -> int:
        """Rows handed to the store so far."""
        ...

    @property
    def error(self) -> str | None:
        """Why writes fail now (the disk is full), or None."""
        ...

    async def wait_stored(self, upto: int) -> None:
        """Wait until the first ``upto`` rows are stored. Raises ``StoreFull`` while
        writes fail for lack of room."""
        ...


def store_refusal(store: ConfirmingStore | None, req_id: Scalar) -> ApiError | None:
    """The error for a publish while the store cannot write (None: it can)."""
    if store is None or store.error is None:
        return None
    return ApiError("store_full", f"{store.error}: nothing was published; retry once there "
                    "is room (the node tries to write again every second)", req_id)


class StoreGate:
    """The publishes of one connection since its last wait, whose replies wait for the
    store. ``add`` keeps each one's place in the reply order; ``wait`` fills them all."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        # (place in the reply order, request id, ok line or b"" when quiet, request number)
        self._entries: list[tuple[Held, Scalar, bytes, int]] = []

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, order: ReplyOrder, req_id: Scalar, line: bytes, number: int) -> None:
        """Hold the reply ``line`` (b"" for a quiet publish) of request ``number`` until
        ``wait``."""
        self._entries.append((order.hold(), req_id, line, number))

    async def wait(self, store: ConfirmingStore, order: ReplyOrder) -> int:
        """Wait until everything handed to ``store`` so far is stored, then release the
        held replies: the ``ok`` lines, or ``store_full`` errors if the store cannot
        write. Returns the number of errors. Call it after the publishes are flushed.
        Cancelled: the replies stay held (the connection is ending anyway)."""
        entries, self._entries = self._entries, []
        problem = None
        try:
            await store.wait_stored(store.queued)
        except StoreFull as exc:
            problem = str(exc)
        for held, req_id, line, number in entries:
            if problem is not None:
                err = ApiError("store_full", f"{problem}: not confirmed. The message went "
                               "out, but is not stored yet: it is once there is room, unless "
                               "the node stops first", req_id)
                err.req = number
                line = encode_error(err)
            held.line = line
        order.release()
        return len(entries) if problem is not None else 0
