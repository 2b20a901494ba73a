"""The trio client of the local API.

    async with open_client() as client:
        await client.subscribe(["chat"])
        await client.publish("chat", "hello")     # pipelined: returns at once
        async for event in client.events():
            print(event["data"])

Inside ``async with``, the client runs two tasks of its own: one writes the requests
that piled up since the loop's last turn in one ``send_all``, the other reads the
node's replies and events in large reads and parses each read in one go. A client
used without ``async with`` (``client = await open_client()``) has no tasks: it
writes each request at once and reads when a call needs a reply or an event (and
two tasks must not wait for replies on it at the same time).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import trio

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
    ProtocolViolation,
    check_reply,
    encode_publish,
    encode_request,
)
from .serving import DEFAULT_CONCURRENCY, request_token

READ_SIZE = 256 << 10


class Client(AsyncRequests, ClientBase):
    """An async client over one connection to the node (see the module's docstring).

    ``max_pending``: events kept until ``next_event`` takes them (then the oldest are
    dropped and counted in ``events_dropped``). ``window``, ``window_bytes``: requests
    (and bytes of them) sent and not yet answered past which ``publish`` waits until
    half of them are answered. ``close_timeout``: how long closing waits for the
    replies to what was published (seconds).
    """

    def __init__(self, stream: trio.abc.Stream, max_pending: int = DEFAULT_MAX_EVENTS, *,
                 window: int = DEFAULT_WINDOW, window_bytes: int = DEFAULT_WINDOW_BYTES,
                 close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self.stream = stream
        #: The socket under ``stream`` (None if it is another kind of stream).
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.close_timeout = close_timeout
        self._proto = ClientProtocol(window=window, window_bytes=window_bytes,
                                     max_events=max_pending)
        self._reading = False
        self._read_done = trio.Event()
        self._writing = False
        self._write_done = trio.Event()
        self._written = 0  # bytes written so far (by send_all or _try_write)
        self._wake_writer = trio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: trio.CancelScope | None = None
        self._broken: BaseException | None = None
        self._closed = False

    # -- publishing ---------------------------------------------------------------

    @overload
    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: Literal[False] = False, retain: bool = False) -> int: ...
    @overload
    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: Literal[True], retain: bool = False) -> str: ...

    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: bool = False, retain: bool = False) -> int | str:
        """Publish ``data`` (``str``, or ``bytes``: sent as text when it is UTF-8, else
        in base64) on ``topic``; ``to``: the node id of the only node that should
        deliver it.

        Pipelined by default: queues the request and returns its number on this
        connection (1, 2, ...) without waiting for the node's reply; requests go out
        in batches (a publish that comes alone, after a pause, goes out at once). If
        the node refuses it, a later call (``publish``, ``flush``, ``request`` and the
        calls built on it, or closing) raises ``PublishError`` naming that number;
        the call that raises queued nothing (call it again). Waits only while
        ``window`` requests are unconfirmed.
        With ``wait=True``: waits for this message's reply and returns its id
        (``ApiReplyError`` if refused). ``retain``: it becomes the retained message of
        its topic, which new subscribers get first (an empty ``data`` clears it;
        ``ApiReplyError``/``PublishError`` ``retained_full`` if the node has no room).

        Raises ``trio.EndOfChannel`` once the node has closed the connection.
        """
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        proto = self._proto
        if not proto.has_room():
            await self._make_room()
        if wait:
            box: list[dict[str, Any] | None] = []
            proto.queue(encode_publish(topic, data, to, retain=retain), box.append)
            await self._write_upto(proto.queued_bytes)
            return str((await self._reply_in(box))["msg_id"])
        seq = proto.publish(topic, data, to, retain=retain)
        if proto.lone and self._try_write():
            return seq  # written at once, without a pass through trio's scheduler
        if self._tasks is not None and len(proto.out) < WRITE_BATCH and not proto.lone:
            if not self._wake_writer.is_set():
                self._wake_writer.set()  # the writer task sends it at the loop's next turn
        else:
            await self._write_upto(proto.queued_bytes)
        return seq

    def _try_write(self) -> bool:
        """Write everything queued with one non-blocking write, if no write is under
        way and the socket takes all of it: True if so. (A lone publish: ``send_all``
        would yield to trio's scheduler after the write, and that pass delays the node,
        which a Unix socket's wake-up puts on this process's CPU.) False leaves what is
        not written queued, for ``_write_upto``."""
        fd = self._sock.fileno() if self._sock is not None else -1
        if self._writing or fd < 0 or self._broken is not None:
            return False
        data = self._proto.out
        try:
            n = os.write(fd, data)
        except OSError:  # full (BlockingIOError), or broken: send_all finds out
            return False
        self._written += n
        del data[:n]  # a part only: the rest goes first in the next write
        return not data

    async def flush(self) -> None:
        """Wait until the node has answered every request sent so far. Raises
        ``PublishError`` if it refused a pipelined publish, ``trio.EndOfChannel`` if
        the connection ended before every publish was answered."""
        self._check()
        target = self._proto.flush_target()
        await self._write_upto(self._proto.queued_bytes)
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
        await self._write_upto(self._proto.queued_bytes)
        return await self._reply_in(box)

    async def send(self, request: dict[str, Any]) -> None:
        """Send a request without waiting for its reply; ``reply()`` returns it (the
        replies of such requests, in order, not checked for ``ok``). Waits while
        ``window`` requests are unanswered: read the replies."""
        self._check()
        if not self._proto.has_room():
            await self._make_room()
        self._proto.queue(encode_request(request), None)
        await self._write_upto(self._proto.queued_bytes)

    async def reply(self) -> dict[str, Any]:
        """The next reply to a request made with ``send`` (not checked for ``ok``)."""
        replies = self._proto.replies
        await self._wait(lambda: bool(replies))
        return replies.popleft()

    # -- serving ------------------------------------------------------------------

    _ended = (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)

    async def serve(self, topic: str, handler: Handler, *,
                    concurrency: int = DEFAULT_CONCURRENCY,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the requests on ``topic`` (``ask`` on any node) until the node closes
        the connection (then it returns) or the call is cancelled. Subscribes to
        ``topic``, then for each request runs ``await handler(data)`` (``data``: the
        request's payload, bytes) and replies with what it returns (str or bytes); if
        it raises, the reply is an error: a ``ReplyError``'s message, or ``Type:
        message``. At most ``concurrency`` handlers run at once. It takes every event
        of this client (and skips those that are not requests): serve with a client of
        its own. ``await nursery.start(client.serve, topic, handler)`` returns once it
        is subscribed."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        await self.subscribe([topic])
        task_status.started()
        slots = trio.Semaphore(concurrency)
        async with trio.open_nursery() as nursery:
            async for event in self.events():
                token = request_token(event)
                if token is not None:
                    await slots.acquire()
                    nursery.start_soon(self._answer, handler, event, token, slots.release)

    # -- events -------------------------------------------------------------------

    async def next_event(self) -> dict[str, Any]:
        """The next event. Raises ``trio.EndOfChannel`` when the node goes away."""
        events = self._proto.events
        if events:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await self._wait(lambda: bool(events))
        return events.popleft()

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Iterate over events until the node closes the connection: message events
        (``"event": "message"``) and, when this client fell behind and the node dropped
        some, ``{"event": "dropped", "count": N}`` notices (and monitoring events after
        ``monitor``)."""
        while True:
            try:
                event = await self.next_event()
            except trio.EndOfChannel:
                return
            yield event

    # -- opening and closing ------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._stack is not None or self._closed:
            raise RuntimeError("a client can be entered only once, while it is open")
        stack = contextlib.AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack, self._tasks = stack, nursery.cancel_scope
        nursery.start_soon(self._reader_task)
        nursery.start_soon(self._writer_task)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc is None:
                await self.aclose()
            elif isinstance(exc, trio.Cancelled | KeyboardInterrupt):
                await self._shut(flush=False)
            else:  # no bye: the node publishes the will, if there is one
                with contextlib.suppress(Exception):  # the body's exception goes on
                    await self._close(bye=False)
        finally:
            stack, self._stack = self._stack, None
            if stack is not None:
                assert self._tasks is not None
                self._tasks.cancel()  # no checkpoint until the nursery exits
                await stack.aclose()

    async def aclose(self) -> None:
        """Wait (up to ``close_timeout``) until the node has answered everything sent
        and a ``bye`` (then the node publishes no last will for this connection), then
        close the connection. Raises ``PublishError`` for a refused pipelined publish,
        ``trio.TooSlowError`` if replies were still missing at the timeout (the
        connection is closed in any case). Cancelled: closes at once."""
        await self._close(bye=True)

    async def _close(self, bye: bool) -> None:
        if self._closed:
            return
        await self._shut(flush=True, bye=bye)
        self._check_closed()

    async def _shut(self, flush: bool, bye: bool = False) -> None:
        try:
            if flush and self._broken is None and not self._proto.eof:
                with trio.move_on_after(self.close_timeout):
                    target = (self._proto.close_target() if bye
                              else self._proto.flush_target())
                    try:
                        await self._write_upto(self._proto.queued_bytes)
                        await self._wait(lambda: self._proto.acked >= target)
                    except (trio.BrokenResourceError, trio.EndOfChannel):
                        if not bye:
                            raise  # else: the end says what was lost (_check_closed)
        finally:
            # The tasks end by themselves: the reader's receive_some raises
            # ClosedResourceError, the writer sees _closed. (Cancelling their scope here
            # would cancel the rest of the ``async with`` body too.)
            self._closed = True
            self._wake_writer.set()
            await trio.aclose_forcefully(self.stream)

    def _check_closed(self, ended: type[Exception] = trio.EndOfChannel,
                      too_slow: type[Exception] = trio.TooSlowError) -> None:
        """After closing: as ``ClientBase``'s, with trio's exceptions."""
        super()._check_closed(ended, too_slow)

    # -- the machinery ------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this client is closed")
        err = self._proto.pop_error()
        if err is not None:
            raise err
        self._check_alive()

    def _check_alive(self) -> None:
        if self._broken is not None:
            raise trio.BrokenResourceError(f"the connection to the node broke: "
                                           f"{self._broken}") from self._broken
        if self._proto.eof:
            raise trio.EndOfChannel(self._proto.eof_message())

    async def _reply_in(self, box: list[dict[str, Any] | None]) -> dict[str, Any]:
        await self._wait(lambda: bool(box))
        reply = box[0]
        if reply is None:
            self._check_alive()
            raise trio.EndOfChannel("the node closed the connection")
        return check_reply(reply)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        """Read (or wait for the task that reads) until ``ready()``."""
        while not ready():
            if self._closed:
                raise trio.ClosedResourceError("this client is closed")
            self._check_alive()
            await self._read_once()

    async def _read_once(self) -> None:
        """One read of the connection, parsed and dispatched; if another task is
        reading, wait for its read instead."""
        if self._reading:
            await self._read_done.wait()
            return
        self._reading = True
        try:
            data = await self.stream.receive_some(READ_SIZE)
            self._proto.feed(data)
        except (trio.BrokenResourceError, ProtocolViolation) as exc:
            self._fail(exc)
        finally:
            self._reading = False
            done, self._read_done = self._read_done, trio.Event()
            done.set()

    async def _write_upto(self, target: int) -> None:
        """Return once the first ``target`` bytes ever queued are written."""
        while self._written < target:
            self._check_alive()
            if self._writing:
                await self._write_done.wait()
                continue
            self._writing = True
            data = self._proto.take_out()
            try:
                await self.stream.send_all(data)
                self._written += len(data)
            except BaseException as exc:
                # a send_all that failed or was cancelled midway leaves the framing unknown
                self._fail(trio.BrokenResourceError(f"a write failed or was cancelled: {exc!r}"))
                raise
            finally:
                self._writing = False
                done, self._write_done = self._write_done, trio.Event()
                done.set()

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        self._proto.feed_eof()

    async def _make_room(self) -> None:
        await self._write_upto(self._proto.queued_bytes)
        await self._wait(self._proto.below_half)

    async def _reader_task(self) -> None:
        with contextlib.suppress(Exception):
            while self._broken is None and not self._proto.eof:
                await self._read_once()

    async def _writer_task(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self._wake_writer.wait()
                if self._closed:
                    return
                self._wake_writer = trio.Event()
                await self._write_upto(self._proto.queued_bytes)


class _Opening:
    """What ``open_client`` returns: ``await`` it for a ``Client``, or use it in
    ``async with`` directly."""

    def __init__(self, path: str | os.PathLike[str] | None, server_user: str | int | None,
                 options: dict[str, Any]) -> None:
        self._args = (path, server_user, options)
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return _connect(*self._args).__await__()

    async def __aenter__(self) -> Client:
        self._client = await _connect(*self._args)
        try:
            return await self._client.__aenter__()
        except BaseException:
            await trio.aclose_forcefully(self._client.stream)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._client is not None
        await self._client.__aexit__(exc_type, exc, tb)


def open_client(path: str | os.PathLike[str] | None = None, *,
                server_user: str | int | None = None, max_pending: int = DEFAULT_MAX_EVENTS,
                window: int = DEFAULT_WINDOW, window_bytes: int = DEFAULT_WINDOW_BYTES,
                close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> _Opening:
    """Connect to the node's socket (default: ``$P2PNODE_SOCKET`` or the per-user path)
    and check who serves it before sending anything (``SO_PEERCRED``: the node must run
    as this process's user, as root, or as ``server_user``, else
    ``$P2PNODE_SERVER_USER``). Use as ``async with open_client() as client`` (or
    ``await open_client()``, then ``async with client``). The other arguments are
    ``Client``'s.

    Raises ``OSError`` (no node there), ``UntrustedServer`` (the server runs as another
    user than ours, root or ``server_user``: a name or uid), ``ConfigError`` (a
    ``server_user`` that names no user).
    """
    return _Opening(path, server_user, {"max_pending": max_pending, "window": window,
                                        "window_bytes": window_bytes,
                                        "close_timeout": close_timeout})


async def _connect(path: str | os.PathLike[str] | None, server_user: str | int | None,
                   options: dict[str, Any]) -> Client:
    target = Path(path) if path is not None else default_socket_path()
    stream = await trio.open_unix_socket(str(target))
    try:
        check_server(stream.socket, target, server_user)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Client(stream, **options)
