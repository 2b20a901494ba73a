"""This node's interest in its member record (docs/interest.md): what its apps and
durable subscriptions subscribe to, said to every node, at most once a second.

Each subscribe and unsubscribe of a local app calls ``changed``; the task
(``LocalInterest.run``) then reads the subscriptions (``ApiServer.interest``) and
hands them to ``Membership.set_interest``, which signs and floods a new record if
they differ from what the record says. After a change it waits ``every`` seconds
before it looks again, so an app that subscribes to 100 topics in a burst costs two
records (the first subscribe's, then the rest's), not 100.

A node without an API server has no source (its task ends at once): its record says
every topic unless its owner calls ``Membership.set_interest`` (simulations do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..api.server import ApiServer
from ..members import Membership
from ..store.service import StoreService
from ..wire.topics import MULTI, topic_matches

log = logging.getLogger("p2pnode.members")

#: Seconds between two changes of this node's record for its interest, at least.
INTEREST_EVERY = 1.0


class LocalInterest:
    """Keeps ``membership``'s record of this node's interest up to date with
    ``source()`` (patterns; None: every topic). Without a source it does nothing."""

    def __init__(self, membership: Membership,
                 source: Callable[[], list[str] | None] | None, *,
                 every: float = INTEREST_EVERY) -> None:
        self.membership = membership
        self.source = source
        self.every = every
        self.updates = 0  # changes of the record made for the interest
        self._dirty = trio.Event()
        #: When each subscription (pattern; ``#``: every topic) began, on the trio
        #: clock; those there when the node started (durable ones) began long before.
        self.started: dict[str, float] = {}
        self._note(float("-inf"))

    def changed(self) -> None:
        """A subscription came or went: look again (now, or once ``every`` is over)."""
        self._note(trio.current_time())
        self._dirty.set()

    def _note(self, now: float) -> None:
        """Note when each subscription began (``now`` for the new ones)."""
        if self.source is None:
            return
        patterns = self.source()
        current = {MULTI} if patterns is None else set(patterns)
        self.started = {p: self.started.get(p, now) for p in current}

    def start(self, topic: str) -> float | None:
        """When this node's subscription to ``topic`` began (the earliest of those that
        match it and are still there; None: no subscription matches it)."""
        return min((when for pattern, when in self.started.items()
                    if topic_matches(pattern, topic)), default=None)

    def update(self) -> bool:
        """Put the subscriptions in the record now; returns whether it changed."""
        if self.source is None:
            return False
        try:
            changed = self.membership.set_interest(self.source())
        except ValueError as exc:  # not expected: the API checked every pattern
            log.warning("this node's subscriptions cannot go in its member record (%s); it "
                        "says every topic instead", exc)
            changed = self.membership.set_interest(None)
        self.updates += changed
        return changed

    async def run(self) -> None:
        """Update the record after each change, at most once per ``every`` seconds."""
        while self.source is not None:
            await self._dirty.wait()
            self._dirty = trio.Event()
            if self.update():
                await trio.sleep(self.every)


def local_interest(api: ApiServer | None, membership: Membership,
                   store: StoreService | None) -> LocalInterest:
    """What keeps a node's record of its apps' subscriptions up to date, with the
    durable subscriptions of ``store`` read already (without an API, nothing: the
    record says every topic)."""
    if api is None:
        return LocalInterest(membership, None)
    if store is not None:
        api.durables.load(store.store)
    interest = LocalInterest(membership, api.interest)
    interest.update()  # the first record says it already
    api.on_interest = interest.changed
    return interest
