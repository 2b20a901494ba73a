"""Which stored messages belong to a durable subscription (docs/store.md, "Durable
subscriptions"), without I/O: the messages of a stored batch that match its topics
(names and patterns; none: every topic but the nodes' own, ``$...``), sent to everyone
or to this node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from ..errors import RemoteProtocolError
from ..mesh.linklist import RESERVED_PREFIX
from ..wire.messages import Batch, BatchBody, decode_kept_body, decode_message
from ..wire.topics import TopicFilter

if TYPE_CHECKING:
    from .db import DurableRow

__all__ = ["DurableFilter", "count_lost", "decode_row"]


def decode_row(frame: bytes) -> tuple[Batch, BatchBody] | None:
    """The batch stored as ``frame`` and its body, or None if it cannot be read."""
    try:
        batch = decode_message(frame)
        if not isinstance(batch, Batch):
            return None
        return batch, decode_kept_body(batch.body)
    except (msgspec.MsgspecError, RemoteProtocolError):
        return None


class DurableFilter:
    """The messages a durable subscription of ``topics`` takes on node ``node_id``
    (None: messages to any node count)."""

    def __init__(self, topics: Iterable[str], node_id: bytes | None) -> None:
        self.topics = tuple(topics)
        self._filter = TopicFilter(self.topics)
        self._node_id = node_id

    def wanted(self, body: BatchBody, start: int = 0) -> list[int]:
        """The indexes, from ``start`` on, of the messages of ``body`` it takes: none of
        an unnumbered batch (``seq`` 0) or of a direct message to another node."""
        if not body.seq or (body.to is not None and self._node_id is not None
                            and body.to != self._node_id):
            return []
        items = body.items
        if self.topics:
            wanted = self._filter
            return [k for k in range(start, len(items)) if items[k].topic in wanted]
        return [k for k in range(start, len(items))
                if not items[k].topic.startswith(RESERVED_PREFIX)]


def count_lost(frames: Mapping[int, tuple[bytes, int]], durables: Iterable[DurableRow],
               node_id: bytes | None) -> dict[str, int]:
    """For each durable subscription (``db.DurableRow``), the messages it had not
    confirmed among the stored batches ``frames`` (position -> frame and its number
    of messages) about to be removed. A frame that cannot be read counts whole."""
    lost: dict[str, int] = {}
    bodies = {pos: (decode_row(frame), count) for pos, (frame, count) in frames.items()}
    for durable in durables:
        select = DurableFilter(durable.topics, node_id)
        n = 0
        for pos, (decoded, count) in bodies.items():
            if pos <= durable.acked:
                continue
            start = durable.part if pos == durable.acked + 1 else 0
            n += len(select.wanted(decoded[1], start)) if decoded is not None else count
        lost[durable.name] = n
    return lost
