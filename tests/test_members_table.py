"""The pure member list: records and claims (signatures, bounds), the SWIM merge rules,
refutation, the table's bounds and the detector's timeouts (docs/protocol.md,
"Membership"; docs/failures.md)."""

from __future__ import annotations

import random

import msgspec
import pytest

from p2pnode.config.tags import tags_problem
from p2pnode.errors import RemoteProtocolError
from p2pnode.identity import NodeIdentity
from p2pnode.members import MemberInfo, MemberLimits, Membership
from p2pnode.members.detector import Detector, DetectorConfig
from p2pnode.members.records import (
    ClaimBody,
    MemberBody,
    sign_claim,
    sign_member,
)
from p2pnode.testing import make_identity
from p2pnode.wire.messages import (
    Members,
    ProbeAck,
    SignedMember,
    decode_message,
    encode_message,
)

IDS = [make_identity(random.Random(1000 + i)) for i in range(6)]


def record(who: NodeIdentity, inc: int = 10, state: str = "alive", **tags: str):  # type: ignore[no-untyped-def]
    body = MemberBody("m", ["mem:1"], 6, "open", tags, inc, state)  # type: ignore[arg-type]
    return sign_member(who, body)


def claim(by: NodeIdentity, about: NodeIdentity, inc: int = 10, state: str = "suspect"):  # type: ignore[no-untyped-def]
    return sign_claim(by, ClaimBody(about.node_id, inc, state))  # type: ignore[arg-type]


def service(who: NodeIdentity = IDS[0], **limits: int) -> tuple[Membership, list[tuple[str, str]]]:
    me = MemberInfo(who.node_id, "me", ["mem:9"], 6, "open", incarnation=5, this_node=True)
    ms = Membership(me, identity=who, limits=MemberLimits(**limits), seed=1)
    events: list[tuple[str, str]] = []
    ms.add_listener(lambda kind, m: events.append((kind, m.node_id.hex()[:4])))
    return ms, events


def state_of(ms: Membership, who: NodeIdentity) -> tuple[str, int]:
    entry = ms.table.entries[who.node_id]
    return entry.info.state, entry.info.incarnation


def test_the_merge_rules() -> None:
    ms, events = service()
    a = IDS[1]
    ms.receive(Members([record(a, 10)]), b"p" * 16, 0.0)
    assert state_of(ms, a) == ("alive", 10)
    ms.receive(Members([], [claim(IDS[2], a, 10)]), b"p" * 16, 1.0)
    assert state_of(ms, a) == ("suspect", 10)  # suspect(i) beats alive(i)
    ms.receive(Members([record(a, 10)]), b"p" * 16, 1.5)
    assert state_of(ms, a) == ("suspect", 10)  # ... and the same alive does not undo it
    ms.receive(Members([record(a, 11)]), b"p" * 16, 2.0)
    assert state_of(ms, a) == ("alive", 11)  # alive(i+1) beats suspect(i)
    ms.receive(Members([], [claim(IDS[2], a, 11, "dead")]), b"p" * 16, 3.0)
    assert state_of(ms, a) == ("dead", 11)
    ms.receive(Members([], [claim(IDS[3], a, 11, "suspect")]), b"p" * 16, 3.0)
    assert state_of(ms, a) == ("dead", 11)  # dead(i) beats suspect(i)
    ms.receive(Members([record(a, 12, "left")]), b"p" * 16, 4.0)
    assert state_of(ms, a) == ("left", 12)
    kinds = [k for k, _ in events]
    assert kinds == ["member_join", "member_suspect", "member_update", "member_dead",
                     "member_left"]


def test_what_cannot_change_the_table_is_dropped_before_its_signature_is_checked() -> None:
    ms, _ = service()
    a = IDS[1]
    good = record(a, 10)
    ms.receive(Members([good]), b"p" * 16, 0.0)
    forged = msgspec.structs.replace(good, sig=bytes(64))
    ms.receive(Members([forged]), b"p" * 16, 0.0)  # the same incarnation: stale, unchecked
    assert ms.table.stats.stale == 1
    assert ms.table.stats.bad_signature == 0
    newer = record(a, 11)
    with pytest.raises(RemoteProtocolError) as info:
        ms.receive(Members([msgspec.structs.replace(newer, sig=bytes(64))]), b"p" * 16, 0.0)
    assert info.value.code == "bad_signature"
    assert state_of(ms, a) == ("alive", 10)
    # A record signed by another key than its own is refused the same way.
    stolen = msgspec.structs.replace(newer, key=IDS[2].public)
    with pytest.raises(RemoteProtocolError):
        ms.receive(Members([stolen]), b"p" * 16, 0.0)
    # A forged claim too.
    bad_claim = msgspec.structs.replace(claim(IDS[2], a, 10), sig=bytes(64))
    with pytest.raises(RemoteProtocolError):
        ms.receive(Members([], [bad_claim]), b"p" * 16, 0.0)
    assert state_of(ms, a) == ("alive", 10)
    assert ms.table.stats.bad_signature == 3


def test_the_callers_limit_is_asked_before_each_signature_check_only() -> None:
    """``allow`` (the link's rate limit) is asked only for what needs a signature check;
    what it refuses is dropped unchecked and counted, the rest is taken."""
    ms, _ = service()
    asked: list[int] = []

    def allow() -> bool:
        asked.append(1)
        return len(asked) <= 2

    items = [record(IDS[1]), record(IDS[2]), record(IDS[1]), record(IDS[3])]
    forged = msgspec.structs.replace(claim(IDS[1], IDS[2]), sig=bytes(64))
    assert ms.receive(Members(items, [forged]), b"p" * 16, 0.0, allow=allow) == 2
    assert len(asked) == 4  # not for the copy of IDS[1]'s record
    assert IDS[1].node_id in ms.table.entries
    assert IDS[2].node_id in ms.table.entries
    assert IDS[3].node_id not in ms.table.entries
    assert (ms.table.stats.limited, ms.table.stats.stale) == (2, 1)
    assert ms.table.stats.bad_signature == 0  # the forged claim was not checked
    assert [item for item, _ in ms.outbox] == items[:2]


def test_a_suspected_node_refutes_with_a_higher_incarnation() -> None:
    ms, _ = service()
    me = IDS[0]
    ms.outbox.clear()
    ms.receive(Members([], [claim(IDS[1], me, 5, "suspect")]), b"p" * 16, 0.0)
    assert ms.me.incarnation == 6
    assert ms.me.state == "alive"
    assert ms.refutations == 1
    [(item, source)] = ms.outbox
    assert source is None
    other, _ = service(IDS[1])
    other.receive(Members([item]), b"q" * 16, 0.0)  # type: ignore[list-item]
    assert state_of(other, me) == ("alive", 6)
    # A stale claim (an older incarnation) changes nothing.
    ms.receive(Members([], [claim(IDS[1], me, 5, "dead")]), b"p" * 16, 0.0)
    assert ms.me.incarnation == 6


def test_records_and_tags_are_bounded() -> None:
    assert tags_problem({"role": "display"}) is None
    assert tags_problem({"bad key": "x"}) is not None
    assert tags_problem({"k": "v" * 257}) is not None
    assert tags_problem({f"k{i}": "v" for i in range(33)}) is not None
    ms, _ = service()
    with pytest.raises(ValueError, match="tag key"):
        ms.set_tags({"a b": "c"})
    assert ms.me.tags == {}
    with pytest.raises(ValueError, match="at most 4096 bytes"):
        sign_member(IDS[1], MemberBody("m", [], 6, "open", {f"k{i}": "v" * 256 for i in range(20)},
                                       1))
    # Bodies over the bounds do not decode: a frame with one does not get through.
    body = MemberBody("m", ["a:1"] * 9, 6, "open", {}, 1)
    data = msgspec.msgpack.encode(body)
    over = SignedMember(IDS[1].public, data, IDS[1].sign(b"p2pnode member record\x00" + data))
    ms2, _ = service()
    with pytest.raises(RemoteProtocolError):
        ms2.receive(Members([over]), b"p" * 16, 0.0)
    frame = encode_message(Members([record(IDS[1])] * 65))
    with pytest.raises(RemoteProtocolError):
        decode_message(frame[4:])


@pytest.mark.parametrize("tags", [{"role\n": "x"}, {"role": "a\nb"}, {"k" * 65: "x"}])
def test_a_signed_record_with_tags_the_api_refuses_is_refused(tags: dict[str, str]) -> None:
    # A member that signs its own record with tags no node may set (a key ending in a
    # newline, a value with one) does not get them into other nodes' tables.
    data = msgspec.msgpack.encode(MemberBody("m", ["mem:1"], 6, "open", tags, 11))
    forged = SignedMember(IDS[1].public, data, IDS[1].sign(b"p2pnode member record\x00" + data))
    ms, _ = service()
    with pytest.raises(RemoteProtocolError, match=r"bad_message|tag"):
        ms.receive(Members([forged]), b"p" * 16, 0.0)
    assert IDS[1].node_id not in {m.node_id for m in ms.members()}


def test_a_full_table_refuses_new_members_and_never_evicts_a_live_one() -> None:
    ms, _ = service(max_members=4)
    fakes = [make_identity(random.Random(5000 + i)) for i in range(10)]
    for fake in fakes:
        ms.receive(Members([record(fake)]), b"p" * 16, 0.0)
    assert len(ms.members()) == 4  # this node and three others
    assert ms.table.stats.refused == 7
    # A dead member makes room for a new one; a live one never does.
    ms.receive(Members([], [claim(IDS[2], fakes[0], 10, "dead")]), b"p" * 16, 1.0)
    ms.receive(Members([record(IDS[3])]), b"p" * 16, 2.0)
    assert IDS[3].node_id in ms.table.entries
    assert fakes[0].node_id not in ms.table.entries
    # Dead and left members are forgotten after ``reap``.
    ms.receive(Members([], [claim(IDS[2], fakes[1], 10, "dead")]), b"p" * 16, 3.0)
    ms.tick(3.0 + ms.limits.reap)
    assert fakes[1].node_id not in ms.table.entries


def test_digest_answer_and_hash() -> None:
    a, _ = service(IDS[0])
    b, _ = service(IDS[1])
    for who in IDS[2:5]:
        a.receive(Members([record(who)]), b"p" * 16, 0.0)
    a.receive(Members([], [claim(IDS[5], IDS[2], 10)]), b"p" * 16, 0.0)
    assert a.summary() != b.summary()
    for frame in a.answer(b.digest()):
        b.receive(frame, b"a" * 16, 0.0)
    for frame in b.answer(a.digest()):
        a.receive(frame, b"b" * 16, 0.0)
    assert a.summary() == b.summary()
    assert a.summary().count == 5
    assert state_of(b, IDS[2]) == ("suspect", 10)
    assert a.answer(b.digest()) == []


def test_suspicion_times_out_into_dead_faster_with_confirmations() -> None:
    det = Detector(DetectorConfig(suspicion_min=1.5, suspicion_mult=3.0), random.Random(1))
    assert det.suspicion_timeout(9, 0) == pytest.approx(3.0)
    assert det.suspicion_timeout(9, 3) == pytest.approx(1.5)
    assert 1.5 < det.suspicion_timeout(9, 1) < 3.0
    assert det.suspicion_timeout(999, 0) == pytest.approx(9.0)
    ms, events = service()
    a = IDS[1]
    ms.receive(Members([record(a)]), b"p" * 16, 0.0)
    reqs = ms.detector.start_probe(a.node_id, [IDS[2].node_id, IDS[3].node_id], 0.0)
    assert len(reqs) == 2
    assert not ms.detector.on_ack(ProbeAck(a.node_id, reqs[0][1].nonce, False), IDS[2].node_id)
    ms.tick(0.4)
    assert state_of(ms, a) == ("alive", 10)
    ms.tick(0.5)  # no one vouched for it within probe_timeout
    assert state_of(ms, a) == ("suspect", 10)
    timeout = ms.detector.suspicion_timeout(2, 0)  # two live members: this node and a
    assert timeout == pytest.approx(1.5)
    ms.tick(0.5 + timeout - 0.01)
    assert state_of(ms, a) == ("suspect", 10)
    ms.tick(0.5 + timeout)
    assert state_of(ms, a) == ("dead", 10)
    assert [k for k, _ in events] == ["member_join", "member_suspect", "member_dead"]


def test_an_alive_answer_clears_a_probe() -> None:
    ms, _ = service()
    a = IDS[1]
    ms.receive(Members([record(a)]), b"p" * 16, 0.0)
    [(helper, req)] = ms.detector.start_probe(a.node_id, [IDS[2].node_id], 0.0)
    assert not ms.detector.on_ack(ProbeAck(a.node_id, req.nonce + 1, True), helper)  # wrong nonce
    assert ms.detector.on_ack(ProbeAck(a.node_id, req.nonce, True), helper)
    ms.tick(5.0)
    assert state_of(ms, a) == ("alive", 10)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_members", 0, "max_members must be 1-6000"),
    ("max_members", 6001, "max_members must be 1-6000"),
    ("member_rate", 0.0, "member_rate must be greater than 0"),
    ("member_sync_interval", -1.0, "member_sync_interval must be greater than 0"),
    ("member_reap", 0.0, "member_reap must be greater than 0"),
    ("probe_k", 17, "probe_k must be 0-16"),
    ("probe_timeout", 0.0, "probe_timeout must be greater than 0"),
    ("suspicion_min", 0.0, "suspicion_min must be greater than 0"),
    ("suspicion_mult", -1.0, "suspicion_mult must be 0-100"),
])
def test_member_settings_are_checked(field: str, value: float, message: str) -> None:
    from p2pnode.config import NodeConfig
    from p2pnode.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        NodeConfig(**{field: value})  # type: ignore[arg-type]


def test_frames_stay_within_the_smallest_frame_whatever_the_records() -> None:
    from p2pnode.config.settings import MIN_FRAME
    from p2pnode.members.service import pack

    big = [sign_member(make_identity(random.Random(300 + i)),
                       MemberBody("m", ["h:1"], 6, "open",
                                  {f"k{j}": "v" * 100 for j in range(32)}, 1))
           for i in range(64)]
    small = [record(make_identity(random.Random(400 + i))) for i in range(150)]
    claims = [claim(IDS[1], IDS[2], i) for i in range(70)]
    for records in (big, small):
        frames = pack(records, claims)
        assert [r for f in frames for r in f.records] == records
        assert [c for f in frames for c in f.claims] == claims
        for frame in frames:
            assert len(encode_message(frame)) < MIN_FRAME
            assert len(frame.records) <= 64
    assert len(pack(small, [])) == 3
    assert pack([], []) == []

