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
the way that learns of the new member later does the same from its own history. The
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
    from .router import Router

#: The most recent batches in history looked at per change of the interests.
MAX_CATCH_UP = 1024


def catch_up_due(router: Router) -> bool:
    """Whether members may want more since ``catch_up`` last looked."""
    routing = router.interest
    return (routing is not None and routing.interests is not None
            and routing.interests.grown != routing.caught_up)


def catch_up(router: Router, now: float) -> int:
    """Announce recent routed batches to the members that came to want them (see the
    module's doc); returns how many announcements were queued."""
    routing = router.interest
    if routing is None or routing.interests is None:
        return 0
    interests, routes = routing.interests, routing.routes
    routing.caught_up = interests.grown
    if routes is None:
        return 0
    known, me = routing.known, router.node_id
    gained: dict[str, frozenset[bytes]] = {}
    queued = 0
    for entry in router.history.since(now - CATCH_UP)[-MAX_CATCH_UP:]:
        topic = entry.topic
        if topic is None or entry.gone or entry.age < now - CATCH_UP:
            continue
        if topic not in gained:
            wanted = interests.matching(topic)
            gained[topic] = wanted - known.get(topic, frozenset()) - {me}
        new = gained[topic]
        if not new or entry.batch.hops + 1 > router.max_hops:
            continue
        peers = {peer for member in sorted(new)
                 if (peer := member if router.is_linked(member) else routes.toward(member))
                 is not None and router.is_linked(peer)}
        peers.discard(entry.from_peer)
        announce = Announce(entry.batch.origin + entry.batch.id, entry.batch.hops + 1,
                            age_ms(now, entry.age))
        queued += router.announce(announce, sorted(peers))
    for topic in gained:
        known[topic] = interests.matching(topic)
    routing.stats.caught_up += queued
    return queued


def age_ms(now: float, published: float | None) -> int | None:
    """How long ago ``published`` was, in whole milliseconds (rounded down: never more
    than the truth); None for None."""
    return None if published is None else max(0, int((now - published) * 1000))
