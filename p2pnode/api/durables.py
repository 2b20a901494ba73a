"""Durable subscriptions (docs/store.md, "Durable subscriptions"; docs/api.md): named
subscriptions whose position the node keeps in its message store.

A durable subscriber is fed from the store, never from the live path: a task per
subscription (``DurableFeed``) reads the batches after its position, ``CHUNK_ROWS`` at
a time through ``StoreService.call`` (a worker thread: the event loop never waits on
the disk), and queues the matching messages as events with their ``durable`` name.
Caught up, it waits for the store's next write (``StoreService.on_stored``). It
pauses while ``max_unacked`` messages are delivered and not acked, and while the
connection's queue is over half full: memory stays bounded whatever the backlog.

Acks are cumulative and per message. The position is a batch's place in the store
(``acked``) and the messages acked of the next batch (``part``); it is written with
the store's next write. A subscriber that comes back gets everything after its last
ack again, in the store's order, then what is stored later (at least once).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import trio

from ..config.settings import NodeConfig
from ..ids import parse_id
from ..store.db import DurableRow, MessageStore, Row
from ..store.selecting import DurableFilter, decode_row
from ..store.service import StoreService
from ..wire.messages import Item
from .protocol import (
    Ack,
    ApiError,
    Scalar,
    Subscribe,
    Unsubscribe,
    check_durable_name,
    check_topics,
    encode_error,
    encode_events,
    encode_gap,
    encode_reply,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .session import Session

#: Stored batches read per call to the worker thread: at most this many, and no more
#: than reach ``CHUNK_BYTES`` of them (at least one).
CHUNK_ROWS = 256
CHUNK_BYTES = 1 << 20
#: The longest a feed decodes and queues before it lets other tasks run (seconds).
TURN_BUDGET = 0.002

Mark = tuple[int, int]  # (acked, part): see store.db.DurableRow


class _Sent(NamedTuple):
    """A message delivered and not acked yet."""

    serial: int  # its number among the feed's deliveries
    msg_id: bytes
    mark: Mark  # the position once it is acked


@dataclass(frozen=True)
class DurableCall:
    """A durable ``subscribe`` or ``unsubscribe``, checked: it waits for the store."""

    req_id: Scalar
    run: Callable[[], Awaitable[bytes]]


class DurableFeed:
    """Delivers one durable subscription to one session, from ``mark`` on."""

    def __init__(self, hub: Durables, session: Session, name: str, select: DurableFilter,
                 window: int, mark: Mark) -> None:
        self.hub = hub
        self.session = session
        self.name = name
        self.select = select
        self.window = window
        self.read_pos, self.skip = mark  # rows up to read_pos done; skip of the next one
        self.sent: deque[_Sent] = deque()
        self._serials: dict[bytes, int] = {}  # msg_id -> serial, of those in ``sent``
        self._acked: OrderedDict[bytes, None] = OrderedDict()  # recently acked ids
        self._serial = 0
        self._room = trio.Event()  # set when an ack makes room
        self.scope = trio.CancelScope()
        self.lost = 0  # messages reported lost (gap events)

    # -- acks (the event loop's side) ----------------------------------------------------

    def ack(self, msg_id: bytes, req_id: Scalar) -> Mark | None:
        """Confirm everything delivered up to ``msg_id``; returns the new position, or
        None if ``msg_id`` was acked already. Raises ``ApiError`` for an id not
        delivered (on this connection, within the last ``window`` acks)."""
        serial = self._serials.get(msg_id)
        if serial is None:
            if msg_id in self._acked:
                return None
            raise ApiError("bad_request", f"msg_id {msg_id.hex()} was not delivered to "
                           f"durable {self.name!r} on this connection (or was acked long "
                           "ago)", req_id)
        mark = (0, 0)
        while self.sent and self.sent[0].serial <= serial:
            done = self.sent.popleft()
            if self._serials.get(done.msg_id) == done.serial:  # (an id stored twice)
                del self._serials[done.msg_id]
            self._acked[done.msg_id] = None
            mark = done.mark
        while len(self._acked) > self.window:
            self._acked.popitem(last=False)
        if not self.sent:  # all delivered is acked: the rows read after it had nothing
            mark = max(mark, (self.read_pos, self.skip))
        self._room.set()
        return mark

    # -- the feed ---------------------------------------------------------------------------

    async def run(self, lost: int) -> None:
        """Deliver until cancelled (the session ends, or unsubscribes). ``lost``: the
        messages retention removed before this subscriber acked them (a gap event)."""
        with self.scope:
            if lost:
                await self._gap(lost)
            while True:
                await self._wait_room()
                rows, last = await self.hub.service.call(_read, self.hub.service.store,
                                                         self.read_pos, CHUNK_ROWS)
                if not rows and last > self.read_pos:  # all after it was removed
                    self.read_pos, self.skip = last, 0
                    await self._check_lost()
                expected = self.read_pos + 1
                turn = time.perf_counter()
                for row in rows:
                    if row.pos != expected:  # removed (by retention) before it was read
                        await self._check_lost()
                    expected = row.pos + 1
                    if time.perf_counter() - turn > TURN_BUDGET:
                        await trio.lowlevel.checkpoint()  # links and other clients first
                        turn = time.perf_counter()
                    if not await self._deliver_row(row.pos, row.frame):
                        break
                if not self.sent:  # written with the store's next write, not at once
                    self.hub.advance(self.name, (self.read_pos, self.skip), wake=False)
                if not rows:
                    await self.hub.wait_stored(self.read_pos)

    async def _deliver_row(self, pos: int, frame: bytes) -> bool:
        """Queue the wanted messages of the stored batch at ``pos`` (from ``skip`` if
        it is the next one), in one piece. Returns False if the window filled before
        its end."""
        decoded = decode_row(frame)
        start = self.skip if pos == self.read_pos + 1 else 0
        if decoded is not None:
            batch, body = decoded
            items = body.items
            wanted = self.select.wanted(body, start)
            room = self.window - len(self.sent)
            taken = wanted[:max(room, 0)]
            if taken:
                chosen = [items[k] for k in taken]
                await self._put(encode_events(batch.origin, batch.hops, body.to, chosen,
                                              durable=self.name))
                self._record(pos, len(items), taken, chosen)
            if len(taken) < len(wanted):  # the window is full: the rest comes later
                self.read_pos, self.skip = pos - 1, wanted[len(taken)]
                return False
        self.read_pos, self.skip = pos, 0
        return True

    def _record(self, pos: int, count: int, taken: list[int], chosen: list[Item]) -> None:
        """Messages ``taken`` (indexes) of the stored batch at ``pos`` (``count``
        messages) were queued: each waits for its ack, with the position it acks."""
        serial = self._serial
        sent, serials = self.sent, self._serials
        last = count - 1
        for k, item in zip(taken, chosen, strict=True):
            serial += 1
            sent.append(_Sent(serial, item.id, (pos, 0) if k == last else (pos - 1, k + 1)))
            serials[item.id] = serial
        self._serial = serial

    async def _put(self, line: bytes) -> None:
        """Queue ``line`` once the connection's queue is at most half full. Nothing is
        queued once the feed is stopped (a read from the store may end after that)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        out = self.session.out
        while len(out) > out.limit // 2:
            await out.wait_writable()
            if out.closing:
                await trio.sleep_forever()  # the session ends: the hub cancels this feed
        out.put_force(line)

    async def _wait_room(self) -> None:
        while len(self.sent) >= self.window:
            self._room = trio.Event()
            await self._room.wait()

    async def _check_lost(self) -> None:
        service = self.hub.service
        lost = await service.call(MessageStore.take_lost, service.store, self.name)
        if lost:
            await self._gap(lost)

    async def _gap(self, lost: int) -> None:
        self.lost += lost
        await self._put(encode_gap(self.name, lost))


class Durables:
    """The durable subscriptions of an API server's sessions: which one each session
    feeds (at most one session per name), and their positions acked meanwhile."""

    def __init__(self, config: NodeConfig, node_id: bytes) -> None:
        self.config = config
        self.node_id = node_id
        self._service: StoreService | None = None
        self.nursery: trio.Nursery | None = None  # the API server's: where feeds run
        self.active: dict[str, DurableFeed | None] = {}  # None: being opened or deleted
        self.marks: dict[str, Mark] = {}  # positions acked since the node started
        #: Every durable subscription in the store, subscriber or not: name -> its topics
        #: (empty: every topic). What this node's record says it wants includes them.
        self.topics: dict[str, tuple[str, ...]] = {}
        #: Called when ``topics`` changes.
        self.on_change: Callable[[], None] = lambda: None
        self.last_stored = 0
        self._stored = trio.Event()

    def load(self, store: MessageStore) -> None:
        """Read the durable subscriptions' topics from ``store`` (at the start: at most
        ``max_durables`` rows, before the node runs)."""
        self.topics = {row.name: row.topics for row in store.durables()}
        self.on_change()

    def attach(self, service: StoreService | None, nursery: trio.Nursery) -> None:
        """Serve durable subscriptions from ``service`` (None: the store is off)."""
        self._service = service
        self.nursery = nursery
        if service is not None:
            self.last_stored = service.store.last_pos
            service.on_stored.append(self._on_stored)

    @property
    def service(self) -> StoreService:
        if self._service is None:
            raise ApiError("store_off", "durable subscriptions need the message store, and "
                           "this node runs without one (--store none)")
        return self._service

    def _on_stored(self, pos: int) -> None:
        self.last_stored = max(self.last_stored, pos)
        self._stored.set()
        self._stored = trio.Event()

    async def wait_stored(self, pos: int) -> None:
        """Wait until the store holds a position after ``pos``."""
        while self.last_stored <= pos:
            await self._stored.wait()

    def advance(self, name: str, mark: Mark, *, wake: bool = True) -> None:
        """Durable ``name`` is done up to ``mark``: kept, and written to the store (at
        once with ``wake``, else with its next write)."""
        if mark > self.marks.get(name, (0, 0)):
            self.marks[name] = mark
            self.service.ack(name, *mark, wake=wake)

    async def answer(self, session: Session, call: DurableCall) -> bool:
        """Answer a durable ``subscribe`` or ``unsubscribe`` once the store did its part.
        Returns False if the answer is an error."""
        try:
            reply = await call.run()
        except ApiError as err:
            err.req = session.requests
            session.order.put(encode_error(err))
            return False
        session.order.put(reply)
        return True

    # -- requests --------------------------------------------------------------------------

    def _feed_of(self, session: Session, name: str, req_id: Scalar) -> DurableFeed:
        feed = self.active.get(name)
        if feed is None or feed.session is not session:
            raise ApiError("unknown_durable", f"durable {name!r} is not subscribed on this "
                           "connection", req_id)
        return feed

    def ack(self, session: Session, req: Ack) -> bytes:
        """Answer an ``ack``. Raises ``ApiError``."""
        name = check_durable_name(req.durable, req.id)
        try:
            msg_id = parse_id(req.msg_id)
        except ValueError as exc:
            raise ApiError("bad_request", f"msg_id: {exc}", req.id) from None
        feed = self._feed_of(session, name, req.id)
        mark = feed.ack(msg_id, req.id)
        if mark is not None:
            self.advance(name, mark)
        return encode_reply(req.id, {"unacked": len(feed.sent)})

    def subscribe(self, session: Session, req: Subscribe) -> DurableCall:
        """Check a durable ``subscribe``; the call opens it. Raises ``ApiError``."""
        assert req.durable is not None
        name = check_durable_name(req.durable, req.id)
        topics = check_topics(req.topics, req.id)
        most = self.config.durable_max_unacked
        window = most if req.max_unacked is None else req.max_unacked
        if window > most:
            raise ApiError("bad_request", f"max_unacked is at most {most} on this node",
                           req.id)
        if req.since is not None or req.seen is not None:
            raise ApiError("bad_request", 'a durable subscription resumes from its last ack: '
                           'give no "since" or "seen"', req.id)
        self._check_free(session, name, req.id)
        return DurableCall(req.id, lambda: self._open(session, name, topics, window, req.id))

    def _check_free(self, session: Session, name: str, req_id: Scalar) -> None:
        self.service  # noqa: B018 - raises store_off
        if name in self.active:
            feed = self.active[name]
            whose = "this connection" if feed is not None and feed.session is session \
                else "another connection"
            raise ApiError("durable_busy", f"durable {name!r} is in use by {whose}; a "
                           "durable subscription has one subscriber at a time", req_id)

    async def _open(self, session: Session, name: str, topics: list[str], window: int,
                    req_id: Scalar) -> bytes:
        self._check_free(session, name, req_id)
        self.active[name] = None
        try:
            opened = await self.service.call(_open_durable, self.service.store, name, topics,
                                             self.config.max_durables)
        finally:
            del self.active[name]
        if opened is None:
            raise ApiError("too_many_durables", f"the node keeps at most "
                           f"{self.config.max_durables} durable subscriptions: delete one "
                           "(unsubscribe with delete) first", req_id)
        row, lost, created = opened
        if self.topics.get(name) != row.topics:
            self.topics[name] = row.topics
            self.on_change()
        mark = max((row.acked, row.part), self.marks.get(name, (0, 0)))
        feed = DurableFeed(self, session, name, DurableFilter(row.topics, self.node_id),
                           window, mark)
        self.active[name] = feed
        session.durables.add(name)
        assert self.nursery is not None
        self.nursery.start_soon(feed.run, lost)
        return encode_reply(req_id, {"durable": name, "created": created,
                                     "max_unacked": window})

    def unsubscribe(self, session: Session, req: Unsubscribe) -> DurableCall:
        """Check a durable ``unsubscribe``; the call stops it (and deletes it with
        ``delete``). Raises ``ApiError``."""
        assert req.durable is not None
        name = check_durable_name(req.durable, req.id)
        feed = self.active.get(name)
        if not req.delete:
            self._feed_of(session, name, req.id)
        elif feed is None or feed.session is not session:
            self._check_free(session, name, req.id)
        return DurableCall(req.id, lambda: self._close(session, name, req.delete, req.id))

    async def _close(self, session: Session, name: str, delete: bool, req_id: Scalar) -> bytes:
        feed = self.active.get(name)
        if feed is not None and feed.session is session:
            self.stop(feed)
        elif not delete:
            raise ApiError("unknown_durable", f"durable {name!r} is not subscribed on this "
                           "connection", req_id)
        if not delete:
            return encode_reply(req_id, {})
        self._check_free(session, name, req_id)
        self.active[name] = None
        try:
            self.marks.pop(name, None)
            self.service.forget(name)
            existed = await self.service.call(MessageStore.delete_durable, self.service.store,
                                              name)
        finally:
            del self.active[name]
        if self.topics.pop(name, None) is not None:
            self.on_change()
        if not existed:
            raise ApiError("unknown_durable", f"no durable subscription named {name!r}",
                           req_id)
        return encode_reply(req_id, {"deleted": True})

    def stop(self, feed: DurableFeed) -> None:
        """Stop ``feed`` (its position stays as acked)."""
        feed.scope.cancel()
        feed.session.durables.discard(feed.name)
        if self.active.get(feed.name) is feed:
            del self.active[feed.name]

    def drop(self, session: Session) -> None:
        """The session ended: stop its feeds."""
        for name in list(session.durables):
            feed = self.active.get(name)
            if feed is not None and feed.session is session:
                self.stop(feed)
        session.durables.clear()


def _open_durable(store: MessageStore, name: str, topics: list[str],
                  most: int) -> tuple[DurableRow, int, bool] | None:
    """In the store's thread: durable ``name`` with ``topics`` (made at the store's end
    if new; None if there are ``most`` already), and the messages it lost."""
    row = store.durable(name)
    created = row is None
    if row is None:
        if len(store.durables()) >= most:
            return None
        row = store.put_durable(name, topics, store.last_pos)
    elif tuple(sorted(set(topics))) != row.topics:
        row = store.put_durable(name, topics, row.acked)
    return row, store.take_lost(name), created


def _read(store: MessageStore, pos: int, limit: int) -> tuple[list[Row], int]:
    """In the store's thread: at most ``limit`` rows after ``pos``, and the last position
    stored (past ``pos`` while there are none: they were removed)."""
    return store.after(pos, limit, CHUNK_BYTES), store.last_pos
