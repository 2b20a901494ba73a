"""Serving ``subscribe`` with ``since``: a history replay streamed a step at a time;
and the retained messages a subscription gets first, the same way.

A replay can cover the whole history (4 MiB by default: tens of milliseconds of
decoding and encoding). Run in one go, a flood of such requests would keep the event
loop from links and other clients (issue 12). So the API server runs one replay at
a time in the node (``ApiServer._replay_lock``), a step of about ``STEP_BUDGET``
units of work per turn of the event loop, and meanwhile holds back the session's
live events in a ``Backlog``: replayed messages, then the reply, then the live
events, with nothing missed or doubled, as when the replay was instantaneous. A
subscription whose topics have retained messages goes the same way: the retained
messages (``"retained": true``) come first, then the replay if ``since`` asked for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from ..gossip.retained import RetainedReplay
from ..net.outqueue import OutQueue
from ..wire.messages import Gossip
from .protocol import ApiError, Scalar, encode_event

#: Work per turn of the event loop, in ``Replay`` budget units (about a byte of body
#: decoded, or of payload encoded): 0.2-0.5 ms on the machine of docs/performance.md.
STEP_BUDGET = 128 * 1024
#: An event line is at least this long: a queue with less room left takes no more.
MIN_EVENT = 160


class Backlog:
    """Live event lines of one session, held back while its replay runs: at most
    ``limit`` bytes; once one does not fit, that one and every later one are dropped
    (and counted), so what is kept is a prefix, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[bytes] = []
        self.bytes = 0
        self.dropped = 0

    def add(self, line: bytes) -> None:
        if self.dropped or self.bytes + len(line) > self.limit:
            self.dropped += 1
            return
        self.lines.append(line)
        self.bytes += len(line)


class HistoryReplay(Protocol):
    """A replay for ``since``: of history in memory (``gossip.replay.Replay``) or of the
    message store (``store.replay.StoreReplay``)."""

    @property
    def done(self) -> bool: ...
    @property
    def found(self) -> bool | None: ...
    def step(self, budget: int) -> list[Gossip]: ...


@runtime_checkable
class Refilling(Protocol):
    """A replay whose steps wait, now and then, for rows read from the store."""

    @property
    def starved(self) -> bool: ...
    async def refill(self) -> None: ...


def got_before(msg_id: bytes, seen: dict[bytes, bytes]) -> bool:
    """Whether the app got message ``msg_id``, by ``seen`` (per run, the last id it got:
    a run's ids grow with its counter, and an app gets a run's messages in order)."""
    return msg_id <= seen.get(msg_id[:8], b"")


async def stream_replay(replay: HistoryReplay | RetainedReplay, out: OutQueue,
                        seen: dict[bytes, bytes] | None = None) -> tuple[int, int]:
    """Queue the events of ``replay`` on ``out``, a step per turn of the event loop,
    but for messages the app got (``seen``: per run, the last id it got). Events that
    do not fit (the client reads more slowly than the node replays) are dropped and
    counted, without being encoded. Returns (events queued, dropped). Cancellation
    leaves ``out`` with a prefix of the events."""
    sent = dropped = 0
    history = not isinstance(replay, RetainedReplay)
    while True:
        for msg in replay.step(STEP_BUDGET):
            if seen and got_before(msg.id, seen):
                continue
            if len(out) + MIN_EVENT > out.limit or out.closing:
                dropped += 1
            elif out.put_nowait(encode_event(msg, replay=history)):
                sent += 1
            else:
                dropped += 1
        if replay.done:
            return sent, dropped
        if isinstance(replay, Refilling) and replay.starved:
            await replay.refill()  # the store is read in a worker thread meanwhile
        else:
            await trio.lowlevel.checkpoint()  # links and other clients get their turn


@dataclass(frozen=True)
class ReplayRequest:
    """A ``subscribe`` with ``since`` or with retained messages, checked, waiting for its
    turn."""

    req_id: Scalar
    topics: list[str]
    start: bytes | float | None  # a message id, or a Unix time (``parse_since``); or None
    retained: bool = False  # the topics' retained messages first
    seen: dict[bytes, bytes] | None = None  # per run, the last id the app got (parse_seen)


class ReplayTarget(Protocol):
    """What a replay needs of a session: its queue, and where its live events go."""

    out: OutQueue
    backlog: Backlog | None


def replay_burst(rate: float) -> float:
    """The burst of the per-client replay rate limit: 4 seconds' worth, at least 1."""
    return max(1.0, 4 * rate)


def rate_error(rate: float, req_id: Scalar) -> ApiError:
    """The answer to a replay over the client's rate (``client_replays_per_s``)."""
    return ApiError("rate_limited", f"over {rate:g} replays (subscribe with since) per "
                    f"second, in bursts of {replay_burst(rate):g}; nothing was subscribed: "
                    "wait a moment and retry, or subscribe without since", req_id)


class Replayer:
    """Runs an API server's replays, one at a time in the node (first come, first
    served), a step per turn of the event loop. ``open_replay`` takes the snapshot
    (``Node.open_replay``)."""

    def __init__(self, open_replay: Callable[[bytes | float, frozenset[str]], HistoryReplay],
                 queue_bytes: int, *,
                 open_retained: Callable[[list[str]], RetainedReplay] | None = None) -> None:
        self._open = open_replay
        self._open_retained = open_retained
        self._queue_bytes = queue_bytes
        self._lock = trio.Lock()  # trio's locks are fair: FIFO

    async def run(self, session: ReplayTarget, req: ReplayRequest,
                  subscribe: Callable[[], None]) -> tuple[dict[str, Any], Backlog]:
        """Once it is this request's turn: take the snapshot and ``subscribe`` at once
        (no await between: no message is missed or sent twice), then queue the
        replayed events on ``session.out`` while its live events wait in a backlog.
        Returns the reply's fields and the backlog, for the caller to queue in that
        order. On cancellation the session's backlog is dropped."""
        fields: dict[str, Any] = {}
        dropped = 0
        async with self._lock:
            retained = (self._open_retained(req.topics)
                        if req.retained and self._open_retained is not None else None)
            replay = self._open(req.start, frozenset(req.topics)) if req.start is not None \
                else None
            subscribe()
            backlog = session.backlog = Backlog(self._queue_bytes)
            try:
                if retained is not None:
                    fields["retained"], dropped = await stream_replay(retained, session.out)
                if replay is not None:
                    sent, more = await stream_replay(replay, session.out, req.seen)
                    fields["replayed"] = sent
                    dropped += more
            finally:
                session.backlog = None
        if dropped:
            fields["dropped"] = dropped
        if isinstance(req.start, bytes) and replay is not None:
            # False: the id is not (or no longer) in history; all of it was replayed.
            fields["since_found"] = bool(replay.found)
        return fields, backlog
