"""A node's key pair and the node id derived from it. Pure: no files, no certificates
(those are in ``keys``), so the gossip core can sign and check with it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..ids import ID_LEN


def node_id_of(public_raw: bytes) -> bytes:
    """The node id that belongs to a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_raw).digest()[:ID_LEN]


def raw_public(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes of ``key``'s public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class NodeIdentity:
    """A node's key pair and the id derived from it. ``key`` (``cryptography``) makes
    the certificates; ``sign`` uses the same key through libsodium (PyNaCl), about twice
    as fast here (Ed25519 signatures are deterministic: both give the same bytes)."""

    key: ed25519.Ed25519PrivateKey
    public: bytes  # raw 32 bytes
    node_id: bytes
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = self.key.private_bytes(serialization.Encoding.Raw,
                                      serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(seed))

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls.from_key(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, key: ed25519.Ed25519PrivateKey) -> NodeIdentity:
        public = raw_public(key)
        return cls(key=key, public=public, node_id=node_id_of(public))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._signer.sign(data).signature
