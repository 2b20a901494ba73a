"""Settings a running node takes without a restart (``p2pnode run`` reloads them on
SIGHUP): which ones, and how each part of the node gets them.

The parts read these settings from their ``config`` when they use them, so handing
each part the new ``NodeConfig`` is enough: the static peers are dialled or let go at
once, the limits of links and clients apply to the links and connections that open
afterwards, the router's limits to the next batch, the event handlers to the next
event. A change of ``tags`` is applied to the member list at once (tags set through
the API meanwhile stay). Every other field needs a restart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import NodeConfig
from ..errors import ConfigError
from .engine import router_config
from .handlers import handler_problem

if TYPE_CHECKING:
    from .node import Node

#: The ``NodeConfig`` fields a running node applies.
LIVE_FIELDS = frozenset({
    "peers", "max_hops", "history_bytes", "history_age", "history_batches", "order_hold",
    "max_links", "degree_low", "degree_high",
    "peer_bytes_per_s", "peer_batches_per_s", "peer_pings_per_s", "new_origins_per_s",
    "client_publish_per_s", "client_replays_per_s",
    "tags", "event_handlers", "event_timeout",
})


@dataclass(frozen=True)
class Reconfigured:
    """What a reconfiguration did: the fields applied and the fields that changed but
    need a restart, each as (old, new)."""

    applied: dict[str, tuple[Any, Any]]
    restart: dict[str, tuple[Any, Any]]
    peers_added: tuple[str, ...] = ()
    peers_removed: tuple[str, ...] = ()


def _retag(node: Node, old: dict[str, str], new: dict[str, str]) -> None:
    """The configured tags went from ``old`` to ``new``: set the new ones and delete
    those no longer configured (tags set at run time through the API stay)."""
    gone = [key for key in old if key not in new]
    if any(node.membership.me.tags.get(k) != v for k, v in new.items()) or \
            any(key in node.membership.me.tags for key in gone):
        node.membership.set_tags(new, gone)


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
    for kind, path in config.event_handlers if "event_handlers" in live else ():
        if problem := handler_problem(kind, path):
            raise ConfigError(f"on_events: {problem}")
    if "tags" in live:
        _retag(node, dict(live["tags"][0]), dict(live["tags"][1]))
    node.config = config
    for part in (node.engine, node.publisher, node.links, node.api, node.handlers):
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
