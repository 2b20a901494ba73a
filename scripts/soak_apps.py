#!/usr/bin/env python3
"""The apps of the soak (scripts/soak.py): a publisher and a subscriber, each a process
on one host of the lab, talking to its node through the shipped ``BlockingClient``.

    soak_apps.py pub --index I --rate R --log FILE [--size N] [--max-seconds S]
    soak_apps.py sub --log FILE --resubscribe-delay S [--max-seconds S]

Both run until SIGTERM (or ``--max-seconds``), reconnect when their node goes away
(it is SIGKILLed and restarted by the soak) and write what they did to ``--log``,
one tab-separated record a line, flushed at least every ``FLUSH_EVERY`` seconds (the
soak reads the files while they grow):

publisher (payload ``"<run> <index> <number> <padding>"`` on topic ``soak/p<index>``;
the subscriber records other payloads with publisher and number ``?``)::

    ok   NUMBER T_SENT T_OK -           the node confirmed it (by T_OK)
    lost NUMBER T_SENT REASON           the connection ended before the reply: unknown
    err  NUMBER T_SENT CODE             the node refused it (-1: which one is not known)
    conn T                               connected (again)

subscriber (topic ``soak/#``; after its node came back, it waits ``--resubscribe-delay``
seconds, then subscribes with ``since`` the last msg_id it got and ``seen`` the last
of each origin run)::

    S SESSION T_CONNECT T_SUBSCRIBED REPLAYED DROPPED SINCE_FOUND SINCE
    M SESSION T MSG_ID PUBLISHER NUMBER REPLAY
    D SESSION T COUNT                    a "dropped" event: the node dropped COUNT events
    E SESSION T CLIENT_DROPPED REASON    the connection ended

Times are ``time.monotonic()`` (one clock for every process of the machine).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any, NoReturn

from p2pnode.client import (
    ApiReplyError,
    BlockingClient,
    ConnectionClosed,
    PublishError,
    event_payload,
)

TOPIC_PREFIX = "soak/p"
SUB_TOPICS = ["soak/#"]
FLUSH_EVERY = 0.2  # seconds
CONNECT_EVERY = 0.05  # seconds between attempts to reach a node that is down
#: A publisher that fell this far behind its schedule (its node was down) starts
#: a new schedule instead of publishing the backlog in a burst.
MAX_BEHIND = 1.0
#: Events a subscriber's client holds before handing them out (a replay comes whole
#: before the subscribe's reply).
MAX_PENDING = 500_000


class Stop(Exception):
    """SIGTERM to a subscriber: finish the record and exit."""


def _raise_stop(signum: int, frame: object) -> NoReturn:
    raise Stop


STOPPING: list[bool] = []  # SIGTERM to a publisher: stop after the publish under way


def _note_stop(signum: int, frame: object) -> None:
    STOPPING.append(True)


class Log:
    """A record file, flushed at least every ``FLUSH_EVERY`` seconds."""

    def __init__(self, path: Path) -> None:
        self.file: IO[str] = path.open("a", encoding="utf-8", buffering=1 << 16)
        self.flushed = time.monotonic()

    def write(self, *fields: object, now: bool = False) -> None:
        """Add a record; ``now``: flush it at once (else within ``FLUSH_EVERY``)."""
        self.file.write("\t".join(map(str, fields)) + "\n")
        t = time.monotonic()
        if now or t - self.flushed >= FLUSH_EVERY:
            self.file.flush()
            self.flushed = t

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def connect(socket_path: str | None, until: float, window: int = 1000) -> BlockingClient:
    """Connect to the node, trying every ``CONNECT_EVERY`` s until ``until``."""
    while True:
        try:
            return BlockingClient(socket_path, timeout=30.0, max_pending=MAX_PENDING,
                                  window=window)
        except (OSError, ConnectionError):
            if time.monotonic() >= until or STOPPING:
                raise Stop from None
            time.sleep(CONNECT_EVERY)


# -- publisher ---------------------------------------------------------------------------


class Publisher:
    """Pipelined publishes (at most ``window`` unanswered) on one connection at a time.

    The node answers in order, so once only ``client.unacknowledged`` requests are
    unanswered, every earlier one was confirmed (``ok``, at the time this is seen);
    when the connection ends, the unanswered ones are recorded ``lost``: unknown.
    """

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        self.args, self.log = args, log
        self.topic = f"{TOPIC_PREFIX}{args.index}"
        self.pad = "x" * max(0, args.size - 16 - len(args.run))
        self.client: BlockingClient | None = None
        self.pending: collections.deque[tuple[int, int, float]] = collections.deque()
        self.number = 0

    def settle(self, unanswered: int) -> None:
        now = f"{time.monotonic():.4f}"
        while len(self.pending) > unanswered:
            _, number, sent = self.pending.popleft()
            self.log.write("ok", number, f"{sent:.4f}", now, "-")

    def drop(self, reason: str) -> None:
        """The connection ended: what it did not confirm is unknown."""
        if self.client is not None:
            self.settle(self.client.unacknowledged)
            with contextlib.suppress(Exception):
                self.client.sock.close()
        for _, number, sent in self.pending:
            self.log.write("lost", number, f"{sent:.4f}", reason)
        self.pending.clear()
        self.client = None

    def publish(self, client: BlockingClient) -> None:
        number, sent = self.number, time.monotonic()
        self.number += 1
        data = f"{self.args.run} {self.args.index} {number} {self.pad}"
        try:
            seq = client.publish(self.topic, data)
        except PublishError as err:  # an earlier one was refused
            refused = next((n for s, n, _ in self.pending if s == err.seq), -1)
            self.log.write("err", refused, f"{sent:.4f}", err.code)
            self.pending = collections.deque(p for p in self.pending if p[0] != err.seq)
            self.pending.append((-1, number, sent))  # fate unknown; settled with the rest
            return
        except (ConnectionError, TimeoutError) as err:
            self.log.write("lost", number, f"{sent:.4f}", type(err).__name__)
            self.drop(type(err).__name__)
            return
        self.pending.append((seq, number, sent))
        self.settle(client.unacknowledged)

    def finish(self) -> None:
        if self.client is None:
            return
        try:
            self.client.flush()
            self.settle(0)
        except (ApiReplyError, ConnectionError, TimeoutError) as err:
            self.drop(type(err).__name__)
        self.drop("stopped")

    def run(self, until: float) -> None:
        interval = 1.0 / self.args.rate
        while time.monotonic() < until and not STOPPING:
            if self.client is None:
                self.client = connect(self.args.socket, until, window=self.args.window)
                self.log.write("conn", f"{time.monotonic():.4f}", now=True)
                start, sent_here = time.monotonic(), 0
            due = start + sent_here * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > MAX_BEHIND:
                start, sent_here = now, 0
            self.publish(self.client)
            sent_here += 1
        self.finish()


# -- subscriber --------------------------------------------------------------------------


def parse_payload(event: dict[str, Any], run: bytes) -> tuple[str, str]:
    """(publisher, number) from a payload of this run; ("?", "?") for anything else."""
    fields = event_payload(event).split(b" ", 3)
    if len(fields) >= 3 and fields[0] == run and fields[1].isdigit() and fields[2].isdigit():
        return fields[1].decode(), fields[2].decode()
    return "?", "?"


def subscribe(client: BlockingClient, log: Log, session: int, position: Position,
              connected: float) -> None:
    since = position.since
    reply = client.subscribe(SUB_TOPICS, since, retained=False,
                             seen=list(position.seen.values()) if position.seen else None)
    log.write("S", session, f"{connected:.4f}", f"{time.monotonic():.4f}",
              reply.get("replayed", 0), reply.get("dropped", 0),
              reply.get("since_found", "-"), since if since is not None else "-", now=True)


class Position:
    """The last msg_id a subscriber got (its ``since`` when it resubscribes), and the
    last of each origin run (its ``seen``)."""

    def __init__(self, run: str) -> None:
        self.since: str | float | None = None
        self.seen: dict[str, str] = {}
        self.run = run.encode()

    def got(self, msg_id: str) -> None:
        self.since = self.seen[msg_id[:16]] = msg_id


def receive(client: BlockingClient, log: Log, session: int, position: Position) -> None:
    """Record events until the connection ends (silence is no end: the node is
    there until it closes the connection)."""
    while True:
        try:
            event = client.next_event()
        except TimeoutError:
            continue
        except ConnectionClosed:
            return
        kind = event.get("event")
        now = f"{time.monotonic():.4f}"
        if kind == "message":
            msg_id = str(event.get("msg_id"))
            publisher, number = parse_payload(event, position.run)
            log.write("M", session, now, msg_id, publisher, number,
                      1 if event.get("replay") else 0)
            position.got(msg_id)
        elif kind == "dropped":
            log.write("D", session, now, event.get("count", 0))


def run_subscriber(args: argparse.Namespace, log: Log, until: float) -> None:
    position = Position(args.run)
    started = time.time()
    session = 0
    while time.monotonic() < until:
        client = connect(args.socket, until)
        connected = time.monotonic()
        try:
            if session:
                time.sleep(args.resubscribe_delay)
                if position.since is None:  # nothing came before: all newer than the start
                    position.since = started
            subscribe(client, log, session, position, connected)
            receive(client, log, session, position)
            reason = "closed"
        except (ConnectionError, TimeoutError) as err:
            reason = type(err).__name__
        finally:
            dropped = client.events_dropped
            with contextlib.suppress(Exception):
                client.sock.close()
        log.write("E", session, f"{time.monotonic():.4f}", dropped, reason, now=True)
        session += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak_apps.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--socket", default=None, help="default: $P2PNODE_SOCKET")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--run", default="soak", help="the run's token, first in payloads")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=64, help="unanswered publishes")
    parser.add_argument("--resubscribe-delay", type=float, default=0.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.resubscribe_delay < 0 or args.max_seconds <= 0:
        print("soak_apps.py: rate and max-seconds must be > 0, resubscribe-delay >= 0",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _note_stop if args.role == "pub" else _raise_stop)
    log = Log(args.log)
    until = time.monotonic() + args.max_seconds
    try:
        if args.role == "pub":
            Publisher(args, log).run(until)
        else:
            run_subscriber(args, log, until)
    except (Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
