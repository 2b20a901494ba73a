"""Subscriptions that survive a node restart: the trio, asyncio and blocking versions.

    from p2pnode.client import open_subscription

    async with open_subscription(["chat"]) as sub:
        async for event in sub.events():
            if event["event"] == "message":
                print(event["data"])

Each wraps one client connection at a time (``Client``, ``AsyncioClient``,
``BlockingClient``, used as they are). When the node closes the connection, the
subscription hands out a ``disconnected`` event, connects again with backoff
(``Reconnect``), subscribes again with ``since`` the id of the last message it handed
out, and hands out a ``reconnected`` event, then the replayed and live messages, none
of them twice (``ResumeState``). It gives up with ``ReconnectFailed`` after
``Reconnect.give_up_after`` seconds. The first connection is not retried: no node at
the socket raises at once, as ``open_client`` does.

``publish`` and ``flush`` go to the current connection. Publishes the node answered are
published (in its history and on their way); those it had not answered when the
connection ended are not sent again: the next ``publish`` or ``flush`` raises
``PublishesLost`` with their number. While the subscription is reconnecting they raise
``ConnectionClosed`` and publish nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, cast

import trio

from . import aio, trio_client
from .blocking import BlockingClient
from .protocol import ApiReplyError, ConnectionClosed
from .resume import (
    DEFAULT_MAX_IDS,
    PublishesLost,
    Reconnect,
    ReconnectFailed,
    ResumeState,
    disconnected_event,
    reconnected_event,
)

__all__ = ["AsyncSubscription", "BlockingSubscription", "open_asyncio_subscription",
           "open_subscription"]

Path = str | os.PathLike[str] | None


class _Conn(Protocol):
    """What a subscription needs of an async client connection."""

    @property
    def unacknowledged(self) -> int: ...
    async def request(self, request: dict[str, Any]) -> dict[str, Any]: ...
    async def next_event(self) -> dict[str, Any]: ...
    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: bool = False) -> int | str: ...
    async def flush(self) -> None: ...
    async def aclose(self) -> None: ...


def _retryable(exc: BaseException) -> bool:
    """Whether a failed (re)subscription is worth another attempt."""
    return not isinstance(exc, ApiReplyError) or exc.code == "rate_limited"


class AsyncSubscription:
    """A reconnecting subscription for trio or asyncio (made by ``open_subscription``
    or ``open_asyncio_subscription``; see the module). ``state.last_id`` is the id of
    the last message handed out, ``state.reconnects`` counts the reconnections."""

    def __init__(self, connect: Callable[[], Awaitable[_Conn]],
                 sleep: Callable[[float], Awaitable[object]], clock: Callable[[], float],
                 ended: tuple[type[BaseException], ...], state: ResumeState,
                 policy: Reconnect, where: str) -> None:
        self._connect, self._sleep, self._clock = connect, sleep, clock
        self._ended = ended
        self._resubscribe_errors: tuple[type[BaseException], ...] = (*ended, ApiReplyError)
        self.state = state
        self.policy = policy
        self.where = where
        self._conn: _Conn | None = None
        self._lost = 0  # requests left unanswered by ended connections, not yet raised
        self._down_since: float | None = None
        self._closed = False
        self.reply: dict[str, Any] = {}  # the first subscribe's reply

    async def open(self) -> dict[str, Any]:
        """Connect and subscribe the first time; returns the subscribe reply (also
        kept as ``reply``)."""
        conn = await self._connect()
        try:
            reply = await conn.request(self.state.request())
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.aclose()
            raise
        self._conn = conn
        self.reply = reply
        return reply

    # -- events -------------------------------------------------------------------

    async def next_event(self) -> dict[str, Any]:
        """The next event: a message not handed out before, a ``dropped`` notice, or
        ``disconnected`` / ``reconnected`` (see the module). Raises ``ReconnectFailed``
        when the node stays away."""
        while True:
            if self._closed:
                raise ConnectionClosed("this subscription is closed")
            conn = self._conn
            if conn is None:
                return await self._reconnect()
            try:
                event = await conn.next_event()
            except self._ended as exc:
                await self._gone(conn)
                return disconnected_event(str(exc) or type(exc).__name__, self.policy)
            if self.state.accept(event):
                return event

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """``next_event`` for ever (until ``ReconnectFailed`` or ``aclose``)."""
        while True:
            yield await self.next_event()

    async def _gone(self, conn: _Conn) -> None:
        """``conn`` ended: note what it left unanswered, and close it."""
        if conn is not self._conn:
            return
        self._conn = None
        self._down_since = self._clock()
        self._lost += conn.unacknowledged
        with contextlib.suppress(Exception):
            await conn.aclose()

    async def _reconnect(self) -> dict[str, Any]:
        start = self._down_since if self._down_since is not None else self._clock()
        limit = self.policy.give_up_after
        error: BaseException | None = None
        for attempt, delay in enumerate(self.policy.delays(), 1):
            if limit is not None and self._clock() + delay - start > limit:
                raise ReconnectFailed(f"no node at {self.where} for {limit:g} s "
                                      f"({attempt - 1} attempts): gave up; last error: {error}")
            await self._sleep(delay)
            try:
                conn = await self._connect()
            except OSError as exc:
                error = exc
                continue
            request = self.state.request()
            try:
                reply = await conn.request(request)
            except self._resubscribe_errors as exc:
                with contextlib.suppress(Exception):
                    await conn.aclose()
                if not _retryable(exc):
                    raise
                error = exc
                continue
            self._conn = conn
            self.state.reconnects += 1
            return reconnected_event(request.get("since"), reply, attempt,
                                     self._clock() - start)
        raise AssertionError("unreachable")  # pragma: no cover - delays() is endless

    # -- publishing ---------------------------------------------------------------

    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: bool = False) -> int | str:
        """Publish on the current connection (as the client's ``publish``). Raises
        ``PublishesLost`` (once) after a connection ended with requests unanswered,
        ``ConnectionClosed`` while reconnecting (nothing published)."""
        conn = self._current()
        try:
            return await conn.publish(topic, data, to, wait=wait)
        except self._ended:
            await self._gone(conn)
            self._current()  # raises
            raise

    async def flush(self) -> None:
        """Wait until the node has answered every publish on the current connection."""
        conn = self._current()
        try:
            await conn.flush()
        except self._ended:
            await self._gone(conn)
            self._current()
            raise

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Any other request, on the current connection (as the client's ``request``;
        ``ConnectionClosed`` while reconnecting)."""
        return await self._current(check_lost=False).request(request)

    def _current(self, *, check_lost: bool = True) -> _Conn:
        if check_lost and self._lost:
            lost, self._lost = self._lost, 0
            raise PublishesLost(lost)
        if self._conn is None:
            raise ConnectionClosed(f"not connected to the node at {self.where} (the "
                                   "subscription reconnects in next_event): nothing published")
        return self._conn

    # -- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the current connection (as the client's ``aclose``: it waits for the
        replies to what was published)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            await self.aclose()
        else:
            with contextlib.suppress(Exception):  # the body's exception goes on
                await self.aclose()


class _Opening:
    """``await`` it for an open subscription, or use it in ``async with``."""

    def __init__(self, subscription: AsyncSubscription) -> None:
        self._sub = subscription

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> AsyncSubscription:
        await self._sub.open()
        return self._sub

    async def __aenter__(self) -> AsyncSubscription:
        return await self._open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._sub.__aexit__(exc_type, exc, tb)


def open_subscription(topics: list[str] | None = None, since: str | float | None = None,
                      path: Path = None, *, server_user: str | int | None = None,
                      reconnect: Reconnect | None = None, max_ids: int = DEFAULT_MAX_IDS,
                      retained: bool = True, **options: Any) -> _Opening:
    """A trio subscription to ``topics`` (all if empty or None), from ``since`` (as
    ``subscribe``; ``retained=False``: without the topics' retained messages first),
    that reconnects as ``reconnect`` says (default ``Reconnect()``).
    ``options`` are ``open_client``'s (``max_pending``, ``window``, ...). The end of a
    connection is ``trio.EndOfChannel`` or ``trio.BrokenResourceError`` inside."""
    async def connect() -> _Conn:
        client = await trio_client.open_client(path, server_user=server_user, **options)
        return cast("_Conn", client)

    return _Opening(AsyncSubscription(
        connect, trio.sleep, trio.current_time, (trio.EndOfChannel, trio.BrokenResourceError),
        ResumeState(topics, since, max_ids, retained=retained), reconnect or Reconnect(),
        _where(path)))


def open_asyncio_subscription(topics: list[str] | None = None,
                              since: str | float | None = None, path: Path = None, *,
                              server_user: str | int | None = None,
                              reconnect: Reconnect | None = None,
                              max_ids: int = DEFAULT_MAX_IDS, retained: bool = True,
                              **options: Any) -> _Opening:
    """The asyncio version of ``open_subscription`` (same arguments)."""
    async def connect() -> _Conn:
        client = await aio.open_client(path, server_user=server_user, **options)
        return cast("_Conn", client)

    loop = asyncio.get_running_loop()
    return _Opening(AsyncSubscription(
        connect, asyncio.sleep, loop.time, (ConnectionError,),
        ResumeState(topics, since, max_ids, retained=retained), reconnect or Reconnect(),
        _where(path)))


def _where(path: Path) -> str:
    from ..config.settings import default_socket_path

    return str(path) if path is not None else str(default_socket_path())


class BlockingSubscription:
    """The blocking version: connects and subscribes in the constructor (arguments as
    ``open_subscription``, plus ``timeout`` as ``BlockingClient``'s), then the same
    methods without ``await`` (``close`` for ``aclose``)."""

    def __init__(self, topics: list[str] | None = None, since: str | float | None = None,
                 path: Path = None, *, timeout: float | None = None,
                 server_user: str | int | None = None, reconnect: Reconnect | None = None,
                 max_ids: int = DEFAULT_MAX_IDS, retained: bool = True,
                 **options: Any) -> None:
        self._args = (path, timeout, server_user, options)
        self.state = ResumeState(topics, since, max_ids, retained=retained)
        self.policy = reconnect or Reconnect()
        self.where = _where(path)
        self._lost = 0
        self._down_since: float | None = None
        conn = self._connect()
        try:
            self.reply = conn.request(self.state.request())  # the first subscribe's reply
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn: BlockingClient | None = conn

    def _connect(self) -> BlockingClient:
        path, timeout, server_user, options = self._args
        return BlockingClient(path, timeout, server_user=server_user, **options)

    def next_event(self) -> dict[str, Any]:
        """As ``AsyncSubscription.next_event``."""
        while True:
            conn = self._conn
            if conn is None:
                return self._reconnect()
            try:
                event = conn.next_event()
            except ConnectionError as exc:
                self._gone(conn)
                return disconnected_event(str(exc), self.policy)
            if self.state.accept(event):
                return event

    def events(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_event()

    def _gone(self, conn: BlockingClient) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._down_since = time.monotonic()
        self._lost += conn.unacknowledged
        with contextlib.suppress(Exception):
            conn.close()

    def _reconnect(self) -> dict[str, Any]:
        start = self._down_since if self._down_since is not None else time.monotonic()
        limit = self.policy.give_up_after
        error: BaseException | None = None
        for attempt, delay in enumerate(self.policy.delays(), 1):
            if limit is not None and time.monotonic() + delay - start > limit:
                raise ReconnectFailed(f"no node at {self.where} for {limit:g} s "
                                      f"({attempt - 1} attempts): gave up; last error: {error}")
            time.sleep(delay)
            try:
                conn = self._connect()
            except OSError as exc:
                error = exc
                continue
            request = self.state.request()
            try:
                reply = conn.request(request)
            except (ConnectionError, ApiReplyError) as exc:
                with contextlib.suppress(Exception):
                    conn.close()
                if not _retryable(exc):
                    raise
                error = exc
                continue
            self._conn = conn
            self.state.reconnects += 1
            return reconnected_event(request.get("since"), reply, attempt,
                                     time.monotonic() - start)
        raise AssertionError("unreachable")  # pragma: no cover - delays() is endless

    def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                wait: bool = False) -> int | str:
        """As ``AsyncSubscription.publish``."""
        conn = self._current()
        try:
            return conn.publish(topic, data, to, wait=wait)  # type: ignore[call-overload,no-any-return]
        except ConnectionError:
            self._gone(conn)
            self._current()
            raise

    def flush(self) -> None:
        conn = self._current()
        try:
            conn.flush()
        except ConnectionError:
            self._gone(conn)
            self._current()
            raise

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._current(check_lost=False).request(request)

    def _current(self, *, check_lost: bool = True) -> BlockingClient:
        if check_lost and self._lost:
            lost, self._lost = self._lost, 0
            raise PublishesLost(lost)
        if self._conn is None:
            raise ConnectionClosed(f"not connected to the node at {self.where} (the "
                                   "subscription reconnects in next_event): nothing published")
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> BlockingSubscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()
