"""Drawings of the mesh view (a ``mesh`` reply): Graphviz text and a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
