"""A restarted node's stored batches put back in the router: known as seen (a copy
that comes again is a duplicate, never handed to apps twice), in history (digests
tell peers what the node has, so they send only what it lacks; ``since`` and repairs
find them) and in their origins' order (a peer's later batches wait for the ones
this node lacks, so that apps get each origin's messages in order across the restart).
"""

from __future__ import annotations

from ..wire.messages import Batch, BatchBody
from .history import item_id_range
from .router import Router

__all__ = ["restore"]


def restore(router: Router, batches: list[tuple[Batch, BatchBody, float]], now: float) -> int:
    """Put back ``batches`` (batch, body, age of publication on the caller's clock),
    oldest first. They count as unverified: a signature is checked again before a
    batch goes to a peer. Returns how many were put back."""
    runs: dict[bytes, tuple[int, set[int]]] = {}
    for batch, body, age in batches:
        router.seen.add(batch.origin + batch.id, now)
        router.history.add(batch, body.epoch, body.seq, min(age, now), None, verified=False,
                           id_range=item_id_range([item.id for item in body.items]))
        if batch.origin == router.node_id or not body.seq:
            continue
        epoch, seqs = runs.get(batch.origin, (0, set()))
        if body.epoch > epoch:
            runs[batch.origin] = (body.epoch, {body.seq})
        elif body.epoch == epoch:
            seqs.add(body.seq)
    for origin, (epoch, seqs) in runs.items():
        router.order.seed(origin, epoch, seqs, now)
    return len(batches)
