"""Publish replies that wait for the message store (docs/store.md, "Durability levels").

With the store on and ``--sync normal`` or ``full``, the ``ok`` to a publish means
that the message is stored: it survives a crash of the node. The server handles a
read's requests as usual, but each publish only keeps its reply's place in the
connection's ``ReplyOrder`` (``StoreGate.add``: publishes one after the other share
one ``Place``; a quiet publish, ``"ack": false``, has an empty reply, an error only
if the store fails it); what comes after waits behind, since replies come in order.
Once the read's publishes are flushed into the router, which hands their batches to
the store, the read's places go to the ``Confirmer`` with the store's count of rows
queued (``submit``), and the server reads on. The confirmer waits for the store
(``wait_stored``) and fills every place whose rows are written: one wait covers the
reads of every connection meanwhile, and pipelined publishing is not held up by the
disk. A ``sync`` needs nothing of its own: its reply is put behind the places before
it.

While the disk is full, the places waiting get a ``store_full`` error instead (their
messages went out, and are stored once there is room unless the node stops first),
and new publishes are refused before anything is sent (``store_refusal``). A
connection has at most ``limit`` publishes waiting (``StoreGate.wait_room``): past
that the server stops reading it, as for replies it does not read.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Protocol

import trio

from ..store.db import StoreFull
from .protocol import ApiError, Scalar, encode_error
from .requests import Held, ReplyOrder

if TYPE_CHECKING:
    from .session import ApiStats

__all__ = ["Confirmer", "ConfirmingStore", "StoreGate", "store_refusal"]


class Place(Held):
    """The replies of publishes that wait for the store, one after the other with no
    other reply between them: requests ``first``, ``first + 1``, ... of the connection."""

    __slots__ = ("first", "ids", "oks")

    def __init__(self, first: int) -> None:
        self.line = None
        self.first = first
        self.oks: list[bytes] = []  # their replies once stored (b"": a quiet publish)
        self.ids: list[Scalar] = []  # their request ids


class ConfirmingStore(Protocol):
    """What the API needs of the store service (``store.service.StoreService``)."""

    @property
    def queued(self) -> int:
        """Rows handed to the store so far."""
        ...

    @property
    def committed(self) -> int:
        """... of which this many are written."""
        ...

    @property
    def full_error(self) -> str | None:
        """Why the rows queued cannot be written now (the disk is full), or None."""
        ...

    async def wait_stored(self, upto: int) -> None:
        """Wait until the first ``upto`` rows are stored. Raises ``StoreFull`` once a
        write of them failed for lack of room."""
        ...

    def write_now(self) -> bool:
        """Write the rows queued at once if that is quick; True if it did."""
        ...


def store_refusal(store: ConfirmingStore, req_id: Scalar) -> ApiError | None:
    """The error for a publish while the store cannot write (None: it can)."""
    problem = store.full_error
    if problem is None:
        return None
    return ApiError("store_full", f"{problem}: nothing was published; retry once there "
                    "is room (the node tries to write again every second)", req_id)


class StoreGate:
    """One connection's publishes whose replies wait for the store: those of the read
    being handled (``add``), and how many were handed to the confirmer and wait."""

    __slots__ = ("_open", "_room", "waiting")

    def __init__(self) -> None:
        self._open: list[Place] = []
        self.waiting = 0  # taken by the confirmer, not filled yet
        self._room = trio.Event()

    def __bool__(self) -> bool:
        return bool(self._open)

    def add(self, order: ReplyOrder, req_id: Scalar, line: bytes, number: int) -> None:
        """Keep the place of the reply ``line`` (b"" for a quiet publish) of request
        ``number`` until the store has the message. Publishes one after the other share
        a place."""
        places = self._open
        if places and order.last is places[-1]:
            place = places[-1]
        else:
            place = Place(number)
            order.hold(place)
            places.append(place)
        place.oks.append(line)
        place.ids.append(req_id)

    def take(self) -> list[Place]:
        """The places added since the last call (they now wait)."""
        places, self._open = self._open, []
        self.waiting += sum(len(place.oks) for place in places)
        return places

    def filled(self, count: int) -> None:
        """``count`` places that waited were filled."""
        self.waiting -= count
        self._room.set()
        self._room = trio.Event()

    async def wait_room(self, limit: int) -> None:
        """Wait while more than ``limit`` publishes wait for the store."""
        while self.waiting > limit:
            await self._room.wait()


class Confirmer:
    """Fills the places of every connection's publishes once the store has written
    their messages (``run``, a task of the API server)."""

    def __init__(self, stats: ApiStats) -> None:
        self.stats = stats  # its ``errors`` count the places filled with an error
        # (rows queued in the store when submitted, gate, order, places), oldest first
        self._queue: collections.deque[tuple[int, StoreGate, ReplyOrder, list[Place]]] = \
            collections.deque()
        self._wake = trio.Event()

    def submit(self, store: ConfirmingStore, gate: StoreGate, order: ReplyOrder) -> None:
        """Call after a flush: the places ``gate`` keeps are filled once the store has
        every row handed to it so far."""
        if gate:
            self._queue.append((store.queued, gate, order, gate.take()))
            self._wake.set()

    def confirm_now(self, store: ConfirmingStore) -> list[ReplyOrder]:
        """Have the store write what is queued at once, if it can do so quickly
        (``StoreService.write_now``: a lone publish is then spared the round trip to the
        store's thread), and fill the places it confirms. Returns the connections whose
        places were filled: their replies are queued, and their writer tasks not woken
        (the caller sends them, or calls ``OutQueue.wake``)."""
        if not self._queue or not store.write_now():
            return []
        return self._fill(self._stored(store), None, wake=False)

    def _stored(self, store: ConfirmingStore) -> int:
        """How many of the oldest entries the store has written."""
        done = 0
        while done < len(self._queue) and self._queue[done][0] <= store.committed:
            done += 1
        return done

    async def run(self, store: ConfirmingStore) -> None:
        """Wait for the store and fill places, until cancelled (then the places left
        stay empty: their connections end with the node)."""
        queue = self._queue
        while True:
            if not queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            try:
                await store.wait_stored(queue[0][0])
            except StoreFull as exc:  # a write of them failed: so much for the first
                self._fill(1, str(exc))
                continue
            self._fill(self._stored(store), None)

    def _fill(self, count: int, problem: str | None, *, wake: bool = True
              ) -> list[ReplyOrder]:
        filled = []
        for _ in range(count):
            _upto, gate, order, places = self._queue.popleft()
            publishes = 0
            for place in places:
                publishes += len(place.oks)
                place.line = b"".join(place.oks) if problem is None \
                    else self._errors(place, problem)
            order.release(wake=wake)
            gate.filled(publishes)
            filled.append(order)
        return filled

    def _errors(self, place: Place, problem: str) -> bytes:
        lines = []
        for number, req_id in enumerate(place.ids, place.first):
            err = ApiError("store_full", f"{problem}: not confirmed. The message went out "
                           "but is not stored yet: it is once there is room, unless the "
                           "node stops first", req_id)
            err.req = number
            lines.append(encode_error(err))
        self.stats.errors += len(lines)
        return b"".join(lines)
