"""Bringing retained messages to nodes that missed them: a node that starts, comes
back or rejoins after a partition gets the retained set from its peers.

When a link opens, each side sends a ``RetainedDigest`` of everything it holds
(topic key, stamp, origin and batch size per topic, in pieces). Each side then *pulls*
what is newer than its own: ``RetainedWant`` names topics, the peer answers with the
original signed batches (``Retained``, the last part marked ``last``). A node asks one
peer at a time for a given topic (the one that announced the newest version; the next
best is asked if that one fails or goes away, for as long as it announced something
newer than what the node got meanwhile), at most ``want_keys``
topics and about ``want_bytes`` per ``RetainedWant`` and ``outstanding`` of them per
peer: a node that links to several peers at once gets each value once, and the work
per message it receives stays small (each batch is verified). A node that learned
values this way announces them to its other peers in a ``RetainedDigest`` of their
keys, and those pull what they lack, so values spread across a healed partition.

Batches in an answer are checked in this order: past one per topic asked, or one
that carries no topic asked of that peer, it is dropped (``unsolicited``); one whose
body does not decode is dropped (``rejected``); one with nothing newer than what is
held is dropped unchecked (``stale``); the rest must be signed by their origin
(``bad_signature`` closes the link, as for a gossiped batch). So a member can send
only what it was asked for, and cannot forge anyone's retained message but its own.

No I/O, the caller's clocks: ``now`` for the deadlines (any monotonic clock), ``wall``
for the store (the Unix time, in seconds).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from ..wire.messages import (
    MAX_KEYS,
    MAX_RETAINED_KEYS,
    Batch,
    GossipMessage,
    Retained,
    RetainedDigest,
    RetainedKey,
    RetainedWant,
)
from .actions import Action, Disconnect, Send, Verify
from .retained import RetainedEntry, RetainedStore, topic_key

#: Peers remembered per wanted topic, to ask if the first one fails.
MAX_ANNOUNCERS = 4


@dataclass
class SyncStats:
    """Counters of the retained sync (in retained messages, or batches where it says)."""

    wanted: int = 0  # topics asked for
    received: int = 0  # retained messages kept from answers
    stale: int = 0  # batches in answers with nothing newer (not checked)
    unsolicited: int = 0  # batches nobody asked that peer for (dropped)
    rejected: int = 0  # batches whose body or signature was bad
    given_up: int = 0  # topics asked of every peer that announced them, in vain
    wants_dropped: int = 0  # announced topics not asked for: too many wanted already


Version = tuple[int, bytes]  # (stamp, origin), as digests compare them


@dataclass(slots=True)
class _Want:
    # Peers that announced something newer than what is held: their version and the
    # size of its batch (at most MAX_ANNOUNCERS, the newest kept).
    announcers: dict[bytes, tuple[Version, int]]
    claimed: Version  # the newest version announced
    asked: bytes | None = None  # the peer it is asked of now

    def best(self) -> bytes | None:
        """The announcer of the newest version."""
        if not self.announcers:
            return None
        return max(self.announcers, key=lambda p: self.announcers[p][0])


@dataclass(slots=True)
class _Asked:
    deadline: float
    topics: list[bytes]
    batches: set[Version]  # the (stamp, origin) of the batches they come in
    # Topics not asked because they come in one of those batches too (looked at when
    # the answer is complete).
    riders: list[bytes] = field(default_factory=list)
    received: int = 0  # batches of the answer so far (at most one per topic asked)


@dataclass
class _Peer:
    # Topics to ask of it, in order (an OrderedDict: taking the first is O(1)).
    queue: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    asked: deque[_Asked] = field(default_factory=deque)  # RetainedWants sent, not answered
    stalled: bool = False  # did not answer in time: asked nothing more until it relinks


class RetainedSync:
    """The retained sync of one node (see the module docstring).

    Args:
        store: the node's retained messages.
        chunk_bytes: the most batch bytes in one ``Retained`` (at least one batch each).
        want_keys, want_bytes: the most topics, and about the most batch bytes, asked
            in one ``RetainedWant``.
        outstanding: ``RetainedWant``s per peer not answered yet.
        timeout: seconds a peer has to answer one; then the topics are asked elsewhere
            and the peer is asked nothing more until its link opens again.
        max_wants: topics wanted at once (others are left for a later digest).
    """

    def __init__(self, store: RetainedStore, *, chunk_bytes: int = 512 << 10,
                 want_keys: int = 64, want_bytes: int = 1 << 20, outstanding: int = 2,
                 timeout: float = 10.0, max_wants: int = 20_000) -> None:
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.want_keys = min(want_keys, MAX_KEYS)
        self.want_bytes = want_bytes
        self.outstanding = outstanding
        self.timeout = timeout
        self.max_wants = max_wants
        self.stats = SyncStats()
        self._wants: dict[bytes, _Want] = {}
        self._peers: dict[bytes, _Peer] = {}

    @property
    def wanting(self) -> int:
        """Topics wanted now (asked, or waiting to be asked)."""
        return len(self._wants)

    # -- links ---------------------------------------------------------------------

    def peer_up(self, peer: bytes, now: float, wall: float) -> list[Action]:
        """A link opened: send it the digest of everything held. (``now``: the clock of
        the deadlines; ``wall``: the Unix time, for the store.)"""
        self._peers[peer] = _Peer()
        return self.announce(self.store.digest(wall), to=(peer,))

    def peer_down(self, peer: bytes, now: float) -> list[Action]:
        """A link closed: what was asked of it is asked of the next announcer."""
        if self._peers.pop(peer, None) is None:
            return []
        return self._pump_all(self._forget(peer), now)

    def _forget(self, peer: bytes) -> set[bytes]:
        """Ask nothing more of ``peer``: what was asked of it (or was to be) goes to the
        next best announcers. Returns the peers given something to ask."""
        touched: set[bytes] = set()
        for key, want in list(self._wants.items()):
            if want.announcers.pop(peer, None) is not None or want.asked == peer:
                if want.asked in (None, peer):
                    want.asked = None
                    self._requeue(key, want, touched)
        return touched

    def announce(self, keys: list[RetainedKey], to: tuple[bytes, ...]) -> list[Action]:
        """``RetainedDigest``s of ``keys`` to each of ``to`` (in pieces)."""
        if not keys:
            return []
        parts: list[GossipMessage] = [RetainedDigest(keys[i:i + MAX_RETAINED_KEYS])
                                      for i in range(0, len(keys), MAX_RETAINED_KEYS)]
        return [Send(peer, parts) for peer in to if peer in self._peers]

    # -- messages ------------------------------------------------------------------

    def on_message(self, msg: GossipMessage, peer: bytes, now: float, wall: float,
                   verify: Verify) -> tuple[list[Action], list[RetainedEntry]]:
        """A retained-sync message from ``peer``: the actions to take, and the retained
        messages kept from it (for the node to hand to its subscribers)."""
        if peer not in self._peers:
            return [], []
        if type(msg) is RetainedDigest:
            return self._on_digest(msg, peer, now), []
        if type(msg) is RetainedWant:
            return self._on_want(msg, peer), []
        assert type(msg) is Retained
        return self._on_retained(msg, peer, now, wall, verify)

    def _on_digest(self, msg: RetainedDigest, peer: bytes, now: float) -> list[Action]:
        state = self._peers[peer]
        queue = state.queue
        for k in msg.keys:
            version = (k.stamp, k.origin)
            mine = self.store.version_of(k.topic)
            if mine is not None and mine >= version:
                continue
            want = self._wants.get(k.topic)
            if want is None:
                if state.stalled:
                    continue
                if len(self._wants) >= self.max_wants:
                    self.stats.wants_dropped += 1
                    continue
                want = self._wants[k.topic] = _Want({}, version)
            announcers = want.announcers
            if peer not in announcers and len(announcers) >= MAX_ANNOUNCERS:
                worst = min(announcers, key=lambda p: announcers[p][0])
                if announcers[worst][0] >= version:
                    continue
                del announcers[worst]
            if not state.stalled:
                announcers[peer] = (version, k.size)
                want.claimed = max(want.claimed, version)
            if want.asked is None and want.best() == peer:
                queue[k.topic] = None
        return self._pump_all({peer}, now)

    def _on_want(self, msg: RetainedWant, peer: bytes) -> list[Action]:
        """Answer with the batches of the topics asked for that are held, in parts of
        about ``chunk_bytes``; the last part (maybe empty) says ``last``."""
        batches: dict[bytes, Batch] = {}
        for key in msg.topics:
            entry = self.store.by_key(key)
            if entry is not None:
                batches.setdefault(entry.batch_key, entry.batch)
        parts: list[GossipMessage] = []
        part: list[Batch] = []
        size = 0
        for batch in batches.values():
            if part and size + len(batch.body) > self.chunk_bytes:
                parts.append(Retained(part, last=False))
                part, size = [], 0
            part.append(batch)
            size += len(batch.body)
        parts.append(Retained(part, last=True))
        return [Send(peer, parts)]

    def _on_retained(self, msg: Retained, peer: bytes, now: float, wall: float,
                     verify: Verify) -> tuple[list[Action], list[RetainedEntry]]:
        state = self._peers[peer]
        if not state.asked:
            self.stats.unsolicited += len(msg.batches)
            return [], []
        current = state.asked[0]
        asked = set(current.topics)
        kept: list[RetainedEntry] = []
        for batch in msg.batches:
            current.received += 1
            if current.received > len(current.topics):  # more than asked: not even read
                self.stats.unsolicited += 1
                continue
            try:
                body = verify(batch, check_signature=False)
            except RemoteProtocolError:
                self.stats.rejected += 1
                continue
            if not any(topic_key(item.topic) in asked for item in body.items):
                self.stats.unsolicited += 1
                continue
            if not self.store.newer_in(batch, body):
                self.stats.stale += 1
                continue
            try:
                verify(batch)
            except RemoteProtocolError as exc:
                self.stats.rejected += 1
                if exc.code == "bad_signature":
                    return [Disconnect(peer, exc.code)], kept
                continue
            kept += self.store.offer(batch, body, wall)
        self.stats.received += len(kept)
        actions: list[Action] = []
        if msg.last:
            done = state.asked.popleft()
            actions += self._answered(peer, done.topics + done.riders, now)
        others = tuple(p for p in self._peers if p != peer)
        if kept and others:
            actions += self.announce([self.store.digest_key(e) for e in kept], others)
        return actions, kept

    def _answered(self, peer: bytes, topics: list[bytes], now: float) -> list[Action]:
        """``peer`` answered a ``RetainedWant`` of ``topics``: those still not as new as
        announced are asked of the next announcer."""
        touched: set[bytes] = {peer}
        for key in topics:
            want = self._wants.get(key)
            if want is None or want.asked not in (peer, None):
                continue  # (None: a rider, not asked of anyone)
            want.asked = None
            want.announcers.pop(peer, None)
            self._requeue(key, want, touched)
        return self._pump_all(touched, now)

    # -- asking ----------------------------------------------------------------------

    def _requeue(self, key: bytes, want: _Want, touched: set[bytes]) -> None:
        """Ask ``key`` of the announcer of the newest version still newer than what is
        held; forget it when none is left (``given_up`` if what is held is older than
        the newest version announced)."""
        mine = self.store.version_of(key)
        announcers = want.announcers
        for peer in list(announcers):
            state = self._peers.get(peer)
            if (state is None or state.stalled
                    or (mine is not None and mine >= announcers[peer][0])):
                del announcers[peer]
        best = want.best()
        if best is None:
            del self._wants[key]
            if mine is None or mine < want.claimed:
                self.stats.given_up += 1
            return
        self._peers[best].queue[key] = None
        touched.add(best)

    def _pump_all(self, peers: set[bytes], now: float) -> list[Action]:
        """``_pump`` each of ``peers``, and each peer that gets something to ask meanwhile."""
        actions: list[Action] = []
        pending = set(peers)
        while pending:
            peer = pending.pop()
            if peer in self._peers:
                actions += self._pump(peer, now, pending)
        return actions

    def _pump(self, peer: bytes, now: float, touched: set[bytes]) -> list[Action]:
        """Send ``peer`` the next ``RetainedWant``s its queue holds, while fewer than
        ``outstanding`` are unanswered (topics passed on to another peer are added to
        ``touched``). A batch is asked for once: of the topics announced with one
        ``(stamp, origin)`` (one batch carries them all), one is asked, the others ride
        on it and are looked at when its answer is complete."""
        state = self._peers[peer]
        out: list[GossipMessage] = []
        asked_batches = {v for a in state.asked for v in a.batches}
        while len(state.asked) < self.outstanding and state.queue and not state.stalled:
            asked = _Asked(now + self.timeout, [], set())
            topics, batches = asked.topics, asked.batches
            size = 0
            while state.queue and len(topics) < self.want_keys and size < self.want_bytes:
                key = state.queue.popitem(last=False)[0]
                want = self._wants.get(key)
                if want is None or want.asked is not None or want.best() != peer:
                    continue  # asked elsewhere, or announced newer elsewhere
                version, batch_size = want.announcers[peer]
                mine = self.store.version_of(key)
                if mine is not None and mine >= version:
                    self._requeue(key, want, touched)  # here by now (maybe newer elsewhere)
                    continue
                if version in asked_batches or version in batches:
                    # It comes with a batch asked for already: looked at with its answer.
                    rider_of = next((a for a in state.asked if version in a.batches), asked)
                    rider_of.riders.append(key)
                    continue
                want.asked = peer
                topics.append(key)
                batches.add(version)
                size += batch_size
            if not topics:
                break  # the rest ride on earlier requests
            state.asked.append(asked)
            asked_batches |= batches
            out.append(RetainedWant(topics))
            self.stats.wanted += len(topics)
        return [Send(peer, out)] if out else []

    # -- timers ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` should run next (None: nothing is asked)."""
        deadlines = [s.asked[0].deadline for s in self._peers.values() if s.asked]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Action]:
        """A peer that did not answer in time is asked nothing more until its link opens
        again; what was asked of it goes to the next announcers."""
        touched: set[bytes] = set()
        for peer, state in self._peers.items():
            if state.asked and state.asked[0].deadline <= now:
                state.stalled = True
                state.queue.clear()
                state.asked.clear()
                touched |= self._forget(peer)
        return self._pump_all(touched, now)
