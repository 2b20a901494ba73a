"""The blocking client of the local API (plain sockets, no event loop).

    with BlockingClient() as node:
        node.subscribe(["chat"])
        node.publish("chat", "hello")             # pipelined: returns at once
        for event in node.events():
            print(event["data"])

``publish`` writes its request at once (one non-blocking ``send``) and returns
without waiting for the reply; replies are read in bulk when the window fills, when
a call needs one, and at most a millisecond after the last look, so that errors
reach the caller soon. The socket is non-blocking: while a call waits, the client
both reads (replies and events) and writes, so a full socket in one direction cannot
block the other.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

from ..config.settings import default_socket_path
from ..identity.owners import check_server
from .base import ClientBase
from .membership import members_request, tags_request
from .protocol import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_EVENTS,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    ApiReplyError,
    ClientProtocol,
    ConnectionClosed,
    ProtocolViolation,
    ack_request,
    check_reply,
    encode_publish,
    encode_request,
    event_payload,
    peers_request,
    subscribe_request,
    unsubscribe_request,
    will_request,
)
from .serving import DEFAULT_ASK_TIMEOUT, ReplyError, ask_request, reply_request, request_token

READ_SIZE = 256 << 10
LOOK_EVERY = 0.001  # seconds between reads for replies while publishing


class BlockingClient(ClientBase):
    """A blocking client over one connection, for scripts that use no event loop.

    Connects in the constructor and checks who serves the socket before sending
    anything, like ``open_client`` (same arguments and errors). ``timeout`` bounds
    every wait for the node (None: wait for ever): ``TimeoutError`` when nothing
    came for that long. The other arguments are the trio ``Client``'s. The end of
    the connection raises ``ConnectionClosed`` (a ``ConnectionError``).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = 30.0, *, server_user: str | int | None = None,
                 max_pending: int = DEFAULT_MAX_EVENTS, window: int = DEFAULT_WINDOW,
                 window_bytes: int = DEFAULT_WINDOW_BYTES,
                 close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        target = Path(path) if path is not None else default_socket_path()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(target))
            check_server(self.sock, target, server_user)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.timeout = timeout
        self.close_timeout = close_timeout
        self._proto = ClientProtocol(window=window, window_bytes=window_bytes,
                                     max_events=max_pending)
        self._poll = select.poll()
        self._looked = time.monotonic()
        self._broken: BaseException | None = None
        self._closed = False

    # -- publishing ---------------------------------------------------------------

    @overload
    def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                wait: Literal[False] = False, retain: bool = False) -> int: ...
    @overload
    def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                wait: Literal[True], retain: bool = False) -> str: ...

    def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                wait: bool = False, retain: bool = False) -> int | str:
        """Like the trio ``Client.publish``: pipelined, returns the message's number on
        this connection (a later call raises ``PublishError`` naming it if the node
        refused it); ``wait=True`` waits for the reply and returns the message id;
        ``retain``: the topic's retained message.
        Blocks only while ``window`` requests are unanswered."""
        self._check()
        proto = self._proto
        if not proto.has_room():
            self._wait(proto.below_half)
        if wait:
            box: list[dict[str, Any] | None] = []
            proto.queue(encode_publish(topic, data, to, retain=retain), box.append)
            return str(self._reply_in(box)["msg_id"])
        seq = proto.publish(topic, data, to, retain=retain)
        self._send_some()
        now = time.monotonic()
        if now - self._looked >= LOOK_EVERY:
            self._looked = now
            self._read_some()
        return seq

    def flush(self) -> None:
        """Block until the node has answered every request sent so far. Raises
        ``PublishError`` if it refused a pipelined publish, ``ConnectionClosed`` if the
        connection ended before every publish was answered."""
        self._check()
        target = self._proto.flush_target()
        self._wait(lambda: self._proto.acked >= target)
        self._check()

    # -- requests -----------------------------------------------------------------

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply. Raises ``ApiReplyError`` on an error
        reply, ``PublishError`` for an earlier pipelined publish that was refused."""
        self._check()
        if not self._proto.has_room():
            self._wait(self._proto.below_half)
        box: list[dict[str, Any] | None] = []
        self._proto.queue(encode_request(request), box.append)
        return self._reply_in(box)

    def send(self, request: dict[str, Any]) -> None:
        """Send a request without waiting for its reply; ``reply()`` returns it."""
        self._check()
        if not self._proto.has_room():
            self._wait(self._proto.below_half)
        self._proto.queue(encode_request(request), None)
        self._send_some()

    def reply(self) -> dict[str, Any]:
        """The next reply to a request made with ``send`` (not checked for ``ok``)."""
        replies = self._proto.replies
        self._wait(lambda: bool(replies))
        return replies.popleft()

    def subscribe(self, topics: list[str] | None = None, since: str | float | None = None,
                  *, retained: bool = True, durable: str | None = None,
                  max_unacked: int | None = None,
                  seen: list[str] | None = None) -> dict[str, Any]:
        """Like the trio ``Client.subscribe`` (``durable``: a durable subscription;
        ``seen``: the last id got per origin run)."""
        return self.request(subscribe_request(topics, since, retained, durable, max_unacked,
                                              seen=seen))

    def ack(self, event: dict[str, Any]) -> None:
        """Like ``Client.ack``: confirm a durable subscription's message and those before."""
        self.request(ack_request(event))

    def set_will(self, topic: str, data: str | bytes, *, retain: bool = False) -> None:
        """Like ``Client.set_will``: published by the node if this connection ends
        without ``close()`` (a crash)."""
        self.request(will_request(topic, data, retain=retain))

    def clear_will(self) -> None:
        self.request(will_request())

    def unsubscribe(self, topics: list[str] | None = None, *, durable: str | None = None,
                    delete: bool = False) -> None:
        """Like ``Client.unsubscribe``."""
        self.request(unsubscribe_request(topics, durable, delete))

    def peers(self, wait_min: int | None = None, wait_max: int | None = None,
              wait_timeout: float = 10.0) -> list[dict[str, Any]]:
        """Like ``Client.peers``."""
        return list(self.request(peers_request(wait_min, wait_max, wait_timeout))["peers"])

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})

    def monitor(self, level: str = "info", messages: bool = False) -> None:
        """Like ``Client.monitor``."""
        self.request({"op": "monitor", "level": level, "messages": messages})

    def members(self, tags: Mapping[str, str] | None = None,
                state: str | Iterable[str] | None = None, *,
                watch: bool | None = None) -> list[dict[str, Any]]:
        """Like ``Client.members``: the members with all of ``tags``, in ``state``."""
        return list(self.request(members_request(tags, state, watch))["members"])

    def set_tags(self, tags: Mapping[str, str] | None = None,
                 delete: Iterable[str] = ()) -> dict[str, str]:
        """Like ``Client.set_tags``: change this node's tags; returns them."""
        return dict(self.request(tags_request(tags, delete))["tags"])

    # -- request/reply ------------------------------------------------------------

    def ask(self, topic: str, data: str | bytes, *, timeout: float = DEFAULT_ASK_TIMEOUT,
            max_replies: int = 1) -> list[dict[str, Any]]:
        """Like the trio ``Client.ask``: the replies to a request on ``topic``, once
        ``max_replies`` came or after ``timeout`` seconds (this client's own
        ``timeout`` is stretched to cover it)."""
        saved = self.timeout
        if saved is not None:
            self.timeout = max(saved, timeout + 5.0)
        try:
            return list(self.request(ask_request(topic, data, timeout, max_replies))["replies"])
        finally:
            self.timeout = saved

    def serve(self, topic: str, handler: Callable[[bytes], str | bytes]) -> None:
        """Answer the requests on ``topic``, one at a time, with ``handler(data)`` (as the
        trio ``Client.serve``, without concurrency) until the node closes the
        connection. A quiet spell longer than ``timeout`` does not end it."""
        self.subscribe([topic])
        while True:
            try:
                event = self.next_event()
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            token = request_token(event)
            if token is None:
                continue
            try:
                result: object = handler(event_payload(event))
            except Exception as exc:
                result = exc
            try:
                self.request(reply_request(token, result))
            except ApiReplyError as err:
                if err.code != "request_gone":
                    with contextlib.suppress(ApiReplyError):
                        self.request(reply_request(
                            token, ReplyError(f"the reply was refused: {err.message}")))
            except ConnectionClosed:
                return

    # -- events -------------------------------------------------------------------

    def next_event(self) -> dict[str, Any]:
        """The next event (blocking). Raises ``ConnectionClosed`` when the node goes away."""
        events = self._proto.events
        if not events:
            self._wait(lambda: bool(events))
        return events.popleft()

    def events(self) -> Iterator[dict[str, Any]]:
        """Iterate over events (blocking) until the node closes the connection."""
        events = self._proto.events
        while True:
            if not events:
                try:
                    self._wait(lambda: bool(events))
                except ConnectionClosed:
                    return
            yield events.popleft()

    # -- closing ------------------------------------------------------------------

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, KeyboardInterrupt):
            self._shut(flush=False)
        else:  # no bye: the node publishes the will, if there is one
            with contextlib.suppress(Exception):  # the body's exception goes on
                self._close(bye=False)

    def close(self) -> None:
        """Wait (up to ``close_timeout``) until the node has answered everything sent
        and a ``bye`` (no last will is published), then close the connection. Raises
        ``PublishError`` for a refused pipelined publish, ``TimeoutError`` if replies
        were still missing at the timeout (the connection is closed in any case)."""
        self._close(bye=True)

    def _close(self, bye: bool) -> None:
        if self._closed:
            return
        self._shut(flush=True, bye=bye)
        self._check_closed()

    def _shut(self, flush: bool, bye: bool = False) -> None:
        try:
            if flush and self._broken is None and not self._proto.eof:
                target = self._proto.close_target() if bye else self._proto.flush_target()
                deadline = time.monotonic() + self.close_timeout
                # A connection gone meanwhile: the end says what was lost (close).
                with contextlib.suppress(TimeoutError, *((ConnectionError,) if bye else ())):
                    self._wait(lambda: self._proto.acked >= target, deadline)
        finally:
            self._closed = True
            self.sock.close()

    # -- the machinery ------------------------------------------------------------


    def _reply_in(self, box: list[dict[str, Any] | None]) -> dict[str, Any]:
        self._wait(lambda: bool(box))
        reply = box[0]
        if reply is None:
            self._check_alive()
            raise ConnectionClosed("the node closed the connection")
        return check_reply(reply)

    def _wait(self, ready: Callable[[], bool], deadline: float | None = None) -> None:
        """Read and write until ``ready()``. ``TimeoutError`` after ``timeout`` seconds
        without anything from the node, or at ``deadline`` (``time.monotonic``)."""
        while not ready():
            if self._closed:
                raise ConnectionClosed("this client is closed")
            self._check_alive()
            self._send_some()
            wait = self.timeout
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            flags = select.POLLIN | (select.POLLOUT if self._proto.out else 0)
            self._poll.register(self.sock, flags)
            ready_fds = self._poll.poll(None if wait is None else wait * 1000)
            if not ready_fds:
                raise TimeoutError(f"the node sent nothing for {wait:.3g}s")
            if ready_fds[0][1] & ~select.POLLOUT:
                self._looked = time.monotonic()
                self._read_some()

    def _send_some(self) -> None:
        """Write what the socket takes now."""
        out = self._proto.out
        if not out or self._broken is not None:
            return
        try:
            sent = self.sock.send(out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        del out[:sent]

    def _read_some(self) -> None:
        """Read what the socket has now (nothing if it has nothing)."""
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        try:
            self._proto.feed(data)
        except ProtocolViolation as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        self._proto.feed_eof()
