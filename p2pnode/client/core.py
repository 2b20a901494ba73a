"""Python clients for the local API: an async one (trio) and a small blocking one.

    async with await open_client() as client:
        await client.subscribe(["chat"])
        await client.publish("chat", "hello")
        async for event in client.events():
            print(event["data"])

    with BlockingClient() as client:
        client.publish("chat", "hello")

Both check, right after connecting and before sending anything, who serves the socket
(``SO_PEERCRED``): the node must run as this process's user, as root, or as the
``server_user`` given (else ``$P2PNODE_SERVER_USER``). Any other server raises
``p2pnode.errors.UntrustedServer``: another user's process at the socket path would
read what the client sends and could answer with anything.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import socket
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import trio

from ..config.settings import default_socket_path
from ..errors import P2PError, UntrustedServer
from ..identity.owners import check_server

__all__ = ["ApiReplyError", "BlockingClient", "Client", "UntrustedServer", "check_server",
           "event_payload", "open_client", "peers_request", "publish_request"]

MAX_LINE = 4 << 20  # a reply or event line longer than this is refused (bytes)


class ApiReplyError(P2PError):
    """The node answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def publish_request(topic: str, data: str | bytes, to: str | None = None,
                    req_id: Any = None) -> dict[str, Any]:
    """Build a publish request: text goes as ``data``, other bytes as ``data_b64``."""
    req: dict[str, Any] = {"op": "publish", "topic": topic}
    if isinstance(data, str):
        req["data"] = data
    else:
        try:
            req["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            req["data_b64"] = base64.b64encode(data).decode("ascii")
    if to is not None:
        req["to"] = to
    if req_id is not None:
        req["id"] = req_id
    return req


def peers_request(wait_min: int | None = None, wait_max: int | None = None,
                  timeout: float = 10.0) -> dict[str, Any]:
    """Build a peers request, with optional waiting bounds."""
    req: dict[str, Any] = {"op": "peers"}
    if wait_min is not None:
        req["wait_min"] = wait_min
    if wait_max is not None:
        req["wait_max"] = wait_max
    if wait_min is not None or wait_max is not None:
        req["timeout"] = timeout
    return req


def event_payload(event: dict[str, Any]) -> bytes:
    """The payload of a message event as bytes, whichever way it was encoded."""
    if "data_b64" in event:
        return base64.b64decode(event["data_b64"])
    return str(event.get("data", "")).encode("utf-8")


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ApiReplyError(str(err.get("code", "unknown")), str(err.get("message", "")))
    return reply


class _LineBuffer:
    def __init__(self) -> None:
        self.buf = b""

    def pop_lines(self, data: bytes | bytearray) -> list[bytes]:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        if len(self.buf) > MAX_LINE:
            raise P2PError("line from the node too long")
        return lines


class Client:
    """An async client over one connection. Replies come in request order; message
    events that arrive while a reply is awaited are kept (up to ``max_pending``,
    then the oldest are dropped and counted in ``events_dropped``)."""

    def __init__(self, stream: trio.abc.Stream, max_pending: int = 100_000) -> None:
        self.stream = stream
        self._lines = _LineBuffer()
        self._ready: collections.deque[dict[str, Any]] = collections.deque()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_pending)
        self.events_dropped = 0

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, request: dict[str, Any]) -> None:
        """Send a request without waiting for its reply (for pipelining)."""
        await self.stream.send_all(json.dumps(request, ensure_ascii=False).encode() + b"\n")

    async def _next_line(self) -> dict[str, Any]:
        while not self._ready:
            data = await self.stream.receive_some(65536)
            if not data:
                raise trio.EndOfChannel("the node closed the connection")
            for line in self._lines.pop_lines(data):
                if line.strip():
                    self._ready.append(json.loads(line))
        return self._ready.popleft()

    async def reply(self) -> dict[str, Any]:
        """The next reply (not checked for ``ok``); events met on the way are kept."""
        while True:
            obj = await self._next_line()
            if "event" not in obj:
                return obj
            if len(self._events) == self._events.maxlen:
                self.events_dropped += 1
            self._events.append(obj)

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply. Raises ``ApiReplyError`` on an error reply."""
        await self.send(request)
        return _check(await self.reply())

    async def publish(self, topic: str, data: str | bytes, to: str | None = None) -> str:
        """Publish a message; returns its id."""
        return str((await self.request(publish_request(topic, data, to)))["msg_id"])

    async def subscribe(self, topics: list[str] | None = None,
                        since: str | float | None = None) -> dict[str, Any]:
        """Subscribe to ``topics`` (all topics if empty or None). With ``since`` (a message
        id, or a Unix time), the node first replays the matching messages of its history
        that came after it (events with ``"replay": true``, sent before the reply and
        kept for ``next_event``). Returns the reply (with ``replayed``, the number of
        replayed events, when ``since`` was given). ``ApiReplyError`` with code
        ``rate_limited`` past the node's replay rate (docs/api.md)."""
        request: dict[str, Any] = {"op": "subscribe", "topics": list(topics or [])}
        if since is not None:
            request["since"] = since
        return await self.request(request)

    async def unsubscribe(self, topics: list[str] | None = None) -> None:
        await self.request({"op": "unsubscribe", "topics": list(topics or [])})

    async def peers(self, wait_min: int | None = None, wait_max: int | None = None,
                    wait_timeout: float = 10.0) -> list[dict[str, Any]]:
        """The linked peers; with ``wait_min``/``wait_max``, once their number is within
        those bounds (``ApiReplyError`` code ``timeout`` after ``wait_timeout`` seconds)."""
        return list((await self.request(peers_request(wait_min, wait_max, wait_timeout)))["peers"])

    async def status(self) -> dict[str, Any]:
        return await self.request({"op": "status"})

    async def monitor(self, level: str = "info", messages: bool = False) -> None:
        """Start receiving ``log`` and ``link`` events (and ``delivered`` events with
        ``messages``) from ``events()``; see docs/api.md, "monitor"."""
        await self.request({"op": "monitor", "level": level, "messages": messages})

    async def next_event(self) -> dict[str, Any]:
        """The next message event. Raises ``trio.EndOfChannel`` when the node goes away."""
        if self._events:
            return self._events.popleft()
        while True:
            obj = await self._next_line()
            if "event" in obj:
                return obj

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Iterate over events until the node closes the connection: message events
        (``"event": "message"``) and, when this client fell behind and the node dropped
        some, ``{"event": "dropped", "count": N}`` notices."""
        while True:
            try:
                yield await self.next_event()
            except trio.EndOfChannel:
                return


async def open_client(path: str | os.PathLike[str] | None = None, *,
                      server_user: str | int | None = None) -> Client:
    """Connect to the node's socket (default: ``$P2PNODE_SOCKET`` or the per-user path)
    and check who serves it (see the module's docstring).

    Raises ``OSError`` (no node there), ``UntrustedServer`` (the server runs as another
    user than ours, root or ``server_user``: a name or uid), ``ConfigError`` (a
    ``server_user`` that names no user).
    """
    target = Path(path) if path is not None else default_socket_path()
    stream = await trio.open_unix_socket(str(target))
    try:
        check_server(stream.socket, target, server_user)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Client(stream)


class BlockingClient:
    """A small blocking client (plain sockets), for scripts that do not use trio.

    Connects in the constructor and checks who serves the socket, like
    ``open_client`` (same arguments and errors), then ``timeout`` bounds every
    blocking read (None: wait for ever)."""

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = 30.0, *, server_user: str | int | None = None) -> None:
        target = Path(path) if path is not None else default_socket_path()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(target))
            check_server(self.sock, target, server_user)
        except BaseException:
            self.sock.close()
            raise
        self._lines = _LineBuffer()
        self._ready: collections.deque[dict[str, Any]] = collections.deque()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=100_000)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_line(self) -> dict[str, Any]:
        while not self._ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the connection")
            for line in self._lines.pop_lines(data):
                if line.strip():
                    self._ready.append(json.loads(line))
        return self._ready.popleft()

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its reply. Raises ``ApiReplyError`` on an error reply."""
        self.sock.sendall(json.dumps(request, ensure_ascii=False).encode() + b"\n")
        while True:
            obj = self._next_line()
            if "event" not in obj:
                return _check(obj)
            self._events.append(obj)

    def publish(self, topic: str, data: str | bytes, to: str | None = None) -> str:
        return str(self.request(publish_request(topic, data, to))["msg_id"])

    def subscribe(self, topics: list[str] | None = None,
                  since: str | float | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"op": "subscribe", "topics": list(topics or [])}
        if since is not None:
            request["since"] = since
        return self.request(request)

    def peers(self, wait_min: int | None = None, wait_max: int | None = None,
              wait_timeout: float = 10.0) -> list[dict[str, Any]]:
        """Like ``Client.peers``."""
        return list(self.request(peers_request(wait_min, wait_max, wait_timeout))["peers"])

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})

    def events(self) -> Iterator[dict[str, Any]]:
        """Iterate over message events (blocking) until the node closes the connection."""
        while True:
            if self._events:
                yield self._events.popleft()
                continue
            try:
                obj = self._next_line()
            except ConnectionError:
                return
            if "event" in obj:
                yield obj
