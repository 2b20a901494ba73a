"""The last batch of each recent stream, announced again along the tree when the
graph changes (interest mode, docs/interest.md: "A subscriber between two trees").

A routed batch goes down the tree of its origin and topic as each node on the way
sees the mesh. Just after a crash those views differ for a moment (the crashed
node's peers see it at once, the others when the new link lists reach them), so a
node may send a batch by the old tree while the next one expects it by the new one,
and a subscriber falls between the two. A batch lost so in the middle of a stream
comes back by ``Fetch`` when the next batch shows the gap; the last batch of a
stream has no next one.

So each node remembers, per stream (origin, topic), the newest batch it passed on
and the peers it told of it (pushed, announced, or that brought it): ``Tails``, at
most ``MAX_STREAMS`` streams. When its graph loses a link or a node
(``Routes.lost``: a crash, seen by the link's end at once and by the others when the
new link lists reach them; looked at at most every ``TAIL_EVERY`` seconds), it
computes again the tree of each of its ``MAX_CHECK`` newest tails passed on in the
last ``TAIL_AGE`` seconds, and announces the batch to the peers that the tree as
it is now adds (its children, its linked members that want the topic) and that it
did not tell yet, with its age (``Announce.age``), as ``catchup`` does. A peer that
lacks the batch grafts it at once and announces it on the same way (not pushed: the
nodes that have it ignore the announcement), and delivers it only to a subscription
that began before it was published; one that has it ignores it. Once every
node's view has taken the crash (within ``TAIL_AGE``), each node of the tree has had
the batch: the node that had it when its view last changed told its children then. The repair costs
announcements, and a batch copy only to the nodes of the new tree that lack it (a
subscriber that lost it, or a relay on the way to one; also a relay whose branch of
the new tree leads to subscribers that had the batch by the old one).

Bounds: ``MAX_STREAMS`` tails; per look, ``MAX_CHECK`` trees computed and one
announcement per tail and peer not told yet (each peer is told of a tail once); a
look at most every ``TAIL_EVERY`` seconds, and only after the graph lost something.
What a peer can make a node graft by announcing is bounded as for any announcement
(``repair.MissingBatches``: a quarter of ``max_missing`` per announcer).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..wire.messages import Announce, Batch, BatchBody
from .catchup import age_ms

if TYPE_CHECKING:
    from .router import Router

#: Seconds after it passed that a stream's last batch is announced again when the
#: graph loses something: a node learns of a crash when the new link lists of the
#: crashed node's peers reach it, which they send at most every ``mesh_min_interval``
#: (2 s by default) after a link change; a batch it passed on before the crash went
#: by a tree that every node saw the same.
TAIL_AGE = 3.0
#: Seconds between two looks (the changes of one crash come together).
TAIL_EVERY = 0.25
#: Streams remembered (the most recently sent on), and tails looked at per look.
MAX_STREAMS = 1024
MAX_CHECK = 64


@dataclass(slots=True)
class Tail:
    """The newest batch of one stream that this node passed on."""

    key: bytes  # the batch's origin + id
    position: tuple[int, int]  # its (epoch, seq)
    time: float  # when it was passed on
    told: tuple[bytes, ...]  # the peers that have it or heard of it from here


class Tails:
    """Per stream (origin, topic), its newest batch passed on (at most ``max_streams``,
    the least recently passed on forgotten first)."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._streams: OrderedDict[tuple[bytes, str], Tail] = OrderedDict()
        self.lost = 0  # the graph's ``Routes.lost`` when last looked at
        self.last = float("-inf")  # when last looked at

    def __len__(self) -> int:
        return len(self._streams)

    def note(self, topic: str, batch: Batch, body: BatchBody, told: tuple[bytes, ...],
             now: float) -> None:
        """``batch`` (routed, on ``topic``) was passed on to (or came from) ``told``. An
        earlier batch of its stream (a gap filled late) changes nothing."""
        stream, key, position = (batch.origin, topic), batch.origin + batch.id, \
            (body.epoch, body.seq)
        streams = self._streams
        tail = streams.get(stream)
        if tail is not None:
            if tail.key == key:
                tail.told += tuple(p for p in told if p not in tail.told)
                return
            if position < tail.position:
                return
            del streams[stream]
        elif len(streams) >= self.max_streams:
            streams.popitem(last=False)
        streams[stream] = Tail(key, position, now, told)

    def told(self, stream: tuple[bytes, str], key: bytes, peers: tuple[bytes, ...]) -> None:
        """``peers`` were sent batch ``key`` of ``stream`` (``reroute``)."""
        tail = self._streams.get(stream)
        if tail is not None and tail.key == key:
            tail.told += tuple(p for p in peers if p not in tail.told)

    def recent(self, now: float) -> list[tuple[tuple[bytes, str], Tail]]:
        """The newest ``MAX_CHECK`` tails passed on in the last ``TAIL_AGE`` seconds."""
        out: list[tuple[tuple[bytes, str], Tail]] = []
        for stream in reversed(self._streams):
            tail = self._streams[stream]
            if tail.time < now - TAIL_AGE or len(out) >= MAX_CHECK:
                break
            out.append((stream, tail))
        return out


def tails_due(router: Router) -> bool:
    """Whether the graph changed since the tails were last looked at."""
    routing = router.interest
    routes = routing.routes if routing is not None else None
    return routes is not None and len(router.tails) > 0 \
        and routes.lost != router.tails.lost


def tails_deadline(router: Router) -> float | None:
    """When ``announce_tails`` should next run (None: nothing to do)."""
    return router.tails.last + TAIL_EVERY if tails_due(router) else None


def announce_tails(router: Router, now: float) -> int:
    """Announce each recent tail to the peers its tree as the graph is now adds (see
    the module's doc); returns how many announcements were queued."""
    routing, tails = router.interest, router.tails
    if routing is None or routing.routes is None or routing.interests is None:
        return 0
    routes, interests = routing.routes, routing.interests
    tails.lost, tails.last = routes.lost, now
    peers = router.peers
    queued = 0
    for (origin, topic), tail in tails.recent(now):
        entry = router.history.get(tail.key)
        if entry is None or entry.gone or entry.batch.hops >= router.max_hops:
            continue
        wanted = interests.matching(topic)
        hops = routes.next_hops(origin, topic, wanted, interests.version)
        if hops is None:  # off the tree as this node sees it now: not its branch
            continue
        new = [peer for peer in peers
               if peer not in tail.told and (peer in hops or peer in wanted)]
        if new:
            tail.told += tuple(new)
            age = age_ms(now, entry.age)  # as catch-up does: grafted at once, and not
            # delivered to a subscription that began after it was published
            queued += router.announce(Announce(tail.key, entry.batch.hops + 1, age), new)
    routing.stats.tails += queued
    return queued
