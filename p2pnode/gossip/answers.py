"""What the router sends in answer to a peer's Graft, Digest or Fetch, and this node's
own Fetches (kept apart from ``router`` to keep it short; these functions work on a
``Router``'s history, peers, trees and routes).

- ``IHave``: note what this node lacks, to graft it.
- ``Graft``: the batches asked for, from history; the link becomes eager.
- ``Digest`` (a link opened): announce what the peer lacks (``IHave``, repair).
- ``Fetch`` (interest mode, ``fetch``, docs/interest.md): a stream's gap, answered
  from history or asked on toward the origin; answers passed back to who asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ..ids import ID_LEN
from ..wire.messages import (
    Announce,
    Batch,
    BatchBody,
    Digest,
    Fetch,
    GossipMessage,
    Graft,
    IHave,
    Prune,
)
from .actions import Action, Forward, Send, Verify
from .fetch import fetch_messages
from .interestmode import wants
from .repair import chunks
from .tails import on_notice

if TYPE_CHECKING:
    from .router import Router


def on_graft(router: Router, msg: Graft, from_peer: bytes, now: float,
             verify: Verify) -> list[Action]:
    """Make the link eager for the origins asked about; send the batches asked for."""
    stats = router.stats
    stats.grafts_received += 1
    if not router.is_linked(from_peer):
        return []
    router.trees.graft({*(key[:ID_LEN] for key in msg.keys), *msg.origins}, from_peer)
    router.history.expire(now)
    batches: list[GossipMessage] = []
    for key in dict.fromkeys(msg.keys):  # each batch once, however often it is asked
        entry = router.history.get(key)
        if entry is None:
            stats.graft_misses += 1
        elif entry.verified or router.check(entry.batch, verify):
            batches.append(_hopped(router, entry.batch))
    return [Send(from_peer, batches)] if batches else []


def on_ihave(router: Router, msg: IHave, from_peer: bytes, now: float) -> list[Action]:
    """Note the announced batches this node lacks (grafted if they do not come in time;
    a catch-up's at once)."""
    stats = router.stats
    stats.ihave_received += len(msg.batches)
    actions: list[Action] = []
    wait = router.cfg.graft_timeout
    if msg.repair:
        # After a heal every node hears of the same batches at once: spread the grafts
        # out, so that the first few nodes get each batch and their trees carry it to
        # the rest before the others' timers run out.
        wait *= 1 + router.cfg.repair_spread * router.rng.random()
    for ann in msg.batches:
        key = ann.key
        if ann.seq is not None:  # a stream's tail (``tails``): Fetched, or passed on
            on_notice(router, ann, from_peer, now)
            continue
        if ann.age is not None:  # a catch-up: graft it now if it is not here
            if key not in router.seen and router.interest is not None:
                router.missing.note(key, from_peer, ann.hops, now, repair=False,
                                   published=now - ann.age / 1000)
            continue
        if key in router.seen:
            entry = router.history.get(key)
            # Only a fresh batch says anything about the tree: an announcement of one
            # received long ago comes from a repair, not from a faster path.
            if (entry is not None and entry.from_peer is not None
                    and now - entry.time <= router.cfg.graft_timeout):
                actions += maybe_swap(router, entry.batch.origin, from_peer, ann.hops,
                                      entry.from_peer, entry.batch.hops)
            continue
        router.missing.note(key, from_peer, ann.hops, now + wait, repair=msg.repair)
    return actions


def on_digest(router: Router, msg: Digest, from_peer: bytes, now: float) -> list[Action]:
    """Announce what a new link's peer lacks (the first Digest on a link only)."""
    if not router.is_linked(from_peer) or from_peer in router.digested:
        return []  # one Digest per link: it is sent once, when the link opens
    router.digested.add(from_peer)
    router.history.expire(now)
    # Announce what the peer lacks rather than push it: after a partition heals,
    # many links open at once, and each side grafts every batch once (from the
    # first announcer whose copy it asks for), then spreads it along its trees.
    # Unverified entries too (put back from the store after a restart, or taken on
    # the strength of a link): a graft checks a batch's signature before sending it.
    # In interest mode, only the routed batches the peer wants.
    anns = [Announce(entry.batch.origin + entry.batch.id, entry.batch.hops + 1)
            for entry in router.history.missing_from(msg.entries)
            if entry.topic is None or wants(router.interest, from_peer, entry.topic)]
    router.stats.repaired += len(anns)
    if not anns:
        return []
    return [Send(from_peer, [IHave(part, repair=True) for part in chunks(anns)])]


def on_fetch(router: Router, msg: Fetch, from_peer: bytes, now: float,
             verify: Verify) -> list[Action]:
    """``from_peer`` asks for batches of a stream: send those history has; ask on
    toward the origin for the others (once per number, whoever else waits)."""
    if not router.is_linked(from_peer) or router.interest is None:
        return []
    fetches = router.fetches
    found: list[GossipMessage] = []
    ask_on: list[int] = []
    history = router.history
    for seq in dict.fromkeys(msg.seqs):
        entry = history.find(msg.origin, msg.epoch, seq)
        if entry is not None:
            if entry.verified or router.check(entry.batch, verify):
                found.append(_hopped(router, entry.batch))
        elif msg.origin != router.node_id and fetches.wait(
                (msg.origin, msg.epoch, seq), from_peer, now):
            ask_on.append(seq)
    fetches.stats.answered += len(found)
    actions: list[Action] = [Send(from_peer, found)] if found else []
    if ask_on:
        routes = router.interest.routes
        hop = routes.toward(msg.origin) if routes is not None else None
        if hop is None or hop == from_peer or not router.is_linked(hop):
            fetches.stats.refused += len(ask_on)
        else:
            actions.append(Send(hop, [Fetch(msg.origin, msg.epoch, ask_on)]))
    return actions


def pass_back(router: Router, batch: Batch, body: BatchBody,
              verify: Verify | None) -> list[Action] | None:
    """A new batch of a stream came: send it to the peers that asked for it (a Fetch
    this node asked on toward the origin). ``verify``: the batch's signature is not
    checked yet (taken on the strength of its link): check it first; None if bad."""
    waiters = router.fetches.got((batch.origin, body.epoch, body.seq))
    if not waiters:
        return []
    if verify is not None and not router.check(batch, verify):
        return None
    router.fetches.stats.answered += len(waiters)
    copy = _hopped(router, batch)
    return [Send(peer, [copy]) for peer in waiters if router.is_linked(peer)]


def without(spread: list[Action], back: list[Action]) -> list[Action]:
    """``spread`` without pushes to the peers ``back`` sends the batch to already."""
    peers = {action.peer for action in back if type(action) is Send}
    out: list[Action] = []
    for action in spread:
        if type(action) is Forward:
            action = Forward(action.batch, tuple(p for p in action.peers if p not in peers))
            if not action.peers:
                continue
        out.append(action)
    return out


def ask(router: Router, now: float) -> list[Action]:
    """This node's asks whose delay ran out, to the peer that brought what follows the
    gap, or (gone) to the next hop toward the origin."""
    due = router.fetches.due(now)
    if not due:
        return []
    routes = router.interest.routes if router.interest is not None else None
    asks = []
    for wanted, peer in due:
        if peer is None or not router.is_linked(peer):
            peer = routes.toward(wanted[0]) if routes is not None else None
        if peer is not None and router.is_linked(peer):
            asks.append((wanted, peer))
    return [Send(peer, list(msgs)) for peer, msgs in fetch_messages(asks).items()]


def maybe_swap(router: Router, origin: bytes, shorter: bytes, short_hops: int,
               longer: bytes, long_hops: int) -> list[Action]:
    """A batch of ``origin`` reached us by ``shorter`` in ``short_hops`` (announced)
    and by ``longer`` (pushed, eager) in ``long_hops``: if the difference is at least
    ``optimize_hops``, make ``shorter`` eager and ``longer`` lazy for ``origin``."""
    k = router.cfg.optimize_hops
    if (not router.tree or not k or short_hops + k > long_hops or shorter == longer
            or not router.is_linked(shorter) or not router.is_linked(longer)
            or not router.trees.swap(origin, shorter, longer)):
        return []
    router.stats.prunes_sent += 1
    router.stats.swaps += 1
    return [Send(longer, [Prune([origin])]), Send(shorter, [Graft([], [origin])])]


def _hopped(router: Router, batch: Batch) -> Batch:
    """``batch`` as it goes one link further (sent even at the hop limit: delivered
    there, not forwarded)."""
    return msgspec.structs.replace(batch, hops=min(batch.hops + 1, router.max_hops))
