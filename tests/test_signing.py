"""Signed batches: sign_batch and Verifier, and what the router does with forgeries.

Every identity is made from a seeded random source (``make_identity``), so keys, node ids
and signatures are the same on every run.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from p2pnode.errors import RemoteProtocolError
from p2pnode.gossip.router import Deliver, Disconnect, Forward, Router
from p2pnode.gossip.signing import Verifier, sign_batch
from p2pnode.identity import NodeIdentity, node_id_of
from p2pnode.testing import make_identity
from p2pnode.wire.messages import (
    Batch,
    BatchBody,
    Graft,
    Item,
    decode_message,
    encode_body,
    encode_message,
)

from .gossip_sim import make_router

MAX_PAYLOAD = 1024
ALICE, BOB, CAROL, MALLORY, ME = (make_identity(random.Random(seed)) for seed in range(5))
NEIGHBOUR = b"\x07" * 16  # a peer the router has a link to (no key needed)
BID = b"\xb0" * 8 + (1).to_bytes(8, "big")


def msgs(n: int = 2, *, tag: str = "m") -> list[Item]:
    return [Item(bytes([0xA0 + i]) * 16, "chat", f"{tag} {i}".encode()) for i in range(n)]


def verify_error(batch: Batch, verifier: Verifier | None = None) -> str:
    """The code of the RemoteProtocolError verification raises."""
    with pytest.raises(RemoteProtocolError) as info:
        (verifier or Verifier(MAX_PAYLOAD)).verify(batch)
    assert type(info.value) is RemoteProtocolError
    return info.value.code


def signed_body(identity: NodeIdentity, body: BatchBody, *, batch_id: bytes | None = None,
                origin: bytes | None = None) -> Batch:
    """A batch carrying ``body``, correctly signed by ``identity``, whose outer id and origin
    may differ from the body's."""
    data = encode_body(body)
    return Batch(batch_id or body.id, origin or body.origin, 0, identity.public, data,
                 identity.sign(data))


# -- sign and verify --------------------------------------------------------------------------


def test_identities_are_deterministic_and_ids_are_key_hashes() -> None:
    again = make_identity(random.Random(0))
    assert again.public == ALICE.public
    assert ALICE.node_id == node_id_of(ALICE.public)
    assert len(ALICE.node_id) == 16
    assert len({i.node_id for i in (ALICE, BOB, CAROL, MALLORY, ME)}) == 5


@pytest.mark.parametrize("to", [None, b"\x42" * 16], ids=["flood", "direct"])
def test_sign_verify_round_trip(to: bytes | None) -> None:
    items = msgs(3)
    batch = sign_batch(ALICE, BID, to, items)
    assert (batch.id, batch.origin, batch.hops, batch.key) == (BID, ALICE.node_id, 0, ALICE.public)
    body = Verifier(MAX_PAYLOAD).verify(batch)
    assert body == BatchBody(BID, ALICE.node_id, to, items)
    # Through the wire codec and back: still verifies.
    again = decode_message(encode_message(batch)[4:])
    assert again == batch
    assert isinstance(again, Batch)
    assert Verifier(MAX_PAYLOAD).verify(again) == body


def test_an_empty_batch_verifies() -> None:
    assert Verifier(MAX_PAYLOAD).verify(sign_batch(ALICE, BID, None, [])).items == []


def test_hops_are_not_signed() -> None:
    # Forwarders count hops, so a changed hop count does not break the signature.
    batch = sign_batch(ALICE, BID, None, msgs())
    body = Verifier(MAX_PAYLOAD).verify(batch)
    for hops in (1, 16, 255):
        assert Verifier(MAX_PAYLOAD).verify(msgspec.structs.replace(batch, hops=hops)) == body


def test_payload_at_max_payload_verifies() -> None:
    batch = sign_batch(ALICE, BID, None, [Item(BID, "t", b"x" * MAX_PAYLOAD)])
    assert Verifier(MAX_PAYLOAD).verify(batch).items[0].data == b"x" * MAX_PAYLOAD


# -- what verification rejects ------------------------------------------------------------------


def test_modified_body_is_bad_signature() -> None:
    batch = sign_batch(ALICE, BID, None, msgs())
    flipped = bytearray(batch.body)
    flipped[-1] ^= 0x01  # the last byte of the last payload
    assert verify_error(msgspec.structs.replace(batch, body=bytes(flipped))) == "bad_signature"
    # A well-formed body with other messages, under the original signature.
    other = encode_body(BatchBody(BID, ALICE.node_id, None, msgs(tag="forged")))
    assert verify_error(msgspec.structs.replace(batch, body=other)) == "bad_signature"
    # The same messages redirected to one node.
    redirected = encode_body(BatchBody(BID, ALICE.node_id, BOB.node_id, msgs()))
    assert verify_error(msgspec.structs.replace(batch, body=redirected)) == "bad_signature"


@pytest.mark.parametrize("where", [0, 31, 32, 63])
def test_modified_sig_is_bad_signature(where: int) -> None:
    batch = sign_batch(ALICE, BID, None, msgs())
    sig = bytearray(batch.sig)
    sig[where] ^= 0x01
    assert verify_error(msgspec.structs.replace(batch, sig=bytes(sig))) == "bad_signature"


def test_signature_of_another_body_of_the_same_origin_is_bad_signature() -> None:
    a = sign_batch(ALICE, BID, None, msgs())
    b = sign_batch(ALICE, BID, None, msgs(tag="other"))
    assert verify_error(msgspec.structs.replace(a, sig=b.sig)) == "bad_signature"


def test_key_that_is_not_the_origins_is_bad_signature() -> None:
    # Mallory signs a batch claiming to be from Alice with her own key: the signature is
    # good for her key, but her key does not hash to Alice's node id.
    body = BatchBody(BID, ALICE.node_id, None, msgs(tag="forged"))
    forged = signed_body(MALLORY, body)
    assert forged.origin == ALICE.node_id
    assert forged.key == MALLORY.public
    assert verify_error(forged) == "bad_signature"
    # Alice's real key with Mallory's signature.
    assert verify_error(msgspec.structs.replace(forged, key=ALICE.public)) == "bad_signature"


def test_key_that_is_not_a_curve_point_is_bad_signature() -> None:
    # The origin may be claimed to be any key's hash, even of 32 bytes that are no key.
    for raw in (b"\xff" * 32, b"\x00" * 32, bytes(range(32))):
        batch = sign_batch(ALICE, BID, None, msgs())
        bogus = msgspec.structs.replace(batch, origin=node_id_of(raw), key=raw)
        assert verify_error(bogus) == "bad_signature"


def test_body_id_that_disagrees_with_the_batch_is_bad_message() -> None:
    # Correctly signed by Alice, but the batch claims another id than the signed one (a
    # replay of a signed body under a fresh id, to get past the seen-cache).
    body = BatchBody(BID, ALICE.node_id, None, msgs())
    assert verify_error(signed_body(ALICE, body, batch_id=b"\x01" * 16)) == "bad_message"


def test_body_origin_that_disagrees_with_the_batch_is_bad_message() -> None:
    body = BatchBody(BID, BOB.node_id, None, msgs())
    batch = signed_body(ALICE, body, origin=ALICE.node_id)  # outer: Alice (her key), inner: Bob
    assert batch.origin == ALICE.node_id
    assert verify_error(batch) == "bad_message"


@pytest.mark.parametrize(
    ("topic", "data", "code"),
    [
        ("bad\x00topic", b"d", "bad_message"),
        ("new\nline", b"d", "bad_message"),
        ("€" * 100, b"d", "bad_message"),  # 300 UTF-8 bytes
        ("ok", b"x" * (MAX_PAYLOAD + 1), "too_large"),
    ],
    ids=["nul", "newline", "topic-300-bytes", "payload-over-max"],
)
def test_bad_item_signed_by_its_origin_is_rejected(topic: str, data: bytes, code: str) -> None:
    # The origin's signature is good: the contents are checked after it.
    batch = sign_batch(ALICE, BID, None, [*msgs(), Item(BID, topic, data)])
    assert verify_error(batch) == code


def test_body_that_is_not_a_batch_body_is_bad_message() -> None:
    for data in (b"", b"\xc1", msgspec.msgpack.encode({"id": BID}), msgspec.msgpack.encode([1])):
        batch = Batch(BID, ALICE.node_id, 0, ALICE.public, data, ALICE.sign(data))
        assert verify_error(batch) == "bad_message"


def test_max_payload_is_the_verifiers() -> None:
    batch = sign_batch(ALICE, BID, None, [Item(BID, "t", b"x" * 100)])
    assert Verifier(100).verify(batch).items[0].data == b"x" * 100
    assert verify_error(batch, Verifier(99)) == "too_large"


# -- the key cache ----------------------------------------------------------------------------


def outcome(verifier: Verifier, batch: Batch) -> BatchBody | str:
    try:
        return verifier.verify(batch)
    except RemoteProtocolError as exc:
        return exc.code


def test_results_do_not_depend_on_the_key_cache() -> None:
    # Origins alternate, so a cache of one key misses (and evicts) on every batch; the same
    # batches go through a large cache and a fresh verifier each. Forgeries are mixed in
    # right after the key they abuse was cached.
    batches: list[Batch] = []
    for k in range(4):
        for origin, other in ((ALICE, BOB), (BOB, CAROL), (CAROL, ALICE)):
            bid = bytes([k]) * 8 + origin.node_id[:8]
            good = sign_batch(origin, bid, None, msgs(tag=f"{k}"))
            batches.append(good)
            # Another origin's (cached) key under this origin's id.
            batches.append(msgspec.structs.replace(good, key=other.public))
            # This origin's (cached) key, another origin's signature.
            foreign = sign_batch(other, bid, None, msgs(tag=f"{k}"))
            batches.append(msgspec.structs.replace(good, sig=foreign.sig))
            # A changed body under the cached key.
            batches.append(msgspec.structs.replace(good, body=foreign.body))
            # The other origin's (cached) key, with its own good signature over a body
            # that claims this origin.
            claim = BatchBody(bid, origin.node_id, None, msgs(tag="claim"))
            batches.append(signed_body(other, claim))
    small, large = Verifier(MAX_PAYLOAD, cache_size=1), Verifier(MAX_PAYLOAD)
    first = [outcome(small, b) for b in batches]
    assert first == [outcome(large, b) for b in batches]
    assert first == [outcome(Verifier(MAX_PAYLOAD), b) for b in batches]
    # In the other order, the cache holds other keys at each step: the same results.
    assert [outcome(small, b) for b in reversed(batches)] == first[::-1]
    assert [isinstance(o, BatchBody) for o in first] == [True, False, False, False, False] * 12
    assert {o for o in first if not isinstance(o, BatchBody)} == {"bad_signature"}


def test_a_cache_of_zero_keys_still_verifies() -> None:
    verifier = Verifier(MAX_PAYLOAD, cache_size=0)
    batch = sign_batch(ALICE, BID, None, msgs())
    assert verifier.verify(batch) == verifier.verify(batch)
    assert verify_error(msgspec.structs.replace(batch, key=BOB.public), verifier) == (
        "bad_signature"
    )


# -- the router and forgeries ---------------------------------------------------------------


def router() -> Router:
    return make_router(ME.node_id, peers=(NEIGHBOUR, BOB.node_id))


def forgeries(genuine: Batch) -> dict[str, Batch]:
    """Copies of ``genuine`` (same id and origin) that must not pass."""
    other = encode_body(BatchBody(genuine.id, genuine.origin, None, msgs(tag="forged")))
    mallory = signed_body(
        MALLORY, BatchBody(genuine.id, genuine.origin, None, msgs(tag="forged"))
    )
    sig = bytearray(genuine.sig)
    sig[5] ^= 0x80
    return {
        "changed-body": msgspec.structs.replace(genuine, body=other),
        "changed-sig": msgspec.structs.replace(genuine, sig=bytes(sig)),
        "mallorys-key": mallory,
        "bad-item": signed_body(
            ALICE, BatchBody(genuine.id, genuine.origin, None, [Item(BID, "", b"")])
        ),
    }


@pytest.mark.parametrize("kind", ["changed-body", "changed-sig", "mallorys-key", "bad-item"])
def test_router_drops_a_forged_copy_first_then_accepts_the_genuine(kind: str) -> None:
    r = router()
    verify = Verifier(MAX_PAYLOAD).verify
    genuine = msgspec.structs.replace(sign_batch(ALICE, BID, None, msgs()), hops=1)
    forged = forgeries(genuine)[kind]
    assert (forged.id, forged.origin) == (genuine.id, genuine.origin)

    # Not delivered, not forwarded; a forged signature is the sender's fault: the verdict
    # is to close its link.
    verdict = [] if kind == "bad-item" else [Disconnect(NEIGHBOUR, "bad_signature")]
    assert r.on_batch(forged, NEIGHBOUR, 0.0, verify) == verdict
    assert r.stats.rejected == 1
    assert (r.stats.delivered, r.stats.forwarded, r.stats.duplicates) == (0, 0, 0)
    assert len(r.seen) == 0  # not remembered
    # A second forged copy costs a second check, and is rejected again.
    assert r.on_batch(forged, NEIGHBOUR, 0.2, verify) == verdict
    assert r.stats.rejected == 2

    actions = r.on_batch(genuine, BOB.node_id, 0.3, verify)
    assert actions == [
        Deliver(genuine, verify(genuine)),
        Forward(msgspec.structs.replace(genuine, hops=2), (NEIGHBOUR,)),
    ]
    assert (r.stats.rejected, r.stats.delivered, r.stats.forwarded) == (2, 2, 1)
    # Now the genuine batch is seen: further copies, forged or not, are duplicates.
    assert r.on_batch(forged, NEIGHBOUR, 0.4, verify) == []
    assert r.on_batch(genuine, NEIGHBOUR, 0.5, verify) == []
    assert (r.stats.duplicates, r.stats.rejected) == (2, 2)


def test_router_rejects_a_batch_whose_body_disagrees_and_still_takes_the_genuine() -> None:
    # Alice's genuine signed body replayed under a fresh batch id must not consume that id.
    r = router()
    verify = Verifier(MAX_PAYLOAD).verify
    genuine = sign_batch(ALICE, BID, None, msgs())
    replay = msgspec.structs.replace(genuine, id=b"\x99" * 16)
    assert r.on_batch(replay, NEIGHBOUR, 0.0, verify) == []
    assert r.stats.rejected == 1
    assert len(r.seen) == 0
    fresh = sign_batch(ALICE, b"\x99" * 16, None, msgs(tag="real"))
    assert r.on_batch(fresh, NEIGHBOUR, 0.1, verify)[0] == Deliver(fresh, verify(fresh))


def test_a_valid_batch_of_another_origin_with_the_same_id_does_not_shadow() -> None:
    r = router()
    verify = Verifier(MAX_PAYLOAD).verify
    genuine = sign_batch(ALICE, BID, None, msgs())
    squatter = sign_batch(MALLORY, BID, None, msgs(tag="squat"))  # valid: Mallory's own
    assert r.on_batch(squatter, NEIGHBOUR, 0.0, verify)  # delivered: it is genuine too
    actions = r.on_batch(genuine, BOB.node_id, 0.1, verify)
    assert Deliver(genuine, verify(genuine)) in actions


# -- batches straight from their origin over an authenticated link ---------------------------


class SignatureCounter:
    """A ``Verifier`` that counts full checks and body-only checks apart."""

    def __init__(self) -> None:
        self.verifier = Verifier(MAX_PAYLOAD)
        self.full = 0
        self.body_only = 0

    def __call__(self, batch: Batch, *, check_signature: bool = True) -> BatchBody:
        if check_signature:
            self.full += 1
        else:
            self.body_only += 1
        return self.verifier.verify(batch, check_signature=check_signature)


def direct(batch: Batch) -> Batch:
    return msgspec.structs.replace(batch, hops=1)


def test_direct_batch_on_an_authenticated_link_is_delivered_before_its_signature_is_checked(
) -> None:
    # Only the origin is linked: nobody to pass it on to, so no signature check at all.
    r = make_router(ME.node_id, peers=(ALICE.node_id,))
    v = SignatureCounter()
    b = direct(sign_batch(ALICE, BID, None, msgs()))
    actions = r.on_batch(b, ALICE.node_id, 0.0, v, authenticated=True)
    assert actions == [Deliver(b, v.verifier.verify(b))]
    assert (v.full, v.body_only) == (0, 1)
    # With a second peer, it is checked once, before it is forwarded.
    r2 = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
    v2 = SignatureCounter()
    actions = r2.on_batch(b, ALICE.node_id, 0.0, v2, authenticated=True)
    assert actions[1] == Forward(msgspec.structs.replace(b, hops=2), (BOB.node_id,))
    assert (v2.full, v2.body_only) == (1, 1)
    # Not from its origin, or not over an authenticated link: checked first, as always.
    for peer, auth in ((BOB.node_id, True), (ALICE.node_id, False)):
        r3 = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
        v3 = SignatureCounter()
        r3.on_batch(b, peer, 0.0, v3, authenticated=auth)
        assert (v3.full, v3.body_only) == (1, 0)


def test_direct_batch_with_a_bad_signature_is_delivered_but_never_passed_on() -> None:
    # The link proves the origin sent it, so its own messages are delivered; but the next
    # node could not check that, so it goes no further (and the node closes the link).
    genuine = direct(sign_batch(ALICE, BID, None, msgs()))
    sig = bytearray(genuine.sig)
    sig[3] ^= 1
    bad = msgspec.structs.replace(genuine, sig=bytes(sig))
    r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id))
    v = SignatureCounter()
    actions = r.on_batch(bad, ALICE.node_id, 0.0, v, authenticated=True)
    assert [type(a) for a in actions] == [Deliver, Disconnect]
    assert actions[1] == Disconnect(ALICE.node_id, "bad_signature")
    assert (r.stats.rejected, r.stats.forwarded) == (1, 0)
    # It left history: asked for it by Graft, the node has nothing to serve (and does not
    # blame the asker).
    assert r.on_message(Graft([bad.origin + bad.id]), BOB.node_id, 0.1, v) == []
    assert (r.stats.rejected, r.stats.graft_misses) == (1, 1)
    assert len(r.history) == 0


def test_direct_batches_are_forwarded_with_history_off_and_forgeries_never_announced() -> None:
    good = direct(sign_batch(ALICE, BID, None, msgs()))
    r = make_router(ME.node_id, peers=(ALICE.node_id, BOB.node_id), history_batches=0)
    actions = r.on_batch(good, ALICE.node_id, 0.0, SignatureCounter(), authenticated=True)
    assert [type(a) for a in actions] == [Deliver, Forward]
    # A forged one, with the only other peer lazy for Alice: not even announced.
    other = direct(sign_batch(ALICE, b"\x77" * 16, None, msgs(tag="other")))
    sig = bytearray(other.sig)
    sig[0] ^= 1
    bad = msgspec.structs.replace(other, sig=bytes(sig))
    r2 = make_router(ME.node_id, mode="tree", peers=(ALICE.node_id, BOB.node_id))
    r2.on_batch(good, ALICE.node_id, 0.0, SignatureCounter(), authenticated=True)
    r2.trees.lazy_for(ALICE.node_id).add(BOB.node_id)
    r2.take_announcements()
    actions = r2.on_batch(bad, ALICE.node_id, 0.1, SignatureCounter(), authenticated=True)
    assert actions[1:] == [Disconnect(ALICE.node_id, "bad_signature")]
    assert [type(a) for a in actions] == [Deliver, Disconnect]
    assert not r2.has_announcements


def test_libsodium_signs_the_same_bytes_as_openssl_and_each_checks_the_other() -> None:
    # NodeIdentity.sign goes through libsodium (PyNaCl), the certificates through
    # cryptography (OpenSSL): the same key, and Ed25519 is deterministic, so a batch
    # signed by either is the same, and a node on either library accepts the other's.
    from nacl.signing import VerifyKey

    data = encode_body(BatchBody(BID, ALICE.node_id, None, msgs()))
    sig = ALICE.sign(data)
    assert sig == ALICE.key.sign(data)
    ALICE.key.public_key().verify(sig, data)  # OpenSSL accepts libsodium's
    VerifyKey(ALICE.public).verify(data, ALICE.key.sign(data))  # and the other way


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33])
def test_key_of_the_wrong_length_is_bad_signature(raw: bytes) -> None:
    batch = sign_batch(ALICE, BID, None, msgs())
    bogus = msgspec.structs.replace(batch, origin=node_id_of(raw), key=raw)
    assert verify_error(bogus) == "bad_signature"
