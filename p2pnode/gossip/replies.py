"""Request/reply without I/O: where a reply goes next, which requests were seen, and the
replies' signatures (docs/protocol.md, "Requests and replies").

A request spreads like any batch; each node that takes it remembers, for the
request's timeout, the link it came by (``ReplyPaths``). A reply goes back along those
links, hop by hop, to the asking node: the reverse path of the request, which is the
way it first arrived, the fastest at that moment. Nothing else carries it, so the
nodes off that path never see it. Each path lets through at most one reply per
replier and at most the request's ``max_replies``.

A request is unnumbered (its batch has ``seq`` 0), so the order buffer does not guard
it against replays; ``RequestFilter`` does, with a window of the request numbers seen
per origin run.

The tables know time only as the caller gives it, and are bounded.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

from ..identity.keypair import NodeIdentity
from ..wire.messages import Reply
from ..wire.requests import ReplyBody, decode_reply_body, encode_reply_body
from .signing import Verifier

__all__ = ["HERE", "Drop", "Path", "ReplyPaths", "RequestFilter", "Route", "ToHere", "ToPeer",
           "sign_reply", "verify_reply"]


@dataclass(slots=True)
class Path:
    """Where the replies to one request go from this node."""

    peer: bytes | None  # the link the request came by; None: it was asked on this node
    expires: float
    max_replies: int
    repliers: set[bytes] = field(default_factory=set)  # whose reply went through


@dataclass(frozen=True, slots=True)
class ToPeer:
    """Verdict: send the reply on to ``peer``."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class ToHere:
    """Verdict: the request was asked on this node; the reply is for its app."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Verdict: drop the reply. ``reason``: ``unknown`` (no such request here, or it
    expired), ``duplicate`` (this replier's reply already went through), ``over_limit``
    (the request's ``max_replies`` went through), ``loop`` (it came from the link it
    would go to)."""

    reason: str


Route = ToPeer | ToHere | Drop
HERE = ToHere()


class ReplyPaths:
    """The reverse paths of the requests this node took, each until its timeout.

    Bounded: at most ``max_paths`` in all and ``max_per_peer`` that came from one peer.
    A peer past its share gives up its own oldest path; when the table is full, the
    peer with the most paths gives up its oldest. The paths of requests asked here
    (``peer`` None) are bounded by the caller and never pushed out by a peer's.
    """

    def __init__(self, max_paths: int, max_per_peer: int) -> None:
        self.max_paths = max_paths
        self.max_per_peer = max_per_peer
        self._paths: dict[bytes, Path] = {}
        self._by_peer: dict[bytes | None, OrderedDict[bytes, None]] = {}
        self._heap: list[tuple[float, bytes]] = []  # (expires, key), stale entries included
        self.evicted = 0  # paths pushed out before their time to make room

    def __len__(self) -> int:
        return len(self._paths)

    def add(self, key: bytes, peer: bytes | None, timeout: float, max_replies: int,
            now: float) -> None:
        """Remember that the request ``key`` (its origin + its message id) came from
        ``peer`` (None: asked here), for ``timeout`` seconds. A key already known keeps
        its first path."""
        if key in self._paths:
            return
        path = Path(peer, now + timeout, max_replies)
        self._paths[key] = path
        owned = self._by_peer.setdefault(peer, OrderedDict())
        owned[key] = None
        heapq.heappush(self._heap, (path.expires, key))
        if peer is not None and len(owned) > self.max_per_peer:
            self._evict(next(iter(owned)))
        if len(self._paths) > self.max_paths:
            most = max((p for p in self._by_peer if p is not None),
                       key=lambda p: len(self._by_peer[p]), default=None)
            if most is not None:
                self._evict(next(iter(self._by_peer[most])))
        if len(self._heap) > 2 * self.max_paths + 64:  # stale entries of evicted paths
            self._heap = [(p.expires, k) for k, p in self._paths.items()]
            heapq.heapify(self._heap)

    def get(self, key: bytes, now: float) -> Path | None:
        """The path of request ``key``, unless there is none or it expired."""
        path = self._paths.get(key)
        return path if path is not None and path.expires > now else None

    def route(self, key: bytes, replier: bytes, from_peer: bytes | None, now: float) -> Route:
        """Where a reply of ``replier`` to request ``key``, from ``from_peer`` (None: an
        app of this node), goes. Changes nothing: ``commit`` once the reply is checked."""
        path = self.get(key, now)
        if path is None:
            return Drop("unknown")
        if replier in path.repliers:
            return Drop("duplicate")
        if len(path.repliers) >= path.max_replies:
            return Drop("over_limit")
        if path.peer is None:
            return HERE
        if path.peer == from_peer:
            return Drop("loop")
        return ToPeer(path.peer)

    def commit(self, key: bytes, replier: bytes) -> None:
        """``replier``'s reply to request ``key`` went through (it is single-use)."""
        path = self._paths.get(key)
        if path is not None:
            path.repliers.add(replier)

    def remove(self, key: bytes) -> None:
        """Forget the path of request ``key`` now (its asker went)."""
        if key in self._paths:
            self._forget(key)

    def expire(self, now: float) -> None:
        """Forget the paths whose time is up."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            path = self._paths.get(key)
            if path is not None and path.expires == expires:
                self._forget(key)

    def next_expiry(self) -> float | None:
        """When the next path expires (None: none left)."""
        return self._heap[0][0] if self._heap else None

    def _evict(self, key: bytes) -> None:
        self.evicted += 1
        self._forget(key)

    def _forget(self, key: bytes) -> None:
        path = self._paths.pop(key)
        owned = self._by_peer[path.peer]
        del owned[key]
        if not owned:
            del self._by_peer[path.peer]


@dataclass(slots=True)
class _Seen:
    epoch: int
    floor: int  # request numbers at or below this are old
    numbers: set[int]


class RequestFilter:
    """Which requests of each origin run were taken already: a replayed copy (one sent
    again by a member after it left the seen-cache) is refused.

    Per origin, its run (``epoch``) and the last ``window`` request numbers taken (a
    request's number is the counter of its message id, which grows in each run);
    numbers below them count as taken. A request of an earlier run is refused. At most
    ``max_origins`` origins, least recently active forgotten first.
    """

    def __init__(self, max_origins: int = 4096, window: int = 256) -> None:
        self.max_origins = max_origins
        self.window = window
        self._origins: OrderedDict[bytes, _Seen] = OrderedDict()

    def accept(self, origin: bytes, epoch: int, number: int) -> bool:
        """Whether request ``number`` of ``origin``'s run ``epoch`` is new (then it is
        recorded as taken)."""
        seen = self._origins.get(origin)
        if seen is None or epoch > seen.epoch:
            seen = self._origins[origin] = _Seen(epoch, 0, set())
            if len(self._origins) > self.max_origins:
                self._origins.popitem(last=False)
        elif epoch < seen.epoch:
            return False
        self._origins.move_to_end(origin)
        if number <= seen.floor or number in seen.numbers:
            return False
        seen.numbers.add(number)
        if len(seen.numbers) > self.window:
            seen.floor = min(seen.numbers)
            seen.numbers.remove(seen.floor)
        return True


def sign_reply(identity: NodeIdentity, body: ReplyBody) -> Reply:
    """A reply with ``body``, signed by ``identity`` (the replier), ready to cross its
    first link (hops 1)."""
    data = encode_reply_body(body)
    return Reply(origin=body.origin, request=body.request, replier=identity.node_id, hops=1,
                 key=identity.public, body=data, sig=identity.sign(data))


def verify_reply(verifier: Verifier, reply: Reply, max_payload: int) -> ReplyBody:
    """The body of ``reply`` if its signature (by ``replier``'s key) and contents are good.
    Raises ``RemoteProtocolError``: ``bad_signature``, ``bad_message``, ``too_large``."""
    verifier.check_signed(reply.key, reply.replier, reply.body, reply.sig)
    return decode_reply_body(reply, max_payload)
