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
(or heard of, below) and the peers it told of it (pushed, announced, or that brought
it): ``Tails``, at most ``MAX_STREAMS`` streams. When its graph loses a link or a
node (``Routes.lost``: a crash, seen by the link's ends at once and by the others
when the new link lists reach them; looked at at most every ``TAIL_EVERY``
seconds), it computes again the tree of each of its ``MAX_CHECK`` newest tails that
passed in the last ``TAIL_AGE`` seconds, and sends a *tail notice* to the peers that
the tree as it is now adds (its children, its linked members that want the topic)
and that it did not tell yet: an ``IHave`` entry with the batch's topic, run and
number (``Announce.topic``, ``epoch``, ``seq``) and age. A node that has the batch
ignores it. One that lacks it passes the notice on in the same way (its own tree's
children and interested peers), without the batch; and if it wants the topic (a
subscription that began before the batch was published), it Fetches the batch from
the peer that told it (which asks on toward the origin if it lacks it too, and
passes the answer back: ``fetch``). So batch copies go only to the subscribers that
lacked the batch and the nodes on their way, not to the relays of a new tree whose
subscribers had it by the old one.

Once every node's view has taken the crash (within ``TAIL_AGE``), every node of the
tree has had the batch or its notice: the node that had it when its view last
changed told its children then.

Bounds: ``MAX_STREAMS`` tails; per look, ``MAX_CHECK`` trees computed and one notice
per tail and peer not told yet; a look at most every ``TAIL_EVERY`` seconds, only
after the graph lost something. Notices taken: each batch once (``MAX_NOTICED``
remembered), at most ``NOTICE_RATE`` a second per peer (``NOTICE_BURST`` at once);
so a peer that makes notices up makes a node Fetch (from that peer) and pass on at
most that many.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ids import ID_LEN
from ..ratelimit import TokenBucket
from ..wire.messages import Announce, Batch, BatchBody
from .catchup import age_ms

if TYPE_CHECKING:
    from .router import Router

#: Seconds after it passed that a stream's last batch is told of again when the
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
#: Notices taken from one peer: per second, and at once.
NOTICE_RATE = 32.0
NOTICE_BURST = 128.0
#: Notices remembered as taken (each is acted on once).
MAX_NOTICED = 4096

Stream = tuple[bytes, str]  # origin, topic


@dataclass(slots=True)
class Tail:
    """The newest batch of one stream that this node passed on or heard of."""

    key: bytes  # the batch's origin + id
    position: tuple[int, int]  # its (epoch, seq)
    time: float  # when it was passed on (or its notice came)
    told: tuple[bytes, ...]  # the peers that have it or heard of it from here
    hops: int  # its hops on arrival here
    published: float  # when it was published, as this node knows (``Entry.age``)


class Tails:
    """Per stream (origin, topic), its newest batch passed on (at most ``max_streams``,
    the least recently passed on forgotten first); the notices taken, per peer."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._streams: OrderedDict[Stream, Tail] = OrderedDict()
        self.lost = 0  # the graph's ``Routes.lost`` when last looked at
        self.last = float("-inf")  # when last looked at
        self._noticed: OrderedDict[bytes, None] = OrderedDict()  # batch keys
        self._buckets: dict[bytes, TokenBucket] = {}  # per linked peer
        self.refused = 0  # notices over a peer's rate, or not valid

    def __len__(self) -> int:
        return len(self._streams)

    def note(self, stream: Stream, tail: Tail) -> None:
        """``tail`` of ``stream`` was passed on (or its notice). An earlier batch of the
        stream (a gap filled late) changes nothing; the same one adds its ``told``."""
        streams = self._streams
        old = streams.get(stream)
        if old is not None:
            if old.key == tail.key:
                old.told += tuple(p for p in tail.told if p not in old.told)
                return
            if tail.position < old.position:
                return
            del streams[stream]
        elif len(streams) >= self.max_streams:
            streams.popitem(last=False)
        streams[stream] = tail

    def told(self, stream: Stream, key: bytes, peers: tuple[bytes, ...]) -> None:
        """``peers`` were sent batch ``key`` of ``stream`` (``reroute``)."""
        tail = self._streams.get(stream)
        if tail is not None and tail.key == key:
            tail.told += tuple(p for p in peers if p not in tail.told)

    def recent(self, now: float) -> list[tuple[Stream, Tail]]:
        """The newest ``MAX_CHECK`` tails passed on in the last ``TAIL_AGE`` seconds."""
        out: list[tuple[Stream, Tail]] = []
        for stream in reversed(self._streams):
            tail = self._streams[stream]
            if tail.time < now - TAIL_AGE or len(out) >= MAX_CHECK:
                break
            out.append((stream, tail))
        return out

    def take_notice(self, key: bytes, peer: bytes, now: float) -> bool:
        """Whether to act on a notice of ``key`` from ``peer``: the first one of it,
        within the peer's rate."""
        if key in self._noticed:
            return False
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(NOTICE_RATE, NOTICE_BURST, now)
        if not bucket.take(1, now):
            self.refused += 1
            return False
        self._noticed[key] = None
        if len(self._noticed) > MAX_NOTICED:
            self._noticed.popitem(last=False)
        return True

    def peer_down(self, peer: bytes) -> None:
        self._buckets.pop(peer, None)


def note_passed(router: Router, topic: str, batch: Batch, body: BatchBody,
                told: tuple[bytes, ...], now: float, age: int | None) -> None:
    """A routed batch was passed on to (or came from) ``told`` (``age``: a caught-up
    one's, in ms): note it as its stream's tail."""
    published = now if age is None else now - age / 1000
    tail = Tail(batch.origin + batch.id, (body.epoch, body.seq), now, told, batch.hops,
                published)
    router.tails.note((batch.origin, topic), tail)


def tails_due(router: Router) -> bool:
    """Whether the graph lost something since the tails were last looked at."""
    routing = router.interest
    routes = routing.routes if routing is not None else None
    return routes is not None and len(router.tails) > 0 \
        and routes.lost != router.tails.lost


def tails_deadline(router: Router) -> float | None:
    """When ``announce_tails`` should next run (None: nothing to do)."""
    return router.tails.last + TAIL_EVERY if tails_due(router) else None


def announce_tails(router: Router, now: float) -> int:
    """Tell of each recent tail the peers its tree as it is now adds (see the module's
    doc); returns how many notices were queued."""
    routing, tails = router.interest, router.tails
    if routing is None or routing.routes is None:
        return 0
    tails.lost, tails.last = routing.routes.lost, now
    queued = sum(_tell(router, stream, tail, now) for stream, tail in tails.recent(now))
    routing.stats.tails += queued
    return queued


def _tell(router: Router, stream: Stream, tail: Tail, now: float) -> int:
    """Send a notice of ``tail`` to the peers of its tree (children, linked members
    that want its topic) not told yet; how many."""
    routing = router.interest
    assert routing is not None
    routes, interests = routing.routes, routing.interests
    if routes is None or interests is None or tail.hops >= router.max_hops:
        return 0
    origin, topic = stream
    wanted = interests.matching(topic)
    hops = routes.next_hops(origin, topic, wanted, interests.version)
    if hops is None:  # off the tree as this node sees it now: not its branch
        return 0
    new = [peer for peer in router.peers
           if peer not in tail.told and (peer in hops or peer in wanted)]
    if not new:
        return 0
    tail.told += tuple(new)
    epoch, seq = tail.position
    return router.announce(Announce(tail.key, tail.hops + 1, age_ms(now, tail.published),
                                    topic, epoch, seq), new)


def on_notice(router: Router, ann: Announce, from_peer: bytes, now: float) -> None:
    """A tail notice came (``ann.seq`` set): a node that wants its topic and lacks the
    batch Fetches it from ``from_peer`` (which asks on toward the origin if it lacks
    it too); every node that lacks it passes the notice on along its tree."""
    routing = router.interest
    topic, epoch, seq = ann.topic, ann.epoch, ann.seq
    if routing is None or topic is None or epoch is None or seq is None \
            or ann.key in router.seen or not router.is_linked(from_peer):
        return
    if topic[:1] == "$" or not seq or not router.tails.take_notice(ann.key, from_peer, now):
        return
    origin = ann.key[:ID_LEN]
    published = now - (ann.age or 0) / 1000
    if routing.wants_here(topic, now) and not routing.before_start(topic, published):
        router.fetches.want((origin, epoch, seq), from_peer, now)
    tail = Tail(ann.key, (epoch, seq), now, (from_peer,), ann.hops, published)
    router.tails.note((origin, topic), tail)
    routing.stats.tails += _tell(router, (origin, topic), tail, now)
