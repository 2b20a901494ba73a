"""What the router asks its caller to do: its verdicts and sends, as values.

The router does no I/O: every call returns a list of these actions, and the caller
(the node) turns them into deliveries to local apps and frames on links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..wire.messages import Batch, BatchBody, GossipMessage


@dataclass(frozen=True, slots=True)
class Deliver:
    """Action: hand the messages of ``body`` (as received in ``batch``) to local apps."""

    batch: Batch
    body: BatchBody


@dataclass(frozen=True, slots=True)
class Forward:
    """Action: send ``batch`` (hops already counted) to each of ``peers``."""

    batch: Batch
    peers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Send:
    """Action: send ``msgs`` (control messages or repaired batches) to ``peer``."""

    peer: bytes
    msgs: list[GossipMessage]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Action: close the link to ``peer`` at once. Honest peers verify a batch before
    they pass it on, so one that sends a forged batch is faulty or hostile."""

    peer: bytes
    reason: str


Action = Deliver | Forward | Send | Disconnect
#: Checks a batch and returns its body, raising ``RemoteProtocolError``:
#: ``verify(batch, *, check_signature=True)`` (``signing.Verifier.verify``).
Verify = Callable[..., BatchBody]
