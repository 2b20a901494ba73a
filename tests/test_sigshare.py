"""``testing.share_signature_checks``: simulations check each distinct signature once per
process; a bad one is refused every time, and the patch is undone."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from p2pnode.errors import RemoteProtocolError
from p2pnode.gossip.signing import Verifier, sign_batch
from p2pnode.members import records
from p2pnode.members.records import MemberBody, sign_member, verify_member
from p2pnode.testing import make_identity, share_signature_checks
from p2pnode.wire.messages import Item, SignedMember

IDENTITY = make_identity(random.Random(7))


def test_a_member_signature_is_checked_once_and_a_bad_one_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = records.check_signature

    def counting(*args: Any) -> None:
        calls.append(args)
        real(*args)

    monkeypatch.setattr(records, "check_signature", counting)
    record = sign_member(IDENTITY, MemberBody("n", [], 7, "", {}, 1, "alive", None))
    bad = SignedMember(record.key, record.body, bytes(64))
    undo = share_signature_checks()
    try:
        assert verify_member(record).name == "n"
        assert verify_member(record).name == "n"
        assert len(calls) == 1
        for _ in range(2):
            with pytest.raises(RemoteProtocolError):
                verify_member(bad)
        assert len(calls) == 3
    finally:
        undo()
    assert records.check_signature is counting
    verify_member(record)
    assert len(calls) == 4


def test_a_batch_signature_is_checked_once_and_a_bad_one_every_time() -> None:
    batch = sign_batch(IDENTITY, b"\x01" * 16, None, [Item(b"\x02" * 16, "t", b"x")])
    forged = msgspec.structs.replace(batch, sig=bytes(64))
    inner = Verifier.check_signed
    undo = share_signature_checks()
    try:
        assert Verifier.check_signed is not inner
        verifier = Verifier(1024)
        assert verifier.verify(batch).items[0].data == b"x"
        assert verifier.verify(batch).items[0].data == b"x"
        for _ in range(2):
            with pytest.raises(RemoteProtocolError):
                verifier.verify(forged)
    finally:
        undo()
    assert Verifier.check_signed is inner
