"""The router's decisions in interest mode (docs/interest.md): for a routed batch, the
linked peers it is pushed to and those it is only announced to.

The router knows nothing of members or links beyond its own peers: the node gives it
``interests`` (which members want a topic: ``gossip.interest.Interests``) and
``routes`` (the trees over the mesh: ``gossip.routes.Routes``). Until both are there,
and whenever they cannot tell (an origin or this node not in the graph yet), a routed
batch goes on as in tree mode: nothing is lost while a node learns the mesh.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec

from ..wire.messages import MAX_MEANT, MEANT_PREFIX, Batch, BatchBody, is_routed
from .actions import Action, Forward

#: Seconds: a routed batch published this recently is announced to the members that
#: came to want its topic since it went by (``catchup``).
CATCH_UP = 10.0
MAX_KNOWN = 4096  # topics whose wanting members ``InterestRouting.known`` keeps


class InterestSource(Protocol):
    """Which members want which topics (``gossip.interest.Interests``)."""

    @property
    def version(self) -> int: ...  # changes whenever an interest changes

    @property
    def grown(self) -> int: ...  # changes whenever a member may want more topics

    def matching(self, topic: str) -> frozenset[bytes]: ...

    def wants(self, node_id: bytes, topic: str) -> bool: ...

    def returned(self) -> dict[bytes, float]: ...  # members back, and when they went

    def caught_up(self, members: Iterable[bytes]) -> None: ...  # catch-up looked at them


class SubscriptionStarts(Protocol):
    """When this node's subscriptions began (``node.interests.LocalInterest``)."""

    @property
    def newest(self) -> float: ...  # when the newest of them began

    def start(self, topic: str) -> float | None: ...  # None: no subscription matches


class RouteSource(Protocol):
    """The trees over the mesh as this node sees it (``gossip.routes.Routes``)."""

    @property
    def lost(self) -> int: ...  # changes whenever a link or a node leaves the graph

    @property
    def version(self) -> int: ...  # changes whenever the graph changes

    def next_hops(self, origin: bytes, topic: str, interested: frozenset[bytes],
                  interest_version: int) -> tuple[bytes, ...] | None: ...

    def branches(self, origin: bytes, topic: str, interested: frozenset[bytes],
                 interest_version: int) -> Mapping[bytes, tuple[bytes, ...]]: ...

    def via(self, members: Iterable[bytes], sender: bytes) -> list[bytes]: ...

    def toward(self, target: bytes) -> bytes | None: ...

    def toward_without(self, targets: Iterable[bytes], avoid: bytes) -> dict[bytes, bytes]: ...


@dataclass
class InterestStats:
    """Counters of interest routing (batches)."""

    wanted: int = 0  # routed batches received that this node wants
    relayed: int = 0  # ... received only to pass on
    routed: int = 0  # routed batches sent on along a tree (to nobody at a leaf)
    #: ... also toward members the copy named that this node's tree puts on another
    #: branch (the sender's view and this node's differ)
    astray: int = 0
    off_tree: int = 0  # ... by shortest paths, this node not being in the origin's tree
    unrouted: int = 0  # ... as in tree mode: the interests or the graph not known yet
    unwanted: int = 0  # ... published here that no other member wants, or received
    #                    when no member wants them any more (sent to nobody)
    caught_up: int = 0  # announcements of recent batches to members that came to want
    #                     them late (``catchup``)
    early: int = 0  # batches caught up here but published before this node's
    #                 subscription began (passed on, not delivered)
    tails: int = 0  # announcements of streams' last batches to the peers a tree adds
    #                 after the graph lost a link or a node (``tails``)


class InterestRouting:
    """Whom a routed batch goes to, from the interests and routes the node sets."""

    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self.interests: InterestSource | None = None
        self.routes: RouteSource | None = None
        #: When this node's subscriptions began (its clock; None: not known): set by
        #: the node (``node.interests.LocalInterest``).
        self.local: SubscriptionStarts | None = None
        #: Per recent topic, the members its batches have been going to (those that
        #: stayed since the first batch sent on, or since the last catch-up,
        #: ``catchup``; a member that came since is not in it): at most ``MAX_KNOWN``.
        self.known: dict[str, frozenset[bytes]] = {}
        self.caught_up = 0  # the interests' ``grown`` when ``catchup`` last looked
        #: Members that catch-up had no way to yet (their links not in this node's view
        #: of the mesh when their interest came): member -> (caught up from, noted at);
        #: looked at again when the graph changes (``catchup``).
        self.unreached: dict[bytes, tuple[float, float]] = {}
        self.unreached_graph = 0  # the routes' ``version`` when ``catchup`` last looked
        self.stats = InterestStats()
        #: Set by each ``targets``: per peer to push to, the members that push is meant
        #: for (``Batch.meant``: id prefixes; no entry, or empty: not said).
        self.meant: dict[bytes, list[bytes]] = {}

    def targets(self, origin: bytes, topic: str, peers: Collection[bytes],
                from_peer: bytes | None, meant: Collection[bytes] | None = None
                ) -> tuple[list[bytes], list[bytes]] | None:
        """(push to, announce to) among ``peers`` for a routed batch of ``origin`` on
        ``topic`` that came from ``from_peer`` (None: published here) for the members
        ``meant`` (id prefixes, ``Batch.meant``; None or empty: not said); None: not known (no
        interests or routes, or the origin not in this node's view of the mesh), send
        it on as in tree mode. Sets ``self.meant`` for the pushes."""
        self.meant = {}
        interests, routes = self.interests, self.routes
        if interests is None or routes is None:
            self.stats.unrouted += 1
            return None
        wanted = interests.matching(topic)
        self._know(topic, wanted)
        if not wanted or wanted == {self.node_id}:
            if wanted and origin != self.node_id:
                self.stats.routed += 1  # it reached the one member that wants it: a leaf
            else:
                self.stats.unwanted += 1
            return [], []
        if origin != self.node_id and routes.toward(origin) is None:
            # The origin is not (yet) in this node's view of the mesh: as in tree mode.
            self.stats.unrouted += 1
            return None
        hops = routes.next_hops(origin, topic, wanted, interests.version)
        if hops is None:
            # Off the tree as this node sees the mesh (views differ for a moment, after
            # a crash): on by shortest paths toward the members the push was meant for
            # (``meant``, or if not said, those whose shortest path from the sender
            # starts here), not toward every member: each node that did that made every
            # next one do it too (docs/interest.md).
            if from_peer is None:
                members: Iterable[bytes] = wanted
            elif meant:
                said = set(meant)
                members = [m for m in wanted if m[:MEANT_PREFIX] in said]
            else:
                members = routes.via(wanted, from_peer)
            hops = self._off_tree(members, routes)
            self.stats.off_tree += 1
        else:
            branches = (routes.branches(origin, topic, wanted, interests.version)
                        if hops or meant else {})
            if hops:
                self.meant = _prefixes(branches)
            if meant and from_peer is not None:
                hops = self._astray(hops, branches, wanted, meant, from_peer, routes)
            self.stats.routed += 1
        eager = [peer for peer in hops if peer in peers and peer != from_peer]
        lazy = [peer for peer in peers if peer in wanted and peer != from_peer
                and peer not in eager]
        return eager, lazy

    def _know(self, topic: str, wanted: frozenset[bytes]) -> None:
        """Note the members ``topic``'s batches go to (``known``)."""
        known = self.known
        had = known.get(topic)
        if had is None:
            if len(known) >= MAX_KNOWN:
                del known[next(iter(known))]
            known[topic] = wanted
        elif had is not wanted:  # the interests changed: those gone are no longer
            # known (if they come back, catch-up sends them what they missed); those
            # new are not yet (catch-up is due)
            had = had & wanted
            known[topic] = wanted if had == wanted else had

    def before_start(self, topic: str, published: float) -> bool:
        """Whether a batch of ``topic`` published at ``published`` (this node's clock)
        came before this node's subscription to ``topic`` began (by more than the 1 ms
        an ``Announce.age`` is rounded to)."""
        start = self.local.start(topic) if self.local is not None else None
        return start is not None and published + 0.001 < start

    def wants_here(self, topic: str, now: float) -> bool:
        """Whether this node wants ``topic``: its record says so, or a subscription
        that began since (the record follows up to ``INTEREST_EVERY`` later)."""
        interests = self.interests
        if interests is None or interests.wants(self.node_id, topic):
            return True
        local = self.local
        return (local is not None and local.newest > now - CATCH_UP
                and local.start(topic) is not None)

    def young(self, topic: str, now: float) -> bool:
        """Whether this node's subscription to ``topic`` began less than ``CATCH_UP``
        seconds before ``now`` (what was published since may still come by catch-up)."""
        local = self.local
        if local is None or local.newest <= now - CATCH_UP:
            return False  # the common case, on the path of every batch: no topic lookup
        start = local.start(topic)
        return start is not None and start > now - CATCH_UP

    def _astray(self, hops: tuple[bytes, ...], branches: Mapping[bytes, Iterable[bytes]],
                wanted: frozenset[bytes], meant: Collection[bytes], from_peer: bytes,
                routes: RouteSource) -> tuple[bytes, ...]:
        """``hops`` and also the next hops toward the members the copy was meant for
        that this node's tree puts on another branch, by shortest paths that do not go
        back through the sender (the sender's view of the mesh and this node's differ,
        after a crash: the sender counted on this node to reach them, and no branch of
        the origin's tree may carry the batch there; this node's view is often the
        staler, one that has the crashed node still). Never toward a member that does
        not want the topic: a lying sender can add at most ``MAX_MEANT`` such pushes
        per copy."""
        said = set(meant)
        below = {m[:MEANT_PREFIX] for members in branches.values() for m in members}
        astray = [m for m in wanted if m != self.node_id
                  and m[:MEANT_PREFIX] in said and m[:MEANT_PREFIX] not in below]
        if not astray:
            return hops
        more: dict[bytes, list[bytes]] = {}
        for member, hop in sorted(routes.toward_without(astray, from_peer).items()):
            more.setdefault(hop, []).append(member)
        if not more:
            return hops
        meant_now = dict(self.meant)
        for hop, names in _prefixes(more).items():
            names = [*meant_now.get(hop, []), *names]
            if len(names) > MAX_MEANT:  # too many to say: the receiver works them out
                meant_now.pop(hop, None)
            else:
                meant_now[hop] = names
        self.meant = meant_now
        self.stats.astray += 1
        return tuple(dict.fromkeys([*hops, *more]))

    def _off_tree(self, wanted: Iterable[bytes], routes: RouteSource) -> tuple[bytes, ...]:
        """The next hops toward each wanting member by a shortest path (this node is not
        in the origin's tree as it sees the mesh: the views differ for a moment), and in
        ``self.meant`` the members each hop is for. Members it cannot reach (gone, or
        cut off) are left out."""
        hops: dict[bytes, list[bytes]] = {}
        for member in sorted(wanted):
            if member != self.node_id and (hop := routes.toward(member)) is not None:
                hops.setdefault(hop, []).append(member)
        self.meant = _prefixes(hops)
        return tuple(hops)


def pushes(routing: InterestRouting | None, batch: Batch, hops: int,
           peers: tuple[bytes, ...]) -> list[Action]:
    """``batch`` (with ``hops``) pushed to ``peers``: in one Forward, or, when the last
    ``routing.targets`` said whom each push is for, one per peer with its own ``meant``."""
    said = routing.meant if routing is not None else None
    if not said:
        return [Forward(msgspec.structs.replace(batch, hops=hops), peers)]
    return [Forward(msgspec.structs.replace(batch, hops=hops, meant=said.get(peer, [])),
                    (peer,)) for peer in peers]


def _prefixes(members: Mapping[bytes, Iterable[bytes]]) -> dict[bytes, list[bytes]]:
    """Per peer, its members as ``Batch.meant`` names them (none when more than
    ``MAX_MEANT``: not said, the receiver works them out)."""
    out: dict[bytes, list[bytes]] = {}
    for peer, ids in members.items():
        said = [m[:MEANT_PREFIX] for m in ids]
        if len(said) <= MAX_MEANT:
            out[peer] = said
    return out


def routed_topic(routing: InterestRouting | None, body: BatchBody | None) -> str | None:
    """The topic of a routed batch when this node routes by interest (``routing``);
    None: the batch goes to every node."""
    if routing is None or body is None or not is_routed(body):
        return None
    return body.items[0].topic


def wants(routing: InterestRouting | None, node_id: bytes, topic: str) -> bool:
    """Whether member ``node_id`` wants routed batches on ``topic`` (yes, when not
    known)."""
    interests = routing.interests if routing is not None else None
    return interests is None or interests.wants(node_id, topic)
