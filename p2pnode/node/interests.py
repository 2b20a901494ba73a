"""This node's interest in its member record (docs/interest.md): what its apps and
durable subscriptions subscribe to, said to every node, at most once a second.

Each subscribe and unsubscribe of a local app calls ``changed``; the task
(``LocalInterest.run``) then reads the subscriptions (``ApiServer.interest``) and
hands them to ``Membership.set_interest``, which signs and floods a new record if
they differ from what the record says. After a change it waits ``every`` seconds
before it looks again, so an app that subscribes to 100 topics in a burst costs two
records (the first subscribe's, then the rest's), not 100.

The node also notes when each subscription began (``start``: interest routing's
catch-up delivers a message it missed only if it was published after that), and keeps
what its apps' sessions subscribe to in its store (``meta`` key ``interest``; the
durable subscriptions are there already): after a restart it goes on saying what
they subscribed to when it stopped, for ``INTEREST_KEEP`` seconds,
along with what they subscribe to now, so that what is published while they
reconnect (to resume with ``since``) still reaches the node, and those subscriptions
count as begun before the restart.

A node without an API server has no source (its task ends at once): its record says
every topic unless its owner calls ``Membership.set_interest`` (simulations do).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

import trio

from ..api.server import ApiServer
from ..errors import LocalError
from ..gossip.interest import summarize
from ..gossip.router import Router
from ..members import Membership
from ..store.service import StoreService
from ..wire.topics import MULTI, subscription_problem, topic_matches

log = logging.getLogger("p2pnode.members")

#: Seconds between two changes of this node's record for its interest, at least.
INTEREST_EVERY = 1.0
#: Seconds a restarted node goes on saying what its apps subscribed to before.
INTEREST_KEEP = 60.0
#: The store's ``meta`` key for what the sessions subscribe to (JSON: a list, or null
#: for every topic).
STORE_KEY = "interest"

Patterns = list[str] | None  # None: every topic


class LocalInterest:
    """Keeps ``membership``'s record of this node's interest up to date with
    ``source()`` (patterns; None: every topic), and for ``keep`` seconds from the
    start with ``remembered`` too (what the sessions subscribed to before a restart;
    ``()``: nothing). ``save``: keeps what ``live()`` says (JSON) for the next run, each
    time it changes. Without a source it does nothing."""

    def __init__(self, membership: Membership, source: Callable[[], Patterns] | None, *,
                 every: float = INTEREST_EVERY, remembered: Patterns | tuple[()] = (),
                 keep: float = INTEREST_KEEP,
                 save: Callable[[str], Awaitable[object]] | None = None,
                 live: Callable[[], Patterns] | None = None) -> None:
        self.membership = membership
        self.source = source
        self.every = every
        self.updates = 0  # changes of the record made for the interest
        self._dirty = trio.Event()
        self.remembered = remembered
        self.keep = keep
        self.save = save
        self.live = live
        self._saved = json.dumps([] if remembered == () else remembered)
        #: When each subscription (pattern; ``#``: every topic) began, on the trio
        #: clock; those there when the node started (durable ones, and those remembered
        #: from before a restart) began long before.
        self.started: dict[str, float] = {}
        self.newest = -math.inf  # when the newest of them began
        self._note(-math.inf)

    def current(self) -> Patterns:
        """What the record should say: the apps' subscriptions, and those remembered."""
        assert self.source is not None
        patterns, remembered = self.source(), self.remembered
        if remembered == ():
            return patterns
        if patterns is None or remembered is None:
            return None
        return summarize([*patterns, *remembered])

    def changed(self) -> None:
        """A subscription came or went: look again (now, or once ``every`` is over)."""
        self._note(trio.current_time())
        self._dirty.set()

    def _note(self, now: float) -> None:
        """Note when each subscription began (``now`` for the new ones)."""
        if self.source is None:
            return
        patterns = self.current()
        current = {MULTI} if patterns is None else set(patterns)
        self.started = {p: self.started.get(p, now) for p in current}
        self.newest = max(self.started.values(), default=-math.inf)

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
            changed = self.membership.set_interest(self.current())
        except ValueError as exc:  # not expected: the API checked every pattern
            log.warning("this node's subscriptions cannot go in its member record (%s); it "
                        "says every topic instead", exc)
            changed = self.membership.set_interest(None)
        self.updates += changed
        return changed

    async def run(self) -> None:
        """Update the record after each change, at most once per ``every`` seconds; stop
        saying what was remembered ``keep`` seconds after the start."""
        forget_at = trio.current_time() + self.keep
        while self.source is not None:
            with trio.move_on_at(forget_at if self.remembered != () else math.inf):
                await self._dirty.wait()
            self._dirty = trio.Event()
            if self.remembered != () and trio.current_time() >= forget_at:
                self.remembered = ()
                self._note(trio.current_time())
            changed = self.update()
            await self._save()
            if changed:
                await trio.sleep(self.every)

    async def _save(self) -> None:
        if self.save is None or self.live is None:
            return
        text = json.dumps(self.live())
        if text == self._saved:
            return
        self._saved = text
        try:
            await self.save(text)
        except LocalError as exc:
            log.warning("cannot keep this node's subscriptions in its store (%s)", exc)


def remembered(text: object) -> Patterns | tuple[()]:
    """What a store's ``interest`` says (``()``: nothing usable)."""
    try:
        value = json.loads(text) if isinstance(text, str) else ()
    except ValueError:
        return ()
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(p, str) and subscription_problem(p) is None for p in value):
        return ()
    return value


def local_interest(api: ApiServer | None, membership: Membership,
                   store: StoreService | None, router: Router | None = None) -> LocalInterest:
    """What keeps a node's record of its apps' subscriptions up to date, with the
    durable subscriptions of ``store`` read already and what the record said before a
    restart (without an API, nothing: the record says every topic). ``router``'s
    interest routing (interest mode) is told when each subscription began."""
    if api is None:
        return LocalInterest(membership, None)
    if store is None:
        interest = LocalInterest(membership, api.interest)
    else:
        api.durables.load(store.store)

        async def save(text: str) -> None:
            await store.call(store.store.set_meta, STORE_KEY, text)

        interest = LocalInterest(membership, api.interest, save=save, live=api.live_interest,
                                 remembered=remembered(store.store.get_meta(STORE_KEY)))
    interest.update()  # the first record says it already
    api.on_interest = interest.changed
    if router is not None and router.interest is not None:
        router.interest.local = interest
    return interest
