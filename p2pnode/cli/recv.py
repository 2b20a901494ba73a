"""``p2pnode recv``: subscribe and print each message as a line; with ``--reconnect``,
keep going across a restart of the node.

Output modes (docs/cli.md, "recv"): the default is one line per message, three
fields separated by tabs: the topic, the origin (the publishing node's name, or the
first 8 hex digits of its id when this node does not know its name) and the payload,
each on one line (``text.one_line``). ``--data`` prints only the payload, as it is;
``--json`` each event as a JSON object. Notices go to standard error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..client import (
    Client,
    ConnectionClosed,
    Reconnect,
    event_payload,
    open_subscription,
)
from ..config.settings import DEFAULT_TOPIC, default_socket_path
from ..errors import P2PError
from .explain import open_client
from .text import check_count, one_line, plural

#: Seconds between two asks for the mesh view (to name an origin not known yet).
NAMES_REFRESH = 2.0
#: The exit status once the reader of the output has gone (``| head``): 128 + SIGPIPE,
#: as the shell reports a tool that SIGPIPE ended.
READER_GONE = 141


class _ReaderGone(Exception):
    """Standard output was closed by its reader."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since_arg(text: str, now: float | None = None) -> str | float:
    """``recv --since``: a message id, a Unix time, an ISO 8601 time, or a duration ago
    (``90s``, ``5m``, ``2h``, ``1d``; ``-5m`` means the same as ``5m``). Raises
    ``P2PError``."""
    text = text.strip()
    if len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    now = time.time() if now is None else now
    if text[-1:] in _UNITS:
        try:
            amount = float(text[:-1].removeprefix("-"))
        except ValueError:
            amount = -1.0
        if amount >= 0 and math.isfinite(amount):
            return max(0.0, now - amount * _UNITS[text[-1]])
    try:
        value = float(text)
        if value >= 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise P2PError(f"--since {text!r}: expected a message id (32 hex digits), a Unix "
                       "time, an ISO 8601 time (2026-11-25T10:00:00) or a duration ago "
                       "such as 90s, 5m, 2h or 1d") from None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time
        return max(0.0, moment.timestamp())
    except (ValueError, OverflowError, OSError):  # out of the platform's range
        if moment.year <= 1970:
            return 0.0  # all of history
        raise P2PError(f"--since {text!r}: that time is out of range") from None


class OriginNames:
    """Node names by node id, from the node's peers (named in their handshake: known
    as soon as they are linked) and its mesh view (every node, once its link list has
    come), asked again for an id they do not know, at most every ``NAMES_REFRESH``
    seconds."""

    def __init__(self, request: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        self._request = request
        self._names: dict[str, str] = {}
        self._asked: float | None = None

    async def label(self, origin: str) -> str:
        """The origin's name, or the first 8 hex digits of its id."""
        if origin not in self._names:
            now = trio.current_time()
            if self._asked is None or now - self._asked >= NAMES_REFRESH:
                self._asked = now
                await self._refresh()
        return self._names.get(origin) or origin[:8]

    async def _refresh(self) -> None:
        for op, key in (("mesh", "nodes"), ("peers", "peers")):
            try:
                reply = await self._request({"op": op})
            except (P2PError, trio.EndOfChannel, trio.BrokenResourceError):
                return  # an older node, or the connection ended: short ids will do
            nodes = reply.get(key)
            for node in nodes if isinstance(nodes, list) else []:
                if isinstance(node, dict) and isinstance(node.get("node_id"), str):
                    self._names[node["node_id"]] = str(node.get("name") or "")


def message_line(event: dict[str, Any], mode: str, label: str) -> str:
    """A message event as ``recv`` prints it in ``mode`` (text, data or json)."""
    if mode == "json":
        return json.dumps(event)
    payload = event_payload(event)
    if mode == "data":
        return payload.decode("utf-8", "backslashreplace")
    text = payload.decode("utf-8", "surrogateescape")  # bad bytes: \xNN in one_line
    return f"{one_line(str(event.get('topic', '')))}\t{one_line(label)}\t{one_line(text)}"


def notice(event: dict[str, Any], where: Path | str) -> str | None:
    """What ``recv`` says on standard error for an event that is not a message."""
    kind = event.get("event")
    if kind == "dropped":
        count = event.get("count")
        n = count if isinstance(count, int) else 0
        return (f"p2pnode: {plural(n, 'message')} {'was' if n == 1 else 'were'} dropped: "
                "this receiver did not keep up")
    if kind == "gap":
        lost = event.get("lost")
        n = lost if isinstance(lost, int) else 0
        return (f"p2pnode: durable subscription {event.get('durable')} lost "
                f"{plural(n, 'message')}: the node's store removed them (--store-age, "
                "--store-bytes) before they were acked")
    if kind == "disconnected":
        return f"p2pnode: node at {where} stopped ({event.get('reason')}); {event.get('retry')}"
    if kind == "reconnected":
        text = (f"p2pnode: reconnected to {where} after {event.get('down_s')} s; replaying "
                f"{plural(event.get('replayed', 0), 'message')} from its history")
        if event.get("since_found") is False:
            text += (" (the node restarted: all of its history; messages printed before "
                     "are skipped)")
        return text
    return None


async def cmd_recv(args: argparse.Namespace) -> int:
    topics = args.topic or [DEFAULT_TOPIC]
    topics = [] if "*" in topics else topics
    check_count(args.count)
    since = parse_since_arg(args.since) if args.since is not None else None
    where = args.socket if args.socket is not None else default_socket_path()
    mode = "json" if args.json else "data" if args.data else "text"
    try:
        await _receive(args, topics, since, mode, where)
    except _ReaderGone:
        return READER_GONE
    return 0


async def _receive(args: argparse.Namespace, topics: list[str], since: str | float | None,
                   mode: str, where: Path) -> None:
    if args.durable is not None:
        if args.reconnect or since is not None:
            raise P2PError("--durable resumes after its last ack by itself: give neither "
                           "--since nor --reconnect with it")
        client = await open_client(args.socket, server_user=args.server_user)
        async with client:
            reply = await client.subscribe(topics, durable=args.durable)
            print(f"p2pnode: durable subscription {args.durable} "
                  f"{'created' if reply.get('created') else 'resumed'}: "
                  f"{', '.join(topics) or 'all topics'}", file=sys.stderr, flush=True)
            await _print_until_stopped(client, mode, args.count, where, acks=True)
        return
    if args.reconnect:
        async with open_subscription(topics, since, args.socket,
                                     server_user=args.server_user,
                                     reconnect=Reconnect(), retained=args.retained) as sub:
            reply = sub.reply
            _say_subscribed(topics, since, reply)
            await _print(sub.next_event, sub.request, mode, args.count, where)
        return
    client = await open_client(args.socket, server_user=args.server_user)
    async with client:
        reply = await client.subscribe(topics, since, retained=args.retained)
        _say_subscribed(topics, since, reply)
        await _print_until_stopped(client, mode, args.count, where)


def _say_subscribed(topics: list[str], since: str | float | None,
                    reply: dict[str, Any]) -> None:
    replayed = ("; replaying " + plural(reply.get("replayed", 0), "message") + " from history"
                if since is not None else "")
    retained = (f"; {plural(reply['retained'], 'retained message')} first"
                if reply.get("retained") else "")
    print(f"p2pnode: subscribed to {', '.join(topics) or 'all topics'}{retained}{replayed}",
          file=sys.stderr, flush=True)
    if reply.get("since_found") is False:
        print("p2pnode: that message is not in the node's history (any more): "
              "replaying all of it", file=sys.stderr, flush=True)


async def _print_until_stopped(client: Client, mode: str, count: int | None,
                               where: Path, *, acks: bool = False) -> None:
    """Print until ``count`` messages; the node's end of the connection is an error.
    ``acks``: ack each message of a durable subscription once it is printed."""
    try:
        await _print(client.next_event, client.request, mode, count, where,
                     client.ack if acks else None)
    except (trio.EndOfChannel, trio.BrokenResourceError, ConnectionClosed) as exc:
        raise P2PError(f"node at {where} stopped ({exc}); recv --reconnect waits for it "
                       "to come back and goes on where it was") from None


async def _print(next_event: Callable[[], Awaitable[dict[str, Any]]],
                 request: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                 mode: str, count: int | None, where: Path,
                 ack: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
    """Print each message as a line until ``count`` were printed (None: for ever);
    ``ack`` each one once it is printed and flushed."""
    names = OriginNames(request)
    printed = 0
    while count is None or printed < count:
        event = await next_event()
        if event.get("event") != "message":
            text = notice(event, where)
            if text is not None:
                print(text, file=sys.stderr, flush=True)
            elif mode == "json":
                _out(json.dumps(event))
            continue
        label = await names.label(str(event.get("origin", ""))) if mode == "text" else ""
        _out(message_line(event, mode, label))
        if ack is not None and "durable" in event:
            await ack(event)  # printed and flushed first: at least once
        printed += 1


def _out(line: str) -> None:
    """Print a line now; ``_ReaderGone`` if the reader closed standard output (later
    writes, Python's own at exit too, then go nowhere)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise _ReaderGone from None

