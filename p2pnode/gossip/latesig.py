"""Batches delivered ahead of their signature (protocol 6).

An origin sends a batch to a neighbour over an authenticated (TLS) link before it has
signed it, with ``sig`` = ``NO_SIG``, and the signature right after in a ``BatchSig``
frame: the neighbour delivers the batch to its apps on the strength of the link, as it
does with any batch straight from its origin (``Router.on_batch``), and the 35-50 µs
of the signature leave the message's way. The neighbour passes the batch on, and hands
it to its store, only once the signature came (and, before passing it on, was
checked). ``LateSignatures`` keeps those batches that wait for their signature,
bounded: one that waits too long is dropped from history (delivered, never passed on).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from ..errors import RemoteProtocolError
from ..wire.messages import Batch, BatchBody, BatchSig
from .actions import Verify
from .history import History

#: Batches waiting for their signature, at most (the oldest is forgotten).
MAX_WAITING = 1024


@dataclass(slots=True)
class Waiting:
    """A batch delivered ahead of its signature."""

    batch: Batch  # as it came (history may not keep it: ``history_batches`` 0)
    from_peer: bytes
    spread: bool = False  # to be passed on once signed (not addressed to this node)
    announce_only: bool = False  # ... only announced (see Router.on_batch)
    #: Its body once the order buffer released it: handed to the store once signed.
    kept: BatchBody | None = None


class LateSignatures:
    """The batches (by key, origin + id) that wait for their ``BatchSig``."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self._waiting: OrderedDict[bytes, Waiting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: bytes) -> bool:
        return key in self._waiting

    def add(self, batch: Batch, from_peer: bytes) -> tuple[Waiting, bytes | None]:
        """Note that ``batch`` waits; returns its record and the key forgotten to make
        room (None if none was)."""
        waiting = self._waiting[batch.origin + batch.id] = Waiting(batch, from_peer)
        dropped = None
        if len(self._waiting) > self.limit:
            dropped = self._waiting.popitem(last=False)[0]
        return waiting, dropped

    def get(self, key: bytes) -> Waiting | None:
        return self._waiting.get(key)

    def pop(self, key: bytes) -> Waiting | None:
        return self._waiting.pop(key, None)

    def drop_peer(self, peer: bytes) -> list[bytes]:
        """Forget the batches that ``peer`` sent (its link closed); returns their keys."""
        keys = [key for key, w in self._waiting.items() if w.from_peer == peer]
        for key in keys:
            del self._waiting[key]
        return keys

    def signed(self, msg: BatchSig, from_peer: bytes, history: History, verify: Verify,
               on_kept: Callable[[Batch, BatchBody, float], None] | None, now: float, *,
               check: bool) -> tuple[Batch, bool] | Literal[False] | None:
        """``from_peer`` sent the signature of a batch that waits for it: put the signed
        batch in history and hand it to ``on_kept`` if the order buffer released it.
        With ``check`` (it is to go on to other peers) the signature is checked first:
        False if it does not match (the batch leaves history). Returns the signed batch
        and whether to only announce it, if it is to be passed on; None otherwise
        (nothing waited for it, or it is not to be passed on)."""
        key = from_peer + msg.id
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return None
        batch = msgspec.structs.replace(waiting.batch, sig=msg.sig)
        entry = history.get(key)
        if check and waiting.spread:
            try:
                verify(batch)
            except RemoteProtocolError:
                history.remove(key)
                return False
        if entry is not None:
            entry.batch, entry.verified = batch, check and waiting.spread
        if waiting.kept is not None and on_kept is not None:
            on_kept(batch, waiting.kept, entry.age if entry is not None else now)
        return (batch, waiting.announce_only) if waiting.spread else None
