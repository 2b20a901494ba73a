"""``simulate.py --topics T``: why each copy of a message was sent (interest mode).

Every batch copy a node reads off a link was sent by a peer for one of these reasons
(the router's own decision, recorded where it is made, read where the copy arrives):

- ``tree``: pushed along the origin's tree (``InterestRouting.targets``: routed);
- ``off_tree``: pushed by shortest paths, the sender not on the origin's tree as it
  saw the mesh (views that differ for a moment);
- ``fallback``: pushed as in tree mode (the origin not in the sender's view, or the
  sender's interests or routes not known yet);
- ``reroute``: pushed again because the link it had been pushed into broke
  (``gossip/reroute.py``);
- ``graft``: sent in answer to a ``Graft`` (an announcement grafted, or a link made
  eager);
- ``fetch``: sent from history in answer to a ``Fetch``; ``passback``: an answer to a
  ``Fetch`` this node had asked on for the peer;
- ``other``: anything else.

Each cause's copies and, of them, the duplicates (the receiver had the batch already).
``copies_by_cause`` in the JSON: {cause: [copies, duplicates]} per message. Only the
run's app batches count (those of ``Stats.batch_topics``), as in ``copies_received``.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from typing import Any

from p2pnode.gossip import Forward, Router, Send
from p2pnode.wire import Batch, Graft

CAUSES = ("tree", "off_tree", "fallback", "reroute", "graft", "fetch", "passback", "other")


class Causes:
    """The cause of every app batch copy sent, matched to its receipt."""

    def __init__(self) -> None:
        #: (batch key, sender, receiver) -> causes of the copies in flight, in order
        self._sent: defaultdict[tuple[bytes, bytes, bytes], deque[str]] = defaultdict(deque)
        self.copies: Counter[tuple[bytes, str]] = Counter()  # (batch key, cause)
        self.dups: Counter[tuple[bytes, str]] = Counter()

    def _note(self, sender: bytes, actions: list[Any], cause: str) -> None:
        sent = self._sent
        for action in actions:
            if type(action) is Forward:
                key = action.batch.origin + action.batch.id
                for peer in action.peers:
                    sent[key, sender, peer].append(cause)
            elif type(action) is Send:
                for msg in action.msgs:
                    if type(msg) is Batch:
                        sent[msg.origin + msg.id, sender, action.peer].append(cause)

    def watch(self, router: Router) -> None:
        """Record the causes of what ``router`` sends: its pushes (``_spread``), and the
        batches it sends in answer to a Graft or a Fetch, or passes back (a new batch
        some peer had asked for by Fetch), from what ``on_message`` returns."""
        spread_inner = router._spread
        message_inner = router.on_message
        interest = router.interest
        note = self._note
        me = router.node_id

        def spread(batch: Batch, from_peer: bytes | None, *args: Any, **kw: Any) -> Any:
            if interest is None or kw.get("topic") is None:
                return spread_inner(batch, from_peer, *args, **kw)
            st = interest.stats
            before = (st.routed, st.off_tree, st.unrouted)
            actions = spread_inner(batch, from_peer, *args, **kw)
            cause = ("tree" if st.routed != before[0] else "off_tree"
                     if st.off_tree != before[1] else "fallback"
                     if st.unrouted != before[2] else "other")
            note(me, actions, cause)
            return actions

        def on_message(msg: Any, from_peer: bytes, now: float, verify: Any,
                       **kw: Any) -> Any:
            actions = message_inner(msg, from_peer, now, verify, **kw)
            kind = type(msg)
            cause = ("graft" if kind is Graft else "passback" if kind is Batch
                     else "fetch" if type(msg).__name__ == "Fetch" else "other")
            note(me, [a for a in actions if type(a) is Send], cause)
            return actions

        router._spread = spread  # type: ignore[method-assign]
        router.pushed.on_reroute = lambda forward: note(me, [forward], "reroute")
        router.on_message = on_message  # type: ignore[method-assign]

    def received(self, key: bytes, sender: bytes, receiver: bytes, duplicate: bool) -> None:
        """A copy of batch ``key`` from ``sender`` arrived at ``receiver``."""
        pending = self._sent.get((key, sender, receiver))
        cause = pending.popleft() if pending else "other"
        if pending is not None and not pending:
            del self._sent[key, sender, receiver]
        self.copies[key, cause] += 1
        if duplicate:
            self.dups[key, cause] += 1

    def figures(self, batch_items: dict[bytes, int], messages: int) -> dict[str, Any]:
        """{cause: [copies, duplicates]} per message, app batches only."""
        total: Counter[str] = Counter()
        dups: Counter[str] = Counter()
        for (key, cause), n in self.copies.items():
            if key in batch_items:
                total[cause] += n * batch_items[key]
                dups[cause] += self.dups[key, cause] * batch_items[key]
        per = max(1, messages)
        return {"copies_by_cause": {cause: [round(total[cause] / per, 3),
                                            round(dups[cause] / per, 3)]
                                    for cause in CAUSES if total[cause]}}
