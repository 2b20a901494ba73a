"""The asyncio client of the local API, with the same interface as the trio one.

    from p2pnode.client.aio import open_client

    async with open_client() as client:
        await client.subscribe(["chat"])
        await client.publish("chat", "hello")     # pipelined: returns at once
        async for event in client.events():
            print(event["data"])

It is an ``asyncio.Protocol``: the event loop hands it what the node sends, parsed
per read in one go; the requests queued during one turn of the loop go out in one
write at the start of the next (or at once past 64 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

from ..config.settings import default_socket_path
from ..identity.owners import check_server
from .asyncops import AsyncRequests, Handler
from .base import ClientBase
from .protocol import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_EVENTS,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    WRITE_BATCH,
    ClientProtocol,
    ConnectionClosed,
    ProtocolViolation,
    check_reply,
    encode_publish,
    encode_request,
)
from .serving import DEFAULT_CONCURRENCY, request_token

__all__ = ["AsyncioClient", "open_client"]


class _Adapter(asyncio.Protocol):
    def __init__(self, client: AsyncioClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client._transport = transport

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def eof_received(self) -> bool:
        self.client._received(b"")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class AsyncioClient(AsyncRequests, ClientBase):
    """An asyncio client over one connection to the node; made by ``open_client``.

    The arguments and methods are those of the trio ``p2pnode.client.Client``, except
    that the end of the connection raises ``ConnectionClosed`` (a ``ConnectionError``)
    where the trio client raises ``trio.EndOfChannel``, and ``TimeoutError`` where it
    raises ``trio.TooSlowError``.
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_EVENTS, *,
                 window: int = DEFAULT_WINDOW, window_bytes: int = DEFAULT_WINDOW_BYTES,
                 close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self.close_timeout = close_timeout
        self._proto = ClientProtocol(window=window, window_bytes=window_bytes,
                                     max_events=max_pending)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._write_soon = False
        self._broken: BaseException | None = None
        self._closed = False
        self._gone = self._loop.create_future()  # set by connection_lost

    # -- publishing ---------------------------------------------------------------

    @overload
    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: Literal[False] = False, retain: bool = False) -> int: ...
    @overload
    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: Literal[True], retain: bool = False) -> str: ...

    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: bool = False, retain: bool = False) -> int | str:
        """Like the trio ``Client.publish``: pipelined, returns the message's number on
        this connection; ``wait=True`` waits for the reply and returns the message id;
        ``retain``: the topic's retained message."""
        self._check()
        proto = self._proto
        if not proto.has_room():
            await self._make_room()
        if wait:
            box: list[dict[str, Any] | None] = []
            proto.queue(encode_publish(topic, data, to, retain=retain), box.append)
            self._write_now()
            return str((await self._reply_in(box))["msg_id"])
        seq = proto.publish(topic, data, to, retain=retain)
        if len(proto.out) >= WRITE_BATCH or proto.lone:
            self._write_now()
        elif not self._write_soon:
            self._write_soon = True
            self._loop.call_soon(self._write_now)
        return seq

    async def flush(self) -> None:
        """Wait until the node has answered every request sent so far. Raises
        ``PublishError`` if it refused a pipelined publish, ``ConnectionClosed`` if the
        connection ended before every publish was answered."""
        self._check()
        target = self._proto.flush_target()
        self._write_now()
        await self._wait(lambda: self._proto.acked >= target)
        self._check()

    # -- requests -----------------------------------------------------------------

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply. Raises ``ApiReplyError`` on an error
        reply, ``PublishError`` for an earlier pipelined publish that was refused."""
        self._check()
        if not self._proto.has_room():
            await self._make_room()
        box: list[dict[str, Any] | None] = []
        self._proto.queue(encode_request(request), box.append)
        self._write_now()
        return await self._reply_in(box)

    async def send(self, request: dict[str, Any]) -> None:
        """Send a request without waiting for its reply; ``reply()`` returns it."""
        self._check()
        if not self._proto.has_room():
            await self._make_room()
        self._proto.queue(encode_request(request), None)
        self._write_now()

    async def reply(self) -> dict[str, Any]:
        """The next reply to a request made with ``send`` (not checked for ``ok``)."""
        replies = self._proto.replies
        await self._wait(lambda: bool(replies))
        return replies.popleft()

    # -- serving ------------------------------------------------------------------

    async def serve(self, topic: str, handler: Handler, *,
                    concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """Answer the requests on ``topic`` with ``await handler(data)``, at most
        ``concurrency`` at once, until the node closes the connection: as the trio
        client's ``serve``."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        await self.subscribe([topic])
        slots = asyncio.Semaphore(concurrency)
        async with asyncio.TaskGroup() as group:
            async for event in self.events():
                token = request_token(event)
                if token is not None:
                    await slots.acquire()
                    group.create_task(self._answer(handler, event, token, slots.release))

    # -- events -------------------------------------------------------------------

    async def next_event(self) -> dict[str, Any]:
        """The next event. Raises ``ConnectionClosed`` when the node goes away."""
        events = self._proto.events
        if not events:
            await self._wait(lambda: bool(events))
        return events.popleft()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Iterate over events until the node closes the connection (as the trio
        client's ``events``)."""
        while True:
            try:
                event = await self.next_event()
            except ConnectionClosed:
                return
            yield event

    # -- closing ------------------------------------------------------------------

    async def __aenter__(self) -> AsyncioClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            await self.aclose()
        elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            await self._shut(flush=False)
        else:  # no bye: the node publishes the will, if there is one
            with contextlib.suppress(Exception):  # the body's exception goes on
                await self._close(bye=False)

    async def aclose(self) -> None:
        """Wait (up to ``close_timeout``) until the node has answered everything sent
        and a ``bye`` (no last will is published), then close the connection. Raises
        ``PublishError`` for a refused pipelined publish, ``TimeoutError`` if replies
        were still missing at the timeout (the connection is closed in any case)."""
        await self._close(bye=True)

    async def _close(self, bye: bool) -> None:
        if self._closed:
            return
        await self._shut(flush=True, bye=bye)
        self._check_closed()

    async def _shut(self, flush: bool, bye: bool = False) -> None:
        answered = False
        try:
            if flush and self._broken is None and not self._proto.eof:
                target = self._proto.close_target() if bye else self._proto.flush_target()
                self._write_now()
                # A connection gone meanwhile: the end says what was lost (aclose).
                with contextlib.suppress(TimeoutError, *((ConnectionError,) if bye else ())):
                    async with asyncio.timeout(self.close_timeout):
                        await self._wait(lambda: self._proto.acked >= target)
                        answered = True
        finally:
            self._closed = True
            self._wake()
            transport = self._transport
            if transport is not None:
                if answered:
                    transport.close()  # after what it still buffers
                else:
                    transport.abort()
                try:
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(self._gone)
                except TimeoutError:
                    transport.abort()

    # -- the machinery ------------------------------------------------------------


    async def _reply_in(self, box: list[dict[str, Any] | None]) -> dict[str, Any]:
        await self._wait(lambda: bool(box))
        reply = box[0]
        if reply is None:
            self._check_alive()
            raise ConnectionClosed("the node closed the connection")
        return check_reply(reply)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait for what the node sends until ``ready()``."""
        while not ready():
            if self._closed:
                raise ConnectionClosed("this client is closed")
            self._check_alive()
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _write_now(self) -> None:
        self._write_soon = False
        if self._proto.out and self._transport is not None and not self._closed:
            self._transport.write(self._proto.take_out())

    async def _make_room(self) -> None:
        self._write_now()
        await self._wait(self._proto.below_half)

    def _received(self, data: bytes) -> None:
        try:
            self._proto.feed(data)
        except ProtocolViolation as exc:
            self._broken = exc
            self._proto.feed_eof()
            if self._transport is not None:
                self._transport.abort()
        self._wake()

    def _lost(self, exc: Exception | None) -> None:
        if exc is not None and self._broken is None and not self._closed:
            self._broken = exc
        self._proto.feed_eof()
        self._wake()
        if not self._gone.done():
            self._gone.set_result(None)


class _Opening:
    """What ``open_client`` returns: ``await`` it for a client, or use it in
    ``async with`` directly."""

    def __init__(self, path: str | os.PathLike[str] | None, server_user: str | int | None,
                 options: dict[str, Any]) -> None:
        self._args = (path, server_user, options)
        self._client: AsyncioClient | None = None

    def __await__(self) -> Generator[Any, None, AsyncioClient]:
        return _connect(*self._args).__await__()

    async def __aenter__(self) -> AsyncioClient:
        self._client = await _connect(*self._args)
        return self._client

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._client is not None
        await self._client.__aexit__(exc_type, exc, tb)


def open_client(path: str | os.PathLike[str] | None = None, *,
                server_user: str | int | None = None, max_pending: int = DEFAULT_MAX_EVENTS,
                window: int = DEFAULT_WINDOW, window_bytes: int = DEFAULT_WINDOW_BYTES,
                close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> _Opening:
    """Connect to the node's socket and check who serves it before sending anything, as
    the trio ``open_client`` does (same arguments and errors). Use as
    ``async with open_client() as client`` or ``client = await open_client()``."""
    return _Opening(path, server_user, {"max_pending": max_pending, "window": window,
                                        "window_bytes": window_bytes,
                                        "close_timeout": close_timeout})


async def _connect(path: str | os.PathLike[str] | None, server_user: str | int | None,
                   options: dict[str, Any]) -> AsyncioClient:
    loop = asyncio.get_running_loop()
    target = Path(path) if path is not None else default_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, str(target))
        check_server(sock, target, server_user)
        client = AsyncioClient(**options)
        await loop.create_unix_connection(lambda: _Adapter(client), sock=sock)
    except BaseException:
        sock.close()
        raise
    return client
