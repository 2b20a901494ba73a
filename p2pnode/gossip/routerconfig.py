"""The gossip router's settings and counters (``router.Router``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GossipMode = Literal["tree", "flood", "interest"]


@dataclass
class RouterStats:
    """Counters kept by the router (in batches, except where it says messages)."""

    received: int = 0  # batches received from peers
    duplicates: int = 0  # copies dropped because already seen
    delivered: int = 0  # messages in Deliver actions (of batches from peers)
    forwarded: int = 0  # batch copies pushed to peers (eager)
    hop_limited: int = 0  # new batches not forwarded (or dropped) because of the hop limit
    rejected: int = 0  # batches that failed verification (bad signature or contents)
    ihave_sent: int = 0  # batch announcements sent (lazy push)
    ihave_received: int = 0
    grafts_sent: int = 0  # batches asked for after an announcement alone
    grafts_received: int = 0
    graft_misses: int = 0  # grafted batches no longer in history
    prunes_sent: int = 0
    prunes_received: int = 0
    repaired: int = 0  # batches announced to a peer whose digest lacked them
    missing_given_up: int = 0  # announced batches that never came (every announcer tried)
    swaps: int = 0  # tree links swapped for a shorter path
    new_origin_limited: int = 0  # batches of unknown origins over a peer's new-origin rate


@dataclass
class RouterConfig:
    """The router's settings (``NodeConfig`` has them as ``gossip_*`` and ``history_*``)."""

    mode: GossipMode = "tree"
    max_hops: int = 32
    seen_max_entries: int = 200_000
    seen_ttl: float = 300.0
    graft_timeout: float = 0.1
    optimize_hops: int = 3  # 0: never swap links for a shorter path
    order_hold: float = 1.0
    history_batches: int = 20_000
    history_bytes: int = 4 << 20
    history_age: float = 300.0
    max_missing: int = 20_000
    max_origins: int = 4096  # origins whose tree (lazy links) is remembered
    digest_bytes: int = 512 * 1024  # a Digest is cut to about this many encoded bytes
    repair_spread: float = 4.0  # repair grafts wait graft_timeout x (1 + this x random)
    #: Seconds after a link opens in which gaps are held as if being fetched: what its
    #: digest exchange brings is announced that much later at most, even under load.
    repair_grace: float = 3.0
    seed: int | None = None
    max_announcers: int = 8
    # Replay state (gossip.order): origin runs tracked, in all and charged to one peer;
    # the rate at which one peer may bring batches of origins not tracked yet.
    max_runs: int = 16_384
    max_runs_per_peer: int = 4096
    new_origins_per_s: float = 100.0
    new_origins_burst: float = 1024.0


def gossip_mode(name: str) -> GossipMode:
    """The router mode of the node setting ``gossip`` (checked by ``NodeConfig``)."""
    if name == "flood":
        return "flood"
    return "interest" if name == "interest" else "tree"
