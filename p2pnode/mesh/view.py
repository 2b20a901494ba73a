"""The mesh view: every node's picture of the whole mesh, from the link lists the
nodes share.

Each node publishes its own link list now and then as an ordinary signed message on
the reserved topic ``$mesh`` (``MESH_TOPIC``): it travels the broadcast trees, is
kept in history (so a node that joins gets everyone's lists at once) and is never
handed to apps. A node sends its list ``mesh_interval`` seconds after the last one,
and sooner, but at most every ``mesh_min_interval``, when its links change. Each
node keeps the newest list of every origin (at most ``max_nodes`` origins) and
forgets an origin not heard from for three intervals. No I/O here: the node feeds
lists in and asks for the view; ``draw`` draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import msgspec

from ..ids import id_to_hex
from .linklist import decode_link_list


@dataclass
class MeshNode:
    name: str
    listen: str
    links: frozenset[bytes]
    seen_at: float  # caller's clock
    stamp: int = 0
    counts: tuple[int, int] | None = None  # interest mode: (wanted, relayed) batches


class MeshView:
    """The newest link list of each node, bounded in nodes and in age."""

    def __init__(self, max_nodes: int, max_age: float) -> None:
        self.max_nodes = max_nodes
        self.max_age = max_age
        self.nodes: dict[bytes, MeshNode] = {}
        self.bad = 0  # link lists that did not decode (ignored)
        #: Called with (origin, its links) on each list taken, and (origin, None) when an
        #: origin is dropped (too old, or over ``max_nodes``): the node's ``Routes``.
        self.on_change: Callable[[bytes, frozenset[bytes] | None], None] | None = None

    def update(self, origin: bytes, payload: bytes, now: float) -> bool:
        """Take ``origin``'s link list, unless an older one than the list the view has (a
        repair can bring old lists late); False (and counted) if it is not one."""
        try:
            ll = decode_link_list(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                RecursionError):
            self.bad += 1
            return False
        known = self.nodes.get(origin)
        if known is None or ll.stamp > known.stamp:
            counts = (None if ll.wanted is None or ll.relayed is None
                      else (ll.wanted, ll.relayed))
            self.set(origin, ll.name, ll.listen, ll.links, now, ll.stamp, counts)
        return True

    def set(self, origin: bytes, name: str, listen: str, links: list[bytes],
            now: float, stamp: int = 0, counts: tuple[int, int] | None = None) -> None:
        self.nodes.pop(origin, None)
        node = self.nodes[origin] = MeshNode(name, listen, frozenset(links), now, stamp,
                                             counts)
        if self.on_change is not None:
            self.on_change(origin, node.links)
        while len(self.nodes) > self.max_nodes:
            self._drop(min(self.nodes, key=lambda k: self.nodes[k].seen_at))

    def expire(self, now: float, keep: bytes | None = None) -> None:
        for origin in [o for o, n in self.nodes.items()
                       if now - n.seen_at > self.max_age and o != keep]:
            self._drop(origin)

    def _drop(self, origin: bytes) -> None:
        del self.nodes[origin]
        if self.on_change is not None:
            self.on_change(origin, None)

    def edges(self) -> list[tuple[bytes, bytes]]:
        """The links, each once (lower id first): those reported by both ends, or by one
        end when the other is not in the view. A link that one end reports and the other
        no longer does (a link that closed, the newer list wins) is left out."""
        out = set()
        nodes = self.nodes
        for origin, node in nodes.items():
            for peer in node.links:
                other = nodes.get(peer)
                if other is None or origin in other.links:
                    out.add((min(origin, peer), max(origin, peer)))
        return sorted(out)

    def to_dict(self, now: float, me: bytes,
                linked: Collection[bytes] = ()) -> dict[str, Any]:
        """The view for the API's ``mesh`` reply; ``linked``: the nodes ``me`` has a
        link to now (``"linked": true``: up now, whenever their list was heard);
        ``wanted`` and ``relayed``: an interest-mode node's counts as of its list (null:
        not said)."""
        nodes = [{"node_id": id_to_hex(o), "name": n.name, "listen": n.listen,
                  "links": sorted(id_to_hex(p) for p in n.links),
                  "last_seen_s": round(now - n.seen_at, 3), "linked": o in linked,
                  "wanted": n.counts[0] if n.counts else None,
                  "relayed": n.counts[1] if n.counts else None}
                 for o, n in sorted(self.nodes.items(), key=lambda kv: kv[1].name)]
        return {"self": id_to_hex(me), "nodes": nodes,
                "links": [[id_to_hex(a), id_to_hex(b)] for a, b in self.edges()]}
