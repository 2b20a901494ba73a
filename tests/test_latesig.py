"""Batches sent ahead of their signature (``BatchSig``, protocol 6): delivered at once,
passed on and stored only once the signature came, and checked before they go on."""

from __future__ import annotations

import random

import msgspec

from p2pnode.gossip.latesig import LateSignatures
from p2pnode.gossip.router import Deliver, Disconnect, Forward, Router
from p2pnode.gossip.signing import Verifier, make_batch
from p2pnode.testing import make_identity
from p2pnode.wire.messages import (
    NO_SIG,
    Batch,
    BatchBody,
    BatchSig,
    Graft,
    Item,
    decode_message,
    encode_message,
)

from .gossip_sim import make_router

ALICE, BOB, ME = (make_identity(random.Random(seed)) for seed in (10, 11, 12))
V = Verifier(1024).verify


def batch_ahead(seq: int = 1, *, retain: int = 0, to: bytes | None = None) -> tuple[Batch, bytes]:
    """A batch of Alice's as she sends it ahead (hops 1 on arrival), and its signature."""
    bid = bytes([0xB0 + seq]) * 16
    batch, _ = make_batch(ALICE, bid, to, [Item(bytes([seq]) * 16, "chat", b"hi")],
                          epoch=7, seq=seq, retain=retain)
    return msgspec.structs.replace(batch, hops=1, sig=NO_SIG), batch.sig


def kept_by(r: Router) -> list[tuple[Batch, BatchBody, float]]:
    kept: list[tuple[Batch, BatchBody, float]] = []
    r.on_kept = lambda b, body, age: kept.append((b, body, age))
    return kept


def test_a_batch_ahead_is_delivered_then_passed_on_and_stored_once_signed() -> None:
    r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
    kept = kept_by(r)
    batch, sig = batch_ahead()
    actions = r.on_batch(batch, ALICE.node_id, 0.0, V, authenticated=True)
    assert [type(a) for a in actions] == [Deliver]  # not passed on, not stored yet
    assert kept == []
    assert r.stats.forwarded == 0
    # Asked for by Graft meanwhile: nothing to serve (never an unsigned batch).
    assert r.on_message(Graft([batch.origin + batch.id]), BOB.node_id, 0.05, V) == []
    actions = r.on_message(BatchSig(batch.id, sig), ALICE.node_id, 0.1, V)
    signed = msgspec.structs.replace(batch, sig=sig)
    assert actions == [Forward(msgspec.structs.replace(signed, hops=2), (BOB.node_id,))]
    assert [k[0] for k in kept] == [signed]
    entry = r.history.get(batch.origin + batch.id)
    assert entry is not None
    assert entry.batch == signed
    assert entry.verified
    # A second BatchSig for it changes nothing.
    assert r.on_message(BatchSig(batch.id, sig), ALICE.node_id, 0.2, V) == []
    assert len(r.late) == 0


def test_a_batch_sig_that_does_not_match_closes_the_link_and_the_batch_goes_nowhere() -> None:
    r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
    kept = kept_by(r)
    batch, sig = batch_ahead()
    r.on_batch(batch, ALICE.node_id, 0.0, V, authenticated=True)
    forged = bytes([sig[0] ^ 1]) + sig[1:]
    actions = r.on_message(BatchSig(batch.id, forged), ALICE.node_id, 0.1, V)
    assert actions == [Disconnect(ALICE.node_id, "bad_signature")]
    assert (r.stats.rejected, r.stats.forwarded) == (1, 0)
    assert kept == []
    assert len(r.history) == 0
    # The right one, later, finds nothing waiting.
    assert r.on_message(BatchSig(batch.id, sig), ALICE.node_id, 0.2, V) == []


def test_only_the_origin_over_an_authenticated_link_may_send_a_batch_ahead() -> None:
    batch, _ = batch_ahead()
    relayed = msgspec.structs.replace(batch, hops=2)
    for sender, auth, b in ((ALICE.node_id, False, batch), (BOB.node_id, True, relayed)):
        r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
        actions = r.on_batch(b, sender, 0.0, V, authenticated=auth)
        assert actions == [Disconnect(sender, "bad_signature")]
        assert r.stats.delivered == 0
    # Nor an unnumbered batch (requests) or one of retained messages.
    for b in (batch_ahead(0)[0], batch_ahead(2, retain=5)[0]):
        r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
        actions = r.on_batch(b, ALICE.node_id, 0.0, V, authenticated=True)
        assert actions == [Disconnect(ALICE.node_id, "bad_signature")]
        assert r.stats.delivered == 0


def test_with_nobody_to_pass_it_on_to_the_signature_is_kept_unchecked() -> None:
    # As with any batch straight from its origin: checked only before it goes on.
    r = make_router(ME.node_id, peers=(ALICE.node_id,))
    kept = kept_by(r)
    batch, sig = batch_ahead()
    r.on_batch(batch, ALICE.node_id, 0.0, V, authenticated=True)
    assert r.on_message(BatchSig(batch.id, sig), ALICE.node_id, 0.1, V) == []
    assert [k[0].sig for k in kept] == [sig]
    entry = r.history.get(batch.origin + batch.id)
    assert entry is not None
    assert not entry.verified


def test_history_off_still_passes_it_on_and_a_closed_link_forgets_what_waits() -> None:
    r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id), history_batches=0)
    batch, sig = batch_ahead()
    r.on_batch(batch, ALICE.node_id, 0.0, V, authenticated=True)
    actions = r.on_message(BatchSig(batch.id, sig), ALICE.node_id, 0.1, V)
    assert [type(a) for a in actions] == [Forward]
    r2 = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
    r2.on_batch(batch, ALICE.node_id, 0.0, V, authenticated=True)
    r2.peer_down(ALICE.node_id)
    assert len(r2.late) == 0
    assert len(r2.history) == 0


def test_waiting_batches_are_bounded() -> None:
    late = LateSignatures(limit=2)
    batches = [batch_ahead(seq)[0] for seq in (1, 2, 3)]
    dropped = [late.add(b, ALICE.node_id)[1] for b in batches]
    assert dropped == [None, None, batches[0].origin + batches[0].id]
    assert len(late) == 2


def test_batch_sig_round_trips_on_the_wire() -> None:
    msg = BatchSig(b"\x01" * 16, b"\x02" * 64)
    assert decode_message(encode_message(msg)[4:]) == msg
