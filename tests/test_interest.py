"""Interests, pure (docs/interest.md, "What each node knows"): the index of every
member's subscription patterns (exact, wildcard, every topic), its cache and bounds,
``summarize``, the ``interest`` field of member records (round trip, bad patterns,
size) and ``Membership`` keeping the index up to date from records and states."""

from __future__ import annotations

import random

import msgspec
import pytest

from p2pnode.errors import RemoteProtocolError
from p2pnode.gossip.interest import (
    MATCH_CACHE,
    MAX_AWAY,
    MAX_INTEREST_BYTES,
    MAX_PATTERNS,
    Interests,
    summarize,
)
from p2pnode.identity import NodeIdentity
from p2pnode.members import MemberInfo, Membership
from p2pnode.members.records import (
    _MEMBER_DOMAIN,
    MemberBody,
    decode_member,
    sign_member,
    verify_member,
)
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Members, SignedMember

A, B, C, D = (bytes([i]) * 16 for i in range(1, 5))
IDS = [make_identity(random.Random(2000 + i)) for i in range(4)]
PEER = b"p" * 16


def test_matching_exact_wildcard_and_all_topics() -> None:
    idx = Interests()
    assert idx.set(A, ["sensors/kitchen/temp", "chat"])
    assert idx.set(B, ["sensors/+/temp"])
    assert idx.set(C, ["sensors/#"])
    assert idx.set(D, None)  # every topic
    assert idx.matching("sensors/kitchen/temp") == {A, B, C, D}
    assert idx.matching("sensors/hall/temp") == {B, C, D}
    assert idx.matching("sensors") == {C, D}  # '#' matches no level too
    assert idx.matching("chat") == {A, D}
    assert idx.matching("other") == {D}
    assert idx.wants(A, "chat")
    assert not idx.wants(B, "chat")
    assert not idx.wants(b"x" * 16, "chat")  # not a member
    assert len(idx) == 4


def test_no_subscription_is_no_interest_and_hash_is_every_topic() -> None:
    idx = Interests()
    idx.set(A, [])
    idx.set(B, ["a", "#"])
    assert idx.matching("a") == {B}
    assert idx.matching("anything/else") == {B}
    assert idx.of(A) == ()
    assert idx.of(B) is None


def test_the_cache_is_kept_until_a_change_and_each_change_bumps_the_version() -> None:
    idx = Interests()
    idx.set(A, ["a/+"])
    first = idx.matching("a/b")
    assert idx.matching("a/b") is first  # remembered
    version = idx.version
    assert not idx.set(A, ["a/+"])  # the same: nothing changes
    assert idx.version == version
    assert idx.matching("a/b") is first
    assert idx.set(B, ["a/b"])
    assert idx.version == version + 1
    assert idx.matching("a/b") == {A, B}
    assert idx.set(A, ["c"])  # a/+ is gone
    assert idx.matching("a/b") == {B}
    assert idx.matching("a/x") == frozenset()
    assert idx.remove(B)
    assert not idx.remove(B)
    assert idx.matching("a/b") == frozenset()
    assert idx.version == version + 3


def test_grown_counts_only_the_changes_that_may_add_a_member_to_a_topic() -> None:
    idx = Interests()
    steps = [(A, ["a"], 1), (A, ["a", "b/+"], 2), (A, ["b/+"], 2), (A, [], 2),
             (B, [], 2), (B, None, 3), (B, ["x"], 3), (C, None, 4)]
    for node, patterns, grown in steps:
        idx.set(node, patterns)
        assert idx.grown == grown, (node, patterns)
    idx.remove(C)
    assert idx.grown == 4


def test_the_cache_is_bounded_and_equal_results_are_held_once() -> None:
    idx = Interests()
    idx.set(A, None)
    results = {id(idx.matching(f"t/{i}")) for i in range(MATCH_CACHE + 10)}
    assert len(idx._cache) <= MATCH_CACHE
    assert len(results) <= 2  # one copy of {A} (again after the cache starts over)


def test_set_refuses_what_an_app_could_not_subscribe_to() -> None:
    idx = Interests()
    idx.set(A, ["ok"])
    for bad in ("a/#/b", "a+", "$mesh", "", "x\n"):
        with pytest.raises(ValueError, match=r"topic|pattern"):
            idx.set(A, ["fine", bad])
        assert idx.of(A) == ("ok",)  # unchanged


def test_summarize_dedupes_sorts_and_bounds() -> None:
    assert summarize(["b", "a/+", "b", "a/+"]) == ["a/+", "b"]
    assert summarize([]) == []
    assert summarize(["a", "#"]) is None
    many = [f"t{i}" for i in range(MAX_PATTERNS)]
    assert summarize(many) == sorted(many)
    assert summarize([*many, "one-more"]) is None  # 65 patterns: every topic
    long = ["x" * 200 + str(i) for i in range(MAX_INTEREST_BYTES // 200 + 1)]
    assert summarize(long) is None  # too many bytes for a record


def body(interest: list[str] | None = None) -> MemberBody:
    return MemberBody("m", ["mem:1"], 7, "open", {}, 10, "alive", interest)


def test_a_record_round_trips_its_interest() -> None:
    for interest in (None, [], ["a", "b/+", "c/#"], [f"t{i}" for i in range(MAX_PATTERNS)]):
        record = sign_member(IDS[0], body(interest))
        assert verify_member(record).interest == interest


def test_a_record_without_the_field_means_every_topic() -> None:
    # An older node's record: the fields up to ``state``, no interest.
    old = msgspec.msgpack.encode(["m", ["mem:1"], 6, "open", {}, 10, "alive"])
    assert decode_member(SignedMember(IDS[0].public, old, bytes(64))).interest is None


def raw_record(who: NodeIdentity, interest: object) -> SignedMember:
    """A record signed by ``who`` whose interest is anything (what a hostile member sends)."""
    data = msgspec.msgpack.encode(["m", ["mem:1"], 7, "open", {}, 10, "alive", interest])
    return SignedMember(who.public, data, who.sign(_MEMBER_DOMAIN + data))


@pytest.mark.parametrize("interest", [
    ["a/#/b"], ["a+b"], ["$mesh"], ["$request/#"], [""], ["x\ny"], ["x" * 257], [1],
    [f"t{i}" for i in range(MAX_PATTERNS + 1)], "all", {"a": 1},
])
def test_bad_interest_is_refused(interest: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        verify_member(raw_record(IDS[1], interest))
    assert info.value.code == "bad_message"


def test_a_record_over_4_kib_cannot_be_signed() -> None:
    big = MemberBody("m", ["mem:1"], 7, "open", {f"k{i}": "v" * 100 for i in range(20)}, 1,
                     "alive", ["p" * 250 + str(i) for i in range(MAX_PATTERNS)])
    with pytest.raises(ValueError, match="4096"):
        sign_member(IDS[0], big)


def service(who: NodeIdentity = IDS[0], addrs: tuple[str, ...] = ("mem:9",)) -> Membership:
    me = MemberInfo(who.node_id, "me", list(addrs), 7, "open", incarnation=5, this_node=True)
    return Membership(me, identity=who, seed=1)


def test_membership_indexes_its_own_interest_and_floods_a_change() -> None:
    ms = service()
    me = ms.me.node_id
    assert ms.interests.of(me) is None
    assert ms.interests.wants(me, "x")
    incarnation = ms.me.incarnation
    assert ms.set_interest(["b", "a/+", "b"])
    assert ms.me.interests == ["a/+", "b"]
    assert ms.me.incarnation == incarnation + 1
    assert len(ms.outbox) == 1
    assert verify_member(ms.outbox[0][0]).interest == ["a/+", "b"]  # type: ignore[arg-type]
    assert ms.interests.matching("a/x") == {me}
    assert not ms.set_interest(["a/+", "b"])  # the same: no new record
    assert ms.me.incarnation == incarnation + 1
    assert ms.set_interest([f"t{i}" for i in range(MAX_PATTERNS + 1)])  # 65: every topic
    assert ms.me.interests is None
    assert ms.interests.wants(me, "zzz")
    with pytest.raises(ValueError, match="'#' must be the last level"):
        ms.set_interest(["a/#/b"])
    assert ms.me.interests is None  # unchanged


def test_membership_says_every_topic_when_the_patterns_do_not_fit_with_the_tags() -> None:
    ms = service(addrs=("h" * 250 + ":7420",) * 2)
    ms.set_tags({f"k{i:02}": "v" * 61 for i in range(32)})  # 2 KiB of tags, the most
    patterns = ["p" * 21 + f"/{i:02}" for i in range(MAX_PATTERNS)]  # 1,536 bytes
    assert sum(map(len, patterns)) == MAX_INTEREST_BYTES
    assert summarize(patterns) is not None
    assert ms.set_interest(patterns)
    assert ms.me.interests is None  # over the record's 4 KiB: every topic instead
    assert verify_member(ms.outbox[-1][0]).interest is None  # type: ignore[arg-type]


def member_record(who: NodeIdentity, inc: int, interest: list[str] | None,
                  state: str = "alive") -> SignedMember:
    return sign_member(who, MemberBody("m", ["mem:1"], 7, "open", {}, inc,
                                       state, interest))  # type: ignore[arg-type]


def test_membership_follows_the_records_and_states_of_others() -> None:
    ms = service()
    a, b = IDS[1], IDS[2]
    ms.receive(Members([member_record(a, 10, ["x/+"]), member_record(b, 10, None)]), PEER, 0.0)
    assert ms.interests.matching("x/1") == {ms.me.node_id, a.node_id, b.node_id}
    ms.set_interest([])
    assert ms.interests.matching("x/1") == {a.node_id, b.node_id}
    ms.receive(Members([member_record(a, 11, ["y"])]), PEER, 1.0)  # a changed its mind
    assert ms.interests.matching("x/1") == {b.node_id}
    assert ms.interests.matching("y") == {a.node_id, b.node_id}
    ms.suspect(a.node_id, 2.0)  # suspect: still in (it may be alive)
    assert ms.interests.wants(a.node_id, "y")
    ms.receive(Members([member_record(a, 10, ["z"])]), PEER, 2.5)  # older: ignored
    assert ms.interests.of(a.node_id) == ("y",)
    ms.tick(10_000.0)  # the suspicion times out: dead
    assert ms.table.entries[a.node_id].info.state == "dead"
    assert ms.interests.of(a.node_id) is None
    assert not ms.interests.wants(a.node_id, "y")
    ms.receive(Members([member_record(b, 11, None, "left")]), PEER, 3.0)
    assert ms.interests.matching("y") == frozenset()
    assert len(ms.interests) == 1  # this node alone


def test_a_hostile_record_with_bad_interest_changes_nothing() -> None:
    ms = service()
    bad = raw_record(IDS[3], ["ok", "a/#/b"])
    with pytest.raises(RemoteProtocolError):
        ms.receive(Members([bad]), PEER, 0.0)
    assert IDS[3].node_id not in ms.table.entries
    assert len(ms.interests) == 1


def test_a_member_that_went_and_came_back_is_returned_once_with_when_it_went() -> None:
    idx = Interests()
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    for node in (a, b, c):
        idx.set(node, ["t"])
    idx.remove(a, 5.0)
    idx.remove(b)  # no time: not remembered
    assert idx.returned() == {}  # a is away, not back
    idx.set(a, ["t"])
    idx.set(b, ["t"])
    assert idx.returned() == {a: 5.0}
    idx.caught_up([a])
    assert idx.returned() == {}
    idx.remove(c, 7.0)
    idx.remove(c, 9.0)  # not indexed any more: nothing changes
    idx.set(c, ["u"])
    assert idx.returned() == {c: 7.0}


def test_the_members_remembered_as_away_are_bounded() -> None:
    idx = Interests()
    ids = [i.to_bytes(16, "big") for i in range(MAX_AWAY + 10)]
    for k, node in enumerate(ids):
        idx.set(node, ["t"])
        idx.remove(node, float(k))
    for node in ids:
        idx.set(node, ["t"])
    back = idx.returned()
    assert len(back) == MAX_AWAY
    assert ids[0] not in back
    assert back[ids[-1]] == float(len(ids) - 1)
