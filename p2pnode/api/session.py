"""One connected local app (``Session``: its queue, subscriptions, rate limits, will),
and the API server's counters (``ApiStats``)."""

from __future__ import annotations

import fcntl
import os
import termios
from dataclasses import dataclass

import trio

from ..config.settings import NodeConfig
from ..net.outqueue import OutQueue
from ..ratelimit import TokenBucket
from .confirming import StoreGate
from .replaying import Backlog, got_before, replay_burst
from .requests import ReplyOrder
from .wills import LastWill

#: The most bytes one read of an app's socket takes.
RECEIVE_SIZE = 65536


@dataclass
class ApiStats:
    clients_accepted: int = 0
    clients_refused: int = 0  # over max_clients
    clients_forbidden: int = 0  # another user, not in the admitted group
    rate_limited: int = 0  # publishes and replays refused: a client went over its rate
    replays: int = 0  # subscribes with since served
    requests: int = 0
    published: int = 0
    errors: int = 0
    events_dropped: int = 0
    wills: int = 0  # last wills published: connections that ended without bye


class Session:
    """One connected client."""

    def __init__(self, config: NodeConfig) -> None:
        now = trio.current_time()
        rate = config.client_publish_per_s
        self.bucket = TokenBucket(rate, rate / 4, now)
        rate = config.client_replays_per_s
        self.replay_bucket = TokenBucket(rate, replay_burst(rate), now)
        self.out = OutQueue(config.client_queue_bytes)
        self.backlog: Backlog | None = None  # live events held back during a replay
        self.all_topics = False
        self.topics: set[str] = set()  # topic names and patterns
        self.events_dropped = 0
        self.unreported = 0  # events dropped since the last "dropped" notice
        self.requests = 0  # request lines read (an error reply names its number)
        self.fd = -1  # the connection's socket (send_touched writes to it directly)
        self.will: LastWill | None = None  # published if the connection ends without bye
        self.said_bye = False
        self.order = ReplyOrder(self.out)  # replies held behind a waiting "request"
        self.gate = StoreGate()  # publishes whose replies wait for the store
        self.durables: set[str] = set()  # the durable subscriptions it feeds
        #: Per origin run, the last message id the app said it got (``seen``): those and
        #: earlier ones of the run are not delivered. A run leaves it with its next one.
        self.seen: dict[bytes, bytes] | None = None

    def fresh(self, msg_id: bytes) -> bool:
        """Whether message ``msg_id`` is new to the app, by ``seen`` (a run's messages
        come in its order: once a later one passed, the run is forgotten)."""
        seen = self.seen
        assert seen is not None
        if got_before(msg_id, seen):
            return False
        if seen.pop(msg_id[:8], None) is not None and not seen:
            self.seen = None
        return True

    def waiting(self) -> bool:
        """Whether the app has sent bytes that are not read yet (False if unknown)."""
        try:
            return fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0") != b"\0\0\0\0"
        except OSError:
            return False

    async def receive(self) -> bytes:
        """The next bytes the app sent, up to ``RECEIVE_SIZE`` (b"": it closed), read
        straight from its socket: trio waits only while there is nothing to read, and
        other tasks get a turn when there was. A request that comes alone is spared trio's
        socket layers (docs/performance.md). Like trio's own ``receive_some``, nothing read
        is lost to a cancellation. Raises ``trio.BrokenResourceError`` when the connection
        fails, ``trio.ClosedResourceError`` once it is closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = os.read(self.fd, RECEIVE_SIZE)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return os.read(self.fd, RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc
