"""The mesh view: every node's picture of the whole mesh, from the link lists the
nodes share.

Each node publishes its own link list now and then as an ordinary signed message on
the reserved topic ``$mesh`` (``MESH_TOPIC``): it travels the broadcast trees, is
kept in history (so a node that joins gets everyone's lists at once) and is never
handed to apps. A node sends its list ``mesh_interval`` seconds after the last one,
and sooner, but at most every ``mesh_min_interval``, when its links change. Each
node keeps the newest list of every origin (at most ``max_nodes`` origins) and
forgets an origin not heard from for three intervals. No I/O here: the node feeds
lists in and asks for the view; ``to_dot`` and ``render_png`` draw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from .ids import ID_LEN, id_to_hex

MESH_TOPIC = "$mesh"
RESERVED_PREFIX = "$"  # topics apps may not publish or subscribe to

NodeId = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]


class LinkList(msgspec.Struct, array_like=True, frozen=True):
    """The payload of a ``$mesh`` message: who the origin is and whom it links to."""

    name: Annotated[str, msgspec.Meta(max_length=64)]
    listen: Annotated[str, msgspec.Meta(max_length=256)]
    links: Annotated[list[NodeId], msgspec.Meta(max_length=4096)]
    stamp: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] = 0  # newer lists: higher


_decoder = msgspec.msgpack.Decoder(LinkList)
_encoder = msgspec.msgpack.Encoder()


def encode_link_list(name: str, listen: str, links: list[bytes], stamp: int) -> bytes:
    return _encoder.encode(LinkList(name, listen, sorted(links), stamp))


@dataclass
class MeshNode:
    name: str
    listen: str
    links: frozenset[bytes]
    seen_at: float  # caller's clock
    stamp: int = 0


class MeshView:
    """The newest link list of each node, bounded in nodes and in age."""

    def __init__(self, max_nodes: int, max_age: float) -> None:
        self.max_nodes = max_nodes
        self.max_age = max_age
        self.nodes: dict[bytes, MeshNode] = {}
        self.bad = 0  # link lists that did not decode (ignored)

    def update(self, origin: bytes, payload: bytes, now: float) -> bool:
        """Take ``origin``'s link list, unless an older one than the list the view has (a
        repair can bring old lists late); False (and counted) if it is not one."""
        try:
            ll = _decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                RecursionError):
            self.bad += 1
            return False
        known = self.nodes.get(origin)
        if known is None or ll.stamp > known.stamp:
            self.set(origin, ll.name, ll.listen, ll.links, now, ll.stamp)
        return True

    def set(self, origin: bytes, name: str, listen: str, links: list[bytes],
            now: float, stamp: int = 0) -> None:
        self.nodes.pop(origin, None)
        self.nodes[origin] = MeshNode(name, listen, frozenset(links), now, stamp)
        while len(self.nodes) > self.max_nodes:
            del self.nodes[min(self.nodes, key=lambda k: self.nodes[k].seen_at)]

    def expire(self, now: float, keep: bytes | None = None) -> None:
        for origin in [o for o, n in self.nodes.items()
                       if now - n.seen_at > self.max_age and o != keep]:
            del self.nodes[origin]

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

    def to_dict(self, now: float, me: bytes) -> dict[str, Any]:
        """The view for the API's ``mesh`` reply."""
        nodes = [{"node_id": id_to_hex(o), "name": n.name, "listen": n.listen,
                  "links": sorted(id_to_hex(p) for p in n.links),
                  "last_seen_s": round(now - n.seen_at, 3)}
                 for o, n in sorted(self.nodes.items(), key=lambda kv: kv[1].name)]
        return {"self": id_to_hex(me), "nodes": nodes,
                "links": [[id_to_hex(a), id_to_hex(b)] for a, b in self.edges()]}


def names_of(view: dict[str, Any]) -> dict[str, str]:
    """Node id -> a label (the name, and a short id when names repeat)."""
    counts: dict[str, int] = {}
    for n in view["nodes"]:
        counts[n["name"]] = counts.get(n["name"], 0) + 1
    return {n["node_id"]: n["name"] if counts[n["name"]] == 1 else
            f"{n['name']} ({n['node_id'][:8]})" for n in view["nodes"]}


def to_dot(view: dict[str, Any]) -> str:
    """The view (a ``mesh`` reply) as a Graphviz graph."""
    labels = names_of(view)
    lines = ["graph mesh {", "  node [shape=box];"]
    for n in view["nodes"]:
        extra = ", style=bold" if n["node_id"] == view["self"] else ""
        lines.append(f'  "{n["node_id"]}" [label="{_esc(labels[n["node_id"]])}"{extra}];')
    for a, b in view["links"]:
        lines.append(f'  "{a}" -- "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_png(view: dict[str, Any], path: Path) -> None:
    """Draw the view to ``path`` (needs matplotlib and networkx: ``pip install
    'p2pnode[sim]'``). Raises ``ImportError`` without them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.Graph()
    labels = names_of(view)
    graph.add_nodes_from(labels)
    graph.add_edges_from((a, b) for a, b in view["links"] if a in labels and b in labels)
    pos = nx.spring_layout(graph, seed=1)
    fig, ax = plt.subplots(figsize=(8, 6))
    colours = ["tab:orange" if n == view["self"] else "tab:blue" for n in graph.nodes]
    nx.draw_networkx(graph, pos, ax=ax, labels=labels, node_color=colours, font_size=8)
    ax.set_title(f"{graph.number_of_nodes()} nodes, {graph.number_of_edges()} links")
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
