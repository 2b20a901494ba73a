"""Decides what happens to each gossip message: deliver here, send to which peers.

Three modes share this code:

- ``tree`` (the default): epidemic broadcast trees (Plumtree), one tree per origin
  (``tree.Trees``: which links are lazy for which origin). A new batch is pushed on
  eager links and announced (``IHave``, batched) on lazy ones; a duplicate answers
  ``Prune``. A node that hears of a batch by ``IHave`` and does not get it within
  ``graft_timeout`` (``repair.MissingBatches``) sends ``Graft`` to the announcer,
  which sends it from history: a dead link or node is routed around. A batch announced
  by a path shorter by ``optimize_hops`` than the one it came by swaps the two links.
- ``flood``: every link eager, no announcements (``scripts/simulate.py --gossip flood``).
- ``interest``: routed batches only toward the members that want their topic
  (``interestmode``, docs/interest.md), the rest as in ``tree``.

In every mode a new batch is verified once (duplicates dropped before any signature
check; one that fails is dropped, counted, not remembered), kept in history, delivered
in order (``order``, or ``streams`` for interest-mode origins) and forwarded under the
hop limit; a new link's ends exchange a ``Digest`` of history and send each other what
the other lacks (anti-entropy). Interest mode pushes again on a broken link (``reroute``).

The router knows peers only by node id and time only as the caller gives it; the
caller turns its actions into I/O and calls ``tick`` by ``next_deadline``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

from ..errors import RemoteProtocolError
from ..ids import ID_LEN
from ..ratelimit import TokenBucket
from ..wire.messages import (
    Announce,
    Batch,
    BatchBody,
    Digest,
    DigestEntry,
    Fetch,
    GossipMessage,
    Graft,
    IHave,
    Prune,
    is_routed,
)
from .actions import Action, Deliver, Disconnect, Forward, Send, Verify
from .answers import ask, maybe_swap, on_digest, on_fetch, on_graft, on_ihave, pass_back, without
from .catchup import age_ms, catch_up, catch_up_due
from .fetch import Fetches
from .history import History, item_id_range, merge_digests
from .interestmode import InterestRouting, pushes, routed_topic
from .order import OrderBuffer
from .repair import Missing, MissingBatches, RepairWatch, chunks
from .reroute import Pushed
from .routerconfig import GossipMode, RouterConfig, RouterStats, gossip_mode
from .seen import SeenCache
from .streams import StreamOrder
from .tails import Tails, announce_tails, note_passed, tails_deadline
from .tree import Trees

# The actions are part of what this module hands out (``gossip.actions`` defines them).
__all__ = ["Action", "Deliver", "Disconnect", "Forward", "GossipMode", "Router", "RouterConfig",
           "RouterStats", "Send", "Verify", "gossip_mode"]

class Router:
    """The gossip router of one node."""

    def __init__(self, node_id: bytes, cfg: RouterConfig) -> None:
        self.node_id = node_id
        self.cfg = cfg
        self.max_hops = cfg.max_hops
        self.tree = cfg.mode != "flood"
        #: Interest mode (docs/interest.md): the node sets its interests and routes.
        self.interest = InterestRouting(node_id) if cfg.mode == "interest" else None
        self.seen = SeenCache(cfg.seen_max_entries, cfg.seen_ttl)
        self.history = History(cfg.history_batches, cfg.history_bytes, cfg.history_age)
        #: Called with each numbered batch kept (published here or new from a peer) and
        #: its age of publication: the message store (``store.service``) listens here.
        self.on_kept: Callable[[Batch, BatchBody, float], None] | None = None
        self.order: OrderBuffer[tuple[Batch, BatchBody]] = OrderBuffer(
            cfg.order_hold, window=cfg.seen_ttl, max_origins=cfg.max_runs,
            max_origins_per_owner=cfg.max_runs_per_peer)
        #: The batches of origins in interest mode, in order per stream (``tprev``).
        self.streams: StreamOrder[tuple[Batch, BatchBody]] = StreamOrder(cfg.order_hold)
        self.fetches = Fetches(cfg.graft_timeout)  # gaps in streams, asked for
        self.pushed = Pushed()  # routed batches pushed per peer (``reroute``)
        self.tails = Tails()  # each stream's last batch, told again on a change (``tails``)
        self._new_origins: dict[bytes, TokenBucket] = {}  # per linked peer
        self.stats = RouterStats()
        self._peers: dict[bytes, None] = {}  # insertion-ordered set
        self.trees = Trees(cfg.max_origins)
        self._lazy = self.trees.lazy  # origin -> its lazy peers (read on the hot path)
        self._ihave: dict[bytes, list[Announce]] = {}  # lazy announcements not yet sent
        self._repair_ihave: dict[bytes, list[Announce]] = {}  # ... of repaired batches
        self.missing = MissingBatches(cfg.max_missing, cfg.max_announcers)
        self._watch = RepairWatch(cfg.repair_grace, cfg.order_hold / 2)
        self.digested: set[bytes] = set()  # peers whose Digest was answered (this link)
        #: What the node's store held when it started (``gossip.restore``), told to
        #: peers in every Digest along with history: they need not send it again.
        self.stored: list[DigestEntry] = []
        self.rng = random.Random(cfg.seed)

    # -- peers ------------------------------------------------------------------------

    @property
    def peers(self) -> tuple[bytes, ...]:
        """The linked peers, in the order they came up."""
        return tuple(self._peers)

    @property
    def peer_count(self) -> int:
        """How many peers are linked."""
        return len(self._peers)

    def is_linked(self, peer: bytes) -> bool:
        """Whether ``peer`` is linked."""
        return peer in self._peers

    def lazy_peers(self, origin: bytes) -> set[bytes]:
        """The linked peers that get only announcements of ``origin``'s batches."""
        return self._lazy.get(origin, set()) & set(self._peers)

    def set_limits(self, cfg: RouterConfig) -> None:
        """Take ``cfg``'s limits from now on: the hop limit, history's sizes and age
        (smaller ones apply as batches come), the order hold, the timers and rates. The
        mode and the sizes of the seen-cache and the tables stay as they were built."""
        self.cfg = cfg
        self.max_hops = cfg.max_hops
        self.history.max_batches = cfg.history_batches
        self.history.max_bytes = cfg.history_bytes
        self.history.max_age = cfg.history_age
        self.order.hold = cfg.order_hold
        self.streams.hold = cfg.order_hold
        self._watch.quiet = cfg.order_hold / 2

    def peer_up(self, peer: bytes, now: float) -> list[Action]:
        """A link to ``peer`` opened: it starts eager (for every origin); send it our
        history's digest."""
        self._peers[peer] = None
        self._new_origins[peer] = TokenBucket(self.cfg.new_origins_per_s,
                                              self.cfg.new_origins_burst, now)
        self.trees.peer_up(peer)
        self.history.expire(now)
        # What this link's digest exchange brings is announced a moment later (more
        # under load): meanwhile every gap is held as if its batches were being fetched.
        self._watch.link_opened(now)
        digest = self.history.digest(max_bytes=self.cfg.digest_bytes)
        if self.stored:
            digest = merge_digests(digest, self.stored)
        return [Send(peer, [Digest(digest)])]

    def peer_down(self, peer: bytes) -> None:
        """The link to ``peer`` is gone."""
        self._peers.pop(peer, None)
        self._new_origins.pop(peer, None)
        self._ihave.pop(peer, None)
        self._repair_ihave.pop(peer, None)
        self.digested.discard(peer)
        self.tails.peer_down(peer)

    # -- publishing and receiving ------------------------------------------------------

    def publish(self, batch: Batch, body: BatchBody, now: float) -> list[Action]:
        """This node made ``batch`` (hops 0; its messages were delivered locally already).
        Returns the actions to take."""
        actions = self.spread_new(batch, now, body)
        self.keep_new(batch, body, now)
        return actions

    def spread_new(self, batch: Batch, now: float,
                   body: BatchBody | None = None) -> list[Action]:
        """``publish``'s first half: the actions that send a batch made here (``body``:
        what it holds; without it, a routed batch goes on as in tree mode). The caller
        can take them before ``keep_new`` (which must follow, before any other call),
        so that keeping the batch does not delay it."""
        self.seen.add(batch.origin + batch.id, now)
        return self._spread(batch, None, now, body, topic=routed_topic(self.interest, body))

    def keep_new(self, batch: Batch, body: BatchBody, now: float) -> None:
        """``publish``'s second half: keep a batch made here (history, the store)."""
        self.history.add(batch, body.epoch, body.seq, now, None,
                         id_range=item_id_range([item.id for item in body.items]),
                         topic=routed_topic(self.interest, body))
        self._kept(batch, body, now)

    def on_message(self, msg: GossipMessage, from_peer: bytes, now: float,
                   verify: Verify, *, authenticated: bool = False) -> list[Action]:
        """``msg`` arrived from ``from_peer``; ``verify`` checks a batch (raising
        ``RemoteProtocolError``). Returns the actions to take."""
        self._watch.input(now)
        kind = type(msg)
        if kind is Batch:
            return self.on_batch(msg, from_peer, now, verify,  # type: ignore[arg-type]
                                 authenticated=authenticated)
        if kind is IHave:
            return on_ihave(self, msg, from_peer, now)  # type: ignore[arg-type]
        if kind is Graft:
            return on_graft(self, msg, from_peer, now, verify)  # type: ignore[arg-type]
        if kind is Prune:
            self.stats.prunes_received += 1
            if from_peer in self._peers and self.tree:
                for origin in msg.origins:  # type: ignore[union-attr]
                    if self.order.knows(origin):  # no tree state for made-up origins
                        self.trees.prune(origin, from_peer)
            return []
        if kind is Fetch:
            return on_fetch(self, msg, from_peer, now, verify)  # type: ignore[arg-type]
        assert kind is Digest
        return on_digest(self, msg, from_peer, now)  # type: ignore[arg-type]

    def on_batch(self, batch: Batch, from_peer: bytes, now: float,
                 verify: Verify, *, authenticated: bool = False) -> list[Action]:
        """``batch`` arrived from ``from_peer``. Returns the actions to take.
        ``authenticated``: the link proves who ``from_peer`` is (TLS with certificates):
        a batch straight from its origin over it is delivered on the strength of the link,
        its signature checked only before it goes on to anyone else (pushed, or sent for
        a Graft; the next node cannot trust our link): the most common path is fastest."""
        stats = self.stats
        stats.received += 1
        if meant := batch.meant:  # this copy's: not kept (history), not passed on
            batch = msgspec.structs.replace(batch, meant=[])
        key = batch.origin + batch.id  # ids are unique per origin only
        if self.seen.seen(key, now) or batch.origin == self.node_id:
            stats.duplicates += 1
            if self.tree and from_peer in self._peers and self.trees.prune(batch.origin,
                                                                           from_peer):
                stats.prunes_sent += 1  # the sender is to stop pushing this origin to us
                return [Send(from_peer, [Prune([batch.origin])])]
            return []
        if batch.hops > self.max_hops:
            stats.hop_limited += 1
            return []
        direct = authenticated and batch.origin == from_peer
        if batch.origin != from_peer and not self.order.knows(batch.origin) \
                and not self.streams.knows(batch.origin):
            # Each origin tracked costs memory; a peer may bring only so many new ones.
            bucket = self._new_origins.get(from_peer)
            if bucket is not None and not bucket.take(1, now):
                stats.new_origin_limited += 1
                return []  # not remembered as seen: another path may still bring it
        try:
            body = verify(batch, check_signature=False) if direct else verify(batch)
        except RemoteProtocolError as exc:
            stats.rejected += 1
            return [Disconnect(from_peer, exc.code)] if exc.code == "bad_signature" else []
        self.seen.add(key, now)
        missing = self.missing.take(key)
        published = missing.published  # a catch-up's
        accepted, ready, topic = self._in_order(batch, body, now, from_peer, published)
        if not accepted:
            return self._deliveries(ready, now)
        self.history.add(batch, body.epoch, body.seq, now, from_peer, verified=not direct,
                         id_range=item_id_range([item.id for item in body.items]),
                         repaired=missing.repair,
                         held=self.order.is_held(batch.origin, body.epoch, body.seq),
                         topic=topic, published=published)
        actions = self._deliveries(ready, now)
        announce_only = self._was_announced(missing, batch, from_peer, actions)
        if body.to == self.node_id:
            return actions
        unchecked = verify if direct else None  # checked if it goes on (see _spread)
        # An answer to a Fetch passed on: back to who asked (None: it was forged).
        back = pass_back(self, batch, body, unchecked) if body.tprev is not None else []
        if back is None:
            return [*actions, Disconnect(from_peer, "bad_signature")]
        spread = self._spread(batch, from_peer, now, body, announce_only=announce_only,
                              topic=topic, age=age_ms(now, published), verify=unchecked,
                              meant=meant)
        return actions + back + (without(spread, back) if back else spread)

    def _in_order(self, batch: Batch, body: BatchBody, now: float, from_peer: bytes,
                  published: float | None
                  ) -> tuple[bool, list[tuple[Batch, BatchBody]], str | None]:
        """A new batch through its origin's order (``order``), or its stream's for an
        origin in interest mode: whether it is accepted (not a replay), what goes out
        now, and the topic to route it by (a routed batch, this node in interest mode).
        ``published``: a batch caught up (``catchup``), when it was published."""
        if body.tprev is not None:
            topic = body.items[0].topic if is_routed(body) else None
            ready = self._in_stream(batch, body, now, from_peer, topic, published)
            return True, ready, topic if self.interest is not None else None
        accepted, ready = self.order.add(batch.origin, body.epoch, body.seq, (batch, body),
                                         now, from_peer)
        if self.order.overflow:
            ready = self.order.take_overflow() + ready
        return accepted, ready, None

    def _in_stream(self, batch: Batch, body: BatchBody, now: float, from_peer: bytes,
                   topic: str | None, published: float | None
                   ) -> list[tuple[Batch, BatchBody]]:
        """A batch with ``tprev`` through its stream's order (``streams``; ``topic``: a
        routed batch's, else None): what goes out now. This node may get only some of
        its origin's batches, so the origin's numbers have gaps that are not losses. A
        routed batch not wanted here, or caught up but published before this node's
        subscription began, goes nowhere here."""
        key = (batch.origin, body.epoch, topic)
        young = False  # this node's subscription to the topic just began
        if topic is not None and self.interest is not None:
            if not self.interest.wants_here(topic, now):
                self.interest.stats.relayed += 1
                return []  # only passed on: kept in history, not delivered nor stored
            if published is not None and self.interest.before_start(topic, published):
                self.interest.stats.early += 1
                return self.streams.skip(key, body.seq)
            self.interest.stats.wanted += 1
            young = self.interest.young(topic, now)
            if young and body.tprev and not self.streams.started(key):
                before = self.history.find(batch.origin, body.epoch, body.tprev)
                if before is not None and self.interest.before_start(topic, before.age):
                    self.streams.skip(key, body.tprev)  # passed on here before the subscribe
        assert body.tprev is not None
        out = self.streams.add(key, body.seq, body.tprev, (batch, body), now, wait=young)
        if not out and (not young or self.streams.started(key)):  # held: ask for the one
            # it follows (unless a new subscription's stream waits for its start: catch-up
            # brings it, or says it came before the subscription)
            self.fetches.want((batch.origin, body.epoch, body.tprev), from_peer, now)
        return out

    def _kept(self, batch: Batch, body: BatchBody, now: float) -> None:
        """Hand a numbered batch just kept to ``on_kept``, with its age of publication."""
        if self.on_kept is None or not body.seq:
            return
        entry = self.history.get(batch.origin + batch.id)
        self.on_kept(batch, body, entry.age if entry is not None else now)

    def _was_announced(self, missing: Missing, batch: Batch, from_peer: bytes,
                       actions: list[Action]) -> bool:
        """``batch`` came after an announcement of it: whether to only announce it on
        (not push it); appends a swap to ``actions`` if it came the longer way."""
        if missing.published is not None:
            return True  # caught up: announced on, with its age (``catchup``)
        if missing.grafted and missing.repair and self.tree:
            # A batch we asked for after a repair announcement (a partition healed, a
            # new peer): repairs come in bursts, faster than Prunes could come back, so
            # they are not pushed along the trees but announced as repairs in turn, and
            # each node that lacks one asks for it once. Live batches keep the trees.
            return True
        if missing.announcers and not missing.repair:
            # It was announced to us first, by a path shorter than the one it came by?
            actions += maybe_swap(self, batch.origin, missing.announcers[0], missing.hops,
                                  from_peer, batch.hops)
        return False

    def check(self, batch: Batch, verify: Verify) -> bool:
        """Check the signature of a batch delivered on the strength of its link (see
        ``on_batch``) before it goes to anyone else. One that fails leaves history, so
        that it is never announced or sent."""
        key = batch.origin + batch.id
        entry = self.history.get(key)
        if entry is not None and entry.verified:
            return True
        try:
            verify(batch)
        except RemoteProtocolError:
            self.stats.rejected += 1
            self.history.remove(key)
            return False
        if entry is not None:
            entry.verified = True
        return True

    def _spread(self, batch: Batch, from_peer: bytes | None, now: float,
                body: BatchBody | None, *, announce_only: bool = False,
                topic: str | None = None, age: int | None = None,
                verify: Verify | None = None, meant: list[bytes] | None = None) -> list[Action]:
        """Push ``batch`` on eager links and announce it on lazy ones (on all of them
        with ``announce_only``; never back to ``from_peer``), under the hop limit. A
        routed batch (``topic``) goes only toward the members that want it; one caught
        up (``age``: published that many ms ago) is only announced, with its age. With
        ``verify``, a batch not yet checked (taken on the strength of its link: see
        ``on_batch``) is checked before it is pushed or announced: one that fails goes
        nowhere and closes ``from_peer``'s link. A leaf of its interest tree, which
        sends it to nobody, never pays for the signature. A routed batch is noted as
        its stream's last (``tails``). ``meant``: ``Batch.meant`` of the copy that came."""
        if batch.hops >= self.max_hops:
            if from_peer is not None:
                self.stats.hop_limited += 1
            return []
        targets = None
        if topic is not None and self.interest is not None:
            targets = self.interest.targets(batch.origin, topic, self._peers, from_peer, meant)
        eager, lazy = targets or self._tree_targets(batch.origin, from_peer)
        if announce_only or age is not None:
            eager, lazy = [], eager + lazy
        if (eager or lazy) and verify is not None and from_peer is not None \
                and not self.check(batch, verify):
            # Delivered (the link vouches for it), but not passed on, nor kept.
            return [Disconnect(from_peer, "bad_signature")]
        hops = batch.hops + 1
        if topic is not None and body is not None:  # its stream's last, for ``tails``
            told = (*eager, *lazy) if from_peer is None else (*eager, *lazy, from_peer)
            note_passed(self, topic, batch, body, told, now, age)
        if lazy:
            self.announce(Announce(batch.origin + batch.id, hops, age), lazy,
                          repair=announce_only and age is None)
        if not eager:
            return []
        self.stats.forwarded += len(eager)
        if (peers := tuple(eager)) and from_peer is None and topic is not None:
            self.pushed.note(batch.origin + batch.id, topic, peers)  # ``reroute``
        return pushes(self.interest if targets else None, batch, hops, peers)

    def announce(self, announce: Announce, peers: list[bytes], *, repair: bool = False
                 ) -> int:
        """Queue ``announce`` for ``peers`` (sent by ``take_announcements``)."""
        queue = self._repair_ihave if repair else self._ihave
        for peer in peers:
            queue.setdefault(peer, []).append(announce)
        self.stats.ihave_sent += len(peers)
        return len(peers)

    def _tree_targets(self, origin: bytes,
                      from_peer: bytes | None) -> tuple[list[bytes], list[bytes]]:
        """(eager, lazy) linked peers for a batch of ``origin``, but ``from_peer``."""
        lazy = self._lazy.get(origin) if self.tree else None
        if not lazy:
            return [peer for peer in self._peers if peer != from_peer], []
        eager: list[bytes] = []
        announce: list[bytes] = []
        for peer in self._peers:
            if peer != from_peer:
                (announce if peer in lazy else eager).append(peer)
        return eager, announce

    def _deliveries(self, ready: list[tuple[Batch, BatchBody]], now: float) -> list[Action]:
        """Deliver and keep (``on_kept``) what the order buffer released, in order."""
        out: list[Action] = []
        me = self.node_id
        for batch, body in ready:
            self._kept(batch, body, now)
            if body.to is None or body.to == me:
                out.append(Deliver(batch, body))
                self.stats.delivered += len(body.items)
        return out

    # -- lazy push, repair -----------------------------------------------------------

    @property
    def has_announcements(self) -> bool:
        """Whether ``take_announcements`` has something."""
        return bool(self._ihave or self._repair_ihave)

    def take_announcements(self) -> list[Action]:
        """The ``IHave``s gathered since the last call, one message per peer (split at
        ``MAX_KEYS``). The caller sends them once its task yields, so they batch."""
        out: list[Action] = []
        for repair in (False, True):
            pending = self._repair_ihave if repair else self._ihave
            if not pending:
                continue
            if repair:
                self._repair_ihave = {}
            else:
                self._ihave = {}
            out += [Send(peer, [IHave(part, repair=repair) for part in chunks(anns)])
                    for peer, anns in pending.items() if peer in self._peers]
        return out

    # -- timers ---------------------------------------------------------------------

    @property
    def has_timers(self) -> bool:
        """Whether ``tick`` has anything to do some time (cheap, unlike
        ``next_deadline``)."""
        return (len(self.missing) > 0 or self.order.held_count > 0
                or self.streams.held_count > 0 or self.fetches.next_deadline() is not None
                or catch_up_due(self) or tails_deadline(self) is not None)

    def next_deadline(self) -> float | None:
        """When ``tick`` should next run (None: nothing is waiting)."""
        if catch_up_due(self):
            return float("-inf")
        deadline = self.order.next_deadline(self._watch.fetching(None, self.missing))
        for first in (self.missing.next_deadline(), self.streams.next_deadline(),
                      self.fetches.next_deadline(), tails_deadline(self)):
            if first is not None:
                deadline = first if deadline is None else min(deadline, first)
        return deadline

    def tick(self, now: float) -> list[Action]:
        """Graft announced batches that did not come in time; release held batches whose
        gap was waited for long enough; catch up the members whose interest changed;
        announce the streams' last batches along the trees of a changed graph."""
        if catch_up_due(self):
            catch_up(self, now)
        if (due := tails_deadline(self)) is not None and due <= now:
            announce_tails(self, now)  # the graph changed: the tails along the new trees
        grafts, given_up = self.missing.due(now, self._peers, self.cfg.graft_timeout)
        self.stats.missing_given_up += given_up
        fetching = self._watch.fetching(now, self.missing)
        actions = self._deliveries(self.order.tick(now, fetching) + self.streams.tick(now), now)
        actions += ask(self, now)
        for peer, keys in grafts.items():
            self.trees.graft((key[:ID_LEN] for key in keys), peer)
            self.stats.grafts_sent += len(keys)
            actions.append(Send(peer, [Graft(part) for part in chunks(keys)]))
        return actions
