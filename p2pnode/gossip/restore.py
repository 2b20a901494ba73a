"""A restarted node's stored batches put back in the router: known as seen (a copy
that comes again is a duplicate, never handed to apps twice), in history (digests
tell peers what the node has, so they send only what it lacks; ``since`` and repairs
find them) and in their origins' order (a peer's later batches wait for the ones
this node lacks, so that apps get each origin's messages in order across the restart),
and for origins in interest mode in their streams' order (``streams.StreamOrder.seed``).

History in memory holds only the newest of what is stored. The order buffer and the
digest are told of every number stored (``runs``): a peer whose history reaches
further back than the restored one does not announce those batches (the node does
not fetch them again), and a copy that comes anyway is stale, not new.
"""

from __future__ import annotations

from ..wire.messages import Batch, BatchBody, DigestEntry, is_routed
from .history import item_id_range
from .interestmode import routed_topic
from .router import Router

__all__ = ["Runs", "restore"]

#: (origin, epoch) -> the sorted, disjoint, inclusive ranges of sequence numbers stored,
#: newest runs first (``store.reading.stored_runs``).
Runs = dict[tuple[bytes, int], list[tuple[int, int]]]


def restore(router: Router, batches: list[tuple[Batch, BatchBody, float]], now: float,
            runs: Runs | None = None) -> int:
    """Put back ``batches`` (batch, body, age of publication on the caller's clock),
    oldest first, and seed each origin's order with ``runs`` (or, without it, with the
    numbers of ``batches``). They count as unverified: a signature is checked again
    before a batch goes to a peer. Returns how many were put back."""
    if runs is None:
        runs = _runs_of(batches)
    for batch, body, age in batches:
        router.seen.add(batch.origin + batch.id, now)
        topic = routed_topic(router.interest, body)
        router.history.add(batch, body.epoch, body.seq, min(age, now), None, verified=False,
                           id_range=item_id_range([item.id for item in body.items]),
                           topic=topic)
        if body.tprev is not None and batch.origin != router.node_id:
            stream = body.items[0].topic if is_routed(body) else None
            router.streams.seed((batch.origin, body.epoch, stream), body.seq)
    newest: dict[bytes, int] = {}
    for (origin, epoch), ranges in runs.items():
        if origin != router.node_id and epoch > newest.get(origin, -1):
            newest[origin] = epoch
            router.order.seed(origin, epoch, ranges, now)
    router.stored = _digest(runs, router.cfg.digest_bytes // 4)
    return len(batches)


def _runs_of(batches: list[tuple[Batch, BatchBody, float]]) -> Runs:
    seqs: dict[tuple[bytes, int], set[int]] = {}
    for batch, body, _age in batches:
        if body.seq:
            seqs.setdefault((batch.origin, body.epoch), set()).add(body.seq)
    runs: Runs = {}
    for key, numbers in sorted(seqs.items(), key=lambda kv: -kv[0][1]):
        ranges: list[tuple[int, int]] = []
        for seq in sorted(numbers):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        runs[key] = ranges
    return runs


def _digest(runs: Runs, max_bytes: int) -> list[DigestEntry]:
    """``runs`` as digest entries, newest runs first, up to about ``max_bytes``."""
    out: list[DigestEntry] = []
    total = 0
    for (origin, epoch), ranges in runs.items():
        total += 50 + 18 * len(ranges)
        if total > max_bytes:
            break
        out.append(DigestEntry(origin, epoch, [n for pair in ranges for n in pair]))
    return out
