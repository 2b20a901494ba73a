"""Node and message identifiers.

A node id is 16 bytes, shown as 32 lowercase hex digits: the first 16 bytes of
SHA-256 of the node's Ed25519 public key (``identity/keypair.py``).
A message id is 16 bytes: 8 bytes of the origin's random per-run prefix and an
8-byte counter, so ids are unique without a syscall per message.
"""

from __future__ import annotations

import os
import re

__all__ = ["ID_LEN", "MsgIdFactory", "id_to_hex", "parse_id"]

ID_LEN = 16
_HEX_RE = re.compile(r"^[0-9a-f]{32}$")


def id_to_hex(raw: bytes) -> str:
    """Return the 32-character lowercase hex form of a 16-byte id."""
    return raw.hex()


def parse_id(text: str) -> bytes:
    """Parse a 32-hex-digit id (case-insensitive). Raises ``ValueError`` if malformed."""
    low = text.strip().lower()
    if not _HEX_RE.match(low):
        raise ValueError(f"not an id (expected 32 hex digits): {text!r}")
    return bytes.fromhex(low)


class MsgIdFactory:
    """Makes unique message ids: a random 8-byte prefix per run and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = 0

    def next(self) -> bytes:
        """Return a new message id."""
        self._counter += 1
        return self._prefix + self._counter.to_bytes(8, "big")
