"""The gate between member records and the interest index (``members.interestgate``):
each member's changes at most ``INTEREST_BURST`` at once, then ``INTEREST_RATE`` a
second; the newest change held back wins; a member that goes is out at once; this
node's own changes are never held. And the flooding of another member's records, at
``record_rate`` each, the newest last. Pure (the attack on real nodes:
tests/test_attack_interest.py)."""

from __future__ import annotations

import pytest

from p2pnode.gossip.interest import Interests
from p2pnode.members import MemberInfo, Membership
from p2pnode.members.interestgate import INTEREST_BURST, INTEREST_RATE, InterestGate
from p2pnode.wire.messages import Members

from .test_interest import IDS, PEER, member_record

ME, A, B = b"m" * 16, b"a" * 16, b"b" * 16


def test_a_burst_then_the_rate_and_the_newest_held_change_wins() -> None:
    idx = Interests()
    gate = InterestGate(idx, ME)
    burst = int(INTEREST_BURST)
    for k in range(burst):
        assert gate.set(A, [f"t{k}"], 0.0)
    assert idx.version == burst
    assert not gate.set(A, ["held"], 0.0)  # over the burst: held back
    assert not gate.set(A, ["newer"], 0.1)  # replaces it
    assert gate.held == 2
    assert idx.of(A) == (f"t{burst - 1}",)
    assert gate.set(B, ["x"], 0.1)  # another member has its own bucket
    deadline = gate.next_deadline()
    assert deadline == pytest.approx(0.1 + (1 - 0.1 * INTEREST_RATE) / INTEREST_RATE)
    gate.tick(deadline - 0.01)
    assert idx.of(A) == (f"t{burst - 1}",)
    gate.tick(deadline)
    assert idx.of(A) == ("newer",)
    assert gate.next_deadline() is None
    assert idx.version == burst + 2  # B's and the newest: "held" never was


def test_an_unchanged_record_costs_nothing_and_a_change_back_cancels_the_held() -> None:
    idx = Interests()
    gate = InterestGate(idx, ME, rate=1.0, burst=1)
    assert gate.set(A, ["x", "y"], 0.0)
    assert not gate.set(A, ["y", "x", "x"], 0.0)  # the same interest: no token needed
    assert not gate.set(A, ["z"], 0.0)  # held
    assert not gate.set(A, ["x", "y"], 0.5)  # back to what the index says: nothing held
    gate.tick(5.0)
    assert idx.of(A) == ("x", "y")
    assert idx.version == 1
    assert len(gate) == 0  # its bucket is full again: forgotten


def test_a_member_that_goes_is_out_at_once_and_this_node_is_never_held() -> None:
    idx = Interests()
    gate = InterestGate(idx, ME, rate=1.0, burst=1)
    assert gate.set(A, None, 0.0)
    assert not gate.set(A, ["a"], 0.0)  # held
    assert gate.remove(A)  # dead or left: out now, the held change dropped
    gate.tick(10.0)
    assert A not in idx
    for k in range(10):
        assert gate.set(ME, [f"m{k}"], 0.0)
    assert idx.of(ME) == ("m9",)
    with pytest.raises(ValueError, match="rate"):
        InterestGate(idx, ME, rate=0)


def test_a_members_records_are_flooded_on_at_its_record_rate_the_newest_last() -> None:
    now = [0.0]
    me = MemberInfo(IDS[0].node_id, "me", ["mem:9"], 7, "open", incarnation=5,
                    this_node=True)
    ms = Membership(me, identity=IDS[0], seed=1, clock=lambda: now[0])
    a, b = IDS[1], IDS[2]
    limits = ms.limits
    burst = int(limits.record_burst)
    records = [member_record(a, 10 + k, [f"t{k}"]) for k in range(burst + 5)]
    ms.receive(Members(records), PEER, 0.0)
    ms.receive(Members([member_record(b, 1, None)]), PEER, 0.0)  # b: its own bucket
    flooded = [item for item, _ in ms.outbox]
    assert flooded == [*records[:burst], member_record(b, 1, None)]
    assert ms.table.entries[a.node_id].record is records[-1]  # taken all the same
    assert ms.interests.of(a.node_id) == (f"t{int(INTEREST_BURST) - 1}",)  # index: paced
    ms.outbox.clear()
    deadline = ms.next_deadline()
    assert deadline == pytest.approx(1 / limits.record_rate)
    now[0] = deadline
    ms.tick(deadline)
    assert [item for item, _ in ms.outbox] == [records[-1]]  # only the newest, once
    ms.tick(100.0)
    assert ms.interests.of(a.node_id) == (f"t{burst + 4}",)
    ms.tick(200.0)
    assert len(ms.record_pacer) == len(ms.interest_gate) == 0  # full again: forgotten
