"""Catching up the members whose interest came late (interest mode, docs/interest.md).

A node learns of another's subscription from its member record, a moment after the
subscribe (the record changes at most once a second, then spreads). A routed batch
published in that moment goes by without the new subscriber: its origin, or a node on
the way, did not count it yet. So when a node learns that members came to want a topic
(``Interests.grown`` changed, and ``InterestRouting.known`` did not list them for
it), it announces its recent batches of that topic (published at most ``CATCH_UP``
seconds ago, by its estimate; at most ``MAX_CATCH_UP`` batches looked at) to the next
hop toward each such member, with their age (``Announce.age``). A node that lacks one
grafts it at once and announces it on the same way (``Router._spread``); each node on
the way that learns of the new member later does the same from its own history. A
member that comes back after it was taken for gone (dead, left: out of ``Interests``)
is caught up with what was published from ``CATCH_UP`` before it went (as far as
history goes): the mesh stopped routing toward it when it went. The
member's node delivers a batch caught up this way only if it was published after its
own subscription to the topic began (``InterestRouting.local``); the age only
ever errs towards "later" (each estimate is an arrival), by the transit time of the
path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.messages import Announce
from .interestmode import CATCH_UP

if TYPE_CHECKING:
    from .history import Entry
    from .interestmode import InterestRouting, InterestSource
    from .router import Router

#: The most recent batches in history looked at per change of the interests (when a
#: member came back from away: of the topics that gained members, announced).
MAX_CATCH_UP = 1024
#: Members catch-up waits for a way to (``InterestRouting.unreached``), at most.
MAX_UNREACHED = 1024


def catch_up_due(router: Router) -> bool:
    """Whether members may want more since ``catch_up`` last looked, or members it had
    no way to may have one now."""
    routing = router.interest
    if routing is None or routing.interests is None:
        return False
    if routing.interests.grown != routing.caught_up:
        return True
    routes = routing.routes
    return (bool(routing.unreached) and routes is not None
            and routes.version != routing.unreached_graph)


def catch_up(router: Router, now: float) -> int:
    """Announce recent routed batches to the members that came to want them (see the
    module's doc); returns how many announcements were queued."""
    routing = router.interest
    if routing is None or routing.interests is None:
        return 0
    interests, routes = routing.interests, routing.routes
    routing.caught_up = interests.grown
    recent = now - CATCH_UP
    since, noted = _since(routing, interests, recent)
    if routes is None:
        return 0
    routing.unreached_graph = routes.version
    oldest = min(recent, *since.values()) if since else recent
    known, me = routing.known, router.node_id
    gained: dict[str, frozenset[bytes]] = {}
    picked: list[tuple[Entry, str]] = []
    entries = router.history.since(oldest)
    if not since:  # the common case: the newest MAX_CATCH_UP looked at, as many sent
        entries = entries[-MAX_CATCH_UP:]
    for entry in entries:
        topic = entry.topic
        if topic is None or entry.gone or entry.age < oldest:
            continue
        if topic not in gained:
            wanted = interests.matching(topic)
            gained[topic] = wanted - known.get(topic, frozenset()) - {me}
        if gained[topic] and entry.batch.hops + 1 <= router.max_hops:
            picked.append((entry, topic))
    way: dict[bytes, bytes | None] = {}  # member -> the peer toward it
    queued = 0
    for entry, topic in picked[-MAX_CATCH_UP:]:
        published = entry.age
        peers = set()
        for member in gained[topic]:
            if published < since.get(member, recent):
                continue
            if member not in way:
                hop = member if router.is_linked(member) else routes.toward(member)
                way[member] = hop if hop is not None and router.is_linked(hop) else None
            if (peer := way[member]) is not None:
                peers.add(peer)
        peers.discard(entry.from_peer)
        if peers:
            announce = Announce(entry.batch.origin + entry.batch.id, entry.batch.hops + 1,
                                age_ms(now, published))
            queued += router.announce(announce, sorted(peers))
    # No way to them yet (their links not in the graph yet): again when the graph
    # changes, for at most CATCH_UP, and meanwhile not known as members served.
    unreached = {member for member, hop in way.items() if hop is None}
    for member in sorted(unreached)[:MAX_UNREACHED]:
        routing.unreached[member] = (since.get(member, recent), noted.get(member, now))
    for topic in gained:
        known[topic] = interests.matching(topic) - unreached
    routing.stats.caught_up += queued
    return queued


def _since(routing: InterestRouting, interests: InterestSource, recent: float
           ) -> tuple[dict[bytes, float], dict[bytes, float]]:
    """Per member to catch up from further back than ``recent``, from when; and per
    member catch-up had no way to, when that was first noted. Members back from away
    (dead, left): from CATCH_UP before they went (what went toward them while the mesh
    still counted them may have died with a link); those this node had no way to yet,
    as noted, for at most CATCH_UP."""
    since: dict[bytes, float] = {}
    noted: dict[bytes, float] = {}
    for member, (start, at) in routing.unreached.items():
        if at >= recent:
            since[member], noted[member] = start, at
    routing.unreached = {}
    returned = interests.returned()
    interests.caught_up(returned)
    for member, went in returned.items():
        since[member] = min(since.get(member, went), went - CATCH_UP)
    return since, noted


def age_ms(now: float, published: float | None) -> int | None:
    """How long ago ``published`` was, in whole milliseconds (rounded down: never more
    than the truth); None for None."""
    return None if published is None else max(0, int((now - published) * 1000))
