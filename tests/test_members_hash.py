"""The member-list hash (the periodic sync's summary) stays the hash of the members
listed when this node's own record changes: a refutation, a tag change, leaving. A
wrong hash makes every sync round with this node send whole digests (seen in
``simulate.py --topology join``: 11 of 100 nodes, after refuting a suspicion)."""

from __future__ import annotations

import random

from p2pnode.members import MemberInfo, Membership
from p2pnode.members.records import ClaimBody, MemberBody, sign_claim, sign_member
from p2pnode.members.table import entry_hash
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Members

ME, OTHER = (make_identity(random.Random(2000 + i)) for i in range(2))


def recomputed(ms: Membership) -> bytes:
    h = 0
    for m in ms.members():
        if m.state in ("alive", "suspect"):
            h ^= entry_hash(m.node_id, m.incarnation, m.state)
    return h.to_bytes(16, "big")


def test_the_hash_follows_this_nodes_own_record() -> None:
    me = MemberInfo(ME.node_id, "me", ["mem:1"], 6, "open", incarnation=5, this_node=True)
    ms = Membership(me, identity=ME, seed=1)
    other = sign_member(OTHER, MemberBody("o", ["mem:2"], 6, "open", {}, 7, "alive"))
    ms.receive(Members([other]), b"p" * 16, 0.0)
    assert ms.summary().hash == recomputed(ms)
    assert ms.summary().count == 2
    # Someone suspects this node: it refutes with a higher incarnation.
    suspect = sign_claim(OTHER, ClaimBody(ME.node_id, 5, "suspect"))
    ms.receive(Members([], [suspect]), b"p" * 16, 1.0)
    assert ms.me.incarnation == 6
    assert ms.summary().hash == recomputed(ms)
    ms.set_tags({"role": "display"})
    assert ms.summary().hash == recomputed(ms)
    ms.leave()
    assert ms.summary().hash == recomputed(ms)
    assert ms.summary().count == 1  # only the other is live now
