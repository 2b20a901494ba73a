"""Settings a running node takes without a restart (``p2pnode run`` reloads them on
SIGHUP): which ones, and how each part of the node gets them.

The parts read these settings from their ``config`` when they use them, so handing
each part the new ``NodeConfig`` is enough: the static peers are dialled or let go at
once, the limits of links and clients apply to the links and connections that open
afterwards, the router's limits to the next batch. Every other field needs a restart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import NodeConfig
from .engine import router_config

if TYPE_CHECKING:
    from .node import Node

#: The ``NodeConfig`` fields a running node applies.
LIVE_FIELDS = frozenset({
    "peers", "max_hops", "history_bytes", "history_age", "history_batches", "order_hold",
    "max_links", "degree_low", "degree_high",
    "peer_bytes_per_s", "peer_batches_per_s", "peer_pings_per_s", "new_origins_per_s",
    "client_publish_per_s", "client_replays_per_s",
})


@dataclass(frozen=True)
class Reconfigured:
    """What a reconfiguration did: the fields applied and the fields that changed but
    need a restart, each as (old, new)."""

    applied: dict[str, tuple[Any, Any]]
    restart: dict[str, tuple[Any, Any]]
    peers_added: tuple[str, ...] = ()
    peers_removed: tuple[str, ...] = ()


def changes(old: NodeConfig, new: NodeConfig) -> dict[str, tuple[Any, Any]]:
    """The fields that differ, as {name: (old, new)}."""
    return {f.name: (getattr(old, f.name), getattr(new, f.name))
            for f in dataclasses.fields(NodeConfig)
            if getattr(old, f.name) != getattr(new, f.name)}


def reconfigure(node: Node, new: NodeConfig) -> Reconfigured:
    """Apply the live fields of ``new`` to a running ``node``; report the others.

    Raises ``ConfigError`` (and changes nothing) if the live fields of ``new`` do not
    fit with the fields that stay (``history_age`` over ``seen_ttl``...).
    """
    diff = changes(node.config, new)
    live = {k: v for k, v in diff.items() if k in LIVE_FIELDS}
    config = dataclasses.replace(node.config, **{k: v[1] for k, v in live.items()})
    node.config = config
    for part in (node.engine, node.publisher, node.links, node.api):
        if part is not None:
            part.config = config
    node.router.set_limits(router_config(config))
    added: list[str] = []
    removed: list[str] = []
    if node.links is not None:
        if "peers" in live:
            added, removed = node.links.set_static_peers(config.peers)
        node.links.poke()
    return Reconfigured(live, {k: v for k, v in diff.items() if k not in LIVE_FIELDS},
                        tuple(added), tuple(removed))
