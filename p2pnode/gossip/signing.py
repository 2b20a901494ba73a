"""Signed batches: an origin signs a batch of its messages once; every node verifies it
once, before it forwards or delivers any of it.

Ed25519 through libsodium (PyNaCl) costs about 20 us to sign and 65 us to verify
here (OpenSSL's, through ``cryptography``, about twice that), so signing every
message would cap a node near 10,000-20,000 messages/s; a batch of a few hundred
messages spreads that over all of them (docs/security.md has the measured cost per
message).
"""

from __future__ import annotations

from collections import OrderedDict

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..errors import RemoteProtocolError
from ..identity.keypair import NodeIdentity, node_id_of
from ..wire.messages import Batch, BatchBody, Item, decode_body, encode_body


def sign_batch(identity: NodeIdentity, batch_id: bytes, to: bytes | None,
               items: list[Item], *, epoch: int = 0, seq: int = 0, retain: int = 0) -> Batch:
    """Make a batch of ``items`` from ``identity``, signed, with hops 0 (``retain``: the
    stamp of a batch of retained messages, 0 for ordinary ones)."""
    return make_batch(identity, batch_id, to, items, epoch=epoch, seq=seq, retain=retain)[0]


def make_batch(identity: NodeIdentity, batch_id: bytes, to: bytes | None,
               items: list[Item], *, epoch: int = 0, seq: int = 0,
               retain: int = 0, tprev: int | None = None) -> tuple[Batch, BatchBody]:
    """Like ``sign_batch``, and also return the body that was signed (``tprev``: a
    routed batch's previous ``seq`` on its topic, see ``BatchBody``)."""
    body = BatchBody(id=batch_id, origin=identity.node_id, to=to, items=items,
                     epoch=epoch, seq=seq, retain=retain, tprev=tprev)
    data = encode_body(body)
    return Batch(id=batch_id, origin=identity.node_id, hops=0, key=identity.public,
                 body=data, sig=identity.sign(data)), body


class Verifier:
    """Checks batches, keeping parsed public keys of recent origins (bounded).

    Args:
        max_payload: largest message payload accepted, in bytes.
        cache_size: how many origins' keys are kept parsed.
    """

    def __init__(self, max_payload: int, cache_size: int = 4096) -> None:
        self.max_payload = max_payload
        self._keys: OrderedDict[bytes, VerifyKey] = OrderedDict()
        self._cache_size = cache_size

    def _key(self, raw: bytes) -> VerifyKey:
        key = self._keys.get(raw)
        if key is None:
            key = VerifyKey(raw)
            self._keys[raw] = key
            if len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(raw)
        return key

    def verify(self, batch: Batch, *, check_signature: bool = True) -> BatchBody:
        """The batch's body, if its signature and contents are good.

        With ``check_signature=False`` only the body is checked (the caller knows the
        sender by other means and checks the signature later, before passing the batch
        on). Raises ``RemoteProtocolError``: ``bad_signature`` (wrong key for the origin,
        signature does not match the body) or ``bad_message``/``too_large`` (a body
        that does not agree with the batch or breaks the limits).
        """
        if check_signature:
            self._check_signature(batch)
        body = decode_body(batch.body, self.max_payload)
        if body.id != batch.id or body.origin != batch.origin:
            raise RemoteProtocolError("bad_message", "the batch does not match its body")
        return body

    def _check_signature(self, batch: Batch) -> None:
        self.check_signed(batch.key, batch.origin, batch.body, batch.sig)

    def check_signed(self, key: bytes, signer: bytes, data: bytes, sig: bytes) -> None:
        """Check that ``sig`` is ``signer``'s signature of ``data``: ``key`` (raw Ed25519)
        must be the key of the node id ``signer``. Raises ``RemoteProtocolError
        ("bad_signature")``. (Batches, and replies: ``gossip.replies``.)"""
        if node_id_of(key) != signer:
            raise RemoteProtocolError("bad_signature", "the key is not the origin's")
        try:
            self._key(key).verify(data, sig)
        except (BadSignatureError, ValueError, TypeError):
            raise RemoteProtocolError("bad_signature", "the signature does not match") from None
