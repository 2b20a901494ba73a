"""What a reconnecting subscription remembers, without I/O (``subscription`` has the
trio, asyncio and blocking loops that use it).

When the connection to the node ends (the node stopped or restarted), a reconnecting
subscription connects again, with backoff (``Reconnect``), and subscribes again with
``since`` set to the id of the last message it handed out, and ``seen`` the last one
of each origin run (at most ``MAX_SEEN``), so that the node replays what came after
them from its history and hands out none of the messages up to them again. A node
that lost its history (``--store none``) no longer has that id: it then replays all it
has, which can hold messages handed out before (a restarted node fetches its peers'
recent messages again). ``ResumeState`` therefore also remembers the ids of the last
``max_ids`` messages handed out and hands out no message twice.

That history can also hold messages published before the subscription started. A
message id is the origin's per-run prefix and a counter that goes up (``ids.py``),
and an origin's messages arrive in order: so after a reconnect, a message whose
prefix is known and whose counter is below the first one handed out for it is older
than the subscription, and is skipped too (counted in ``older``). Older messages of
an origin not heard from before the restart cannot be told apart, and are handed out.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from .protocol import ConnectionClosed, subscribe_request

#: Message ids remembered to hand out no message twice across reconnects (about
#: 100 bytes each).
DEFAULT_MAX_IDS: Final = 100_000
#: Origins (message id prefixes) whose first message is remembered.
MAX_ORIGINS: Final = 4096
#: Origin runs whose last message id a reconnect names (``seen``), the most recent.
MAX_SEEN: Final = 256


@dataclass(frozen=True)
class Reconnect:
    """How a subscription reconnects: the first retry after ``initial`` seconds, each
    later one after twice the delay before, at most ``max_delay``; it gives up once the
    node has been gone for ``give_up_after`` seconds (None: never). The default gives
    up after 300 s, the node's default history age: a node gone longer has lost some
    of what was published meanwhile anyway."""

    initial: float = 0.1
    max_delay: float = 2.0
    give_up_after: float | None = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.max_delay:
            raise ValueError("Reconnect: need 0 < initial <= max_delay")
        if self.give_up_after is not None and self.give_up_after < 0:
            raise ValueError("Reconnect: give_up_after must be at least 0 (or None)")

    def delays(self) -> Iterator[float]:
        """The waits before each attempt (endless: the caller minds ``give_up_after``)."""
        delay = self.initial
        while True:
            yield delay
            delay = min(self.max_delay, delay * 2)

    def describe(self) -> str:
        """For messages: ``retrying every 0.1-5 s for up to 300 s``."""
        limit = ("until it is back" if self.give_up_after is None
                 else f"for up to {self.give_up_after:g} s")
        return f"retrying every {self.initial:g}-{self.max_delay:g} s {limit}"


class ReconnectFailed(ConnectionClosed):
    """A reconnecting subscription gave up: the node did not come back within
    ``Reconnect.give_up_after`` seconds."""


class PublishesLost(ConnectionClosed):
    """The connection ended before the node answered ``count`` requests (publishes
    among them): they may or may not have been published, and are not sent again.
    Raised once, by the next ``publish`` or ``flush`` of the subscription."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the connection to the node ended before it answered {count} "
                         f"request{'s' if count != 1 else ''}: a publish among them may "
                         "or may not have been published (not sent again)")
        self.count = count


class ResumeState:
    """A subscription's topics and where it got to.

    ``topics``: as for ``subscribe`` (empty: all). ``since``: the first subscription's
    ``since`` (None: live only). ``max_ids``: message ids remembered (see the module).
    ``retained``: False: no retained messages first (``subscribe``'s ``retained``), on
    every connection.
    """

    def __init__(self, topics: list[str] | None, since: str | float | None,
                 max_ids: int = DEFAULT_MAX_IDS, *, retained: bool = True) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.topics = list(topics or [])
        self.since = since
        self.retained = retained
        self.last_id: str | None = None  # the last message handed out
        self.started: float | None = None  # Unix time of the first subscription
        self.duplicates = 0  # messages that came again after a reconnect, not handed out
        self.older = 0  # messages older than the subscription after a reconnect, skipped
        self.reconnects = 0
        self._first: dict[str, int] = {}  # id prefix -> the lowest counter handed out
        self._max_ids = max_ids
        self._ids: set[str] = set()
        self._order: collections.deque[str] = collections.deque()
        #: Per origin run (id prefix), the last message handed out: most recent last.
        self._last: collections.OrderedDict[str, str] = collections.OrderedDict()

    def request(self) -> dict[str, Any]:
        """The subscribe request to send now: the first one with ``since``; after a
        reconnect, with ``since`` the last message's id (or, if none came yet, the first
        ``since``, else the time of the first subscription: the restarted node's whole
        history, which is all newer)."""
        if self.started is None:
            self.started = time.time()
            return subscribe_request(self.topics, self.since, self.retained)
        since: str | float | None = self.last_id
        if since is None:
            since = self.since if self.since is not None else self.started
        seen = list(self._last.values()) if self._last else None
        return subscribe_request(self.topics, since, self.retained, seen=seen)

    def accept(self, event: dict[str, Any]) -> bool:
        """Whether to hand ``event`` out: False for a message handed out before."""
        if event.get("event") != "message":
            return True
        msg_id = event.get("msg_id")
        if not isinstance(msg_id, str):
            return True
        if msg_id in self._ids:
            self.duplicates += 1
            return False
        if not self._first_of_origin(msg_id):
            self.older += 1
            return False
        self._ids.add(msg_id)
        self._order.append(msg_id)
        if len(self._order) > self._max_ids:
            self._ids.discard(self._order.popleft())
        self.last_id = msg_id
        self._last[msg_id[:16]] = msg_id
        self._last.move_to_end(msg_id[:16])
        if len(self._last) > MAX_SEEN:
            self._last.popitem(last=False)
        return True


    def _first_of_origin(self, msg_id: str) -> bool:
        """Note the lowest counter handed out per origin run; False for a message older
        than that after a reconnect (see the module)."""
        if len(msg_id) != 32:
            return True
        prefix = msg_id[:16]
        try:
            counter = int(msg_id[16:], 16)
        except ValueError:
            return True
        first = self._first.get(prefix)
        if first is not None and counter < first:
            if self.reconnects:
                return False
        elif first is not None:
            return True
        if first is None and len(self._first) >= MAX_ORIGINS:
            del self._first[next(iter(self._first))]  # the longest known
        self._first[prefix] = counter
        return True


def disconnected_event(reason: str, policy: Reconnect) -> dict[str, Any]:
    """What a subscription hands out when the connection ends (before it retries)."""
    return {"event": "disconnected", "reason": reason, "retry": policy.describe()}


def reconnected_event(since: str | float | None, reply: dict[str, Any], attempts: int,
                      down_s: float) -> dict[str, Any]:
    """What a subscription hands out once it has subscribed again (with ``since``)."""
    event: dict[str, Any] = {"event": "reconnected", "attempts": attempts,
                             "down_s": round(down_s, 3), "since": since,
                             "replayed": reply.get("replayed", 0)}
    if "since_found" in reply:
        event["since_found"] = reply["since_found"]
    return event
